#include "output/output_log.h"

#include <algorithm>
#include <cstring>

namespace chronomerge {

std::string_view to_string(DropReason reason) {
  switch (reason) {
    case DropReason::none:
      return "none";
    case DropReason::too_slow:
      return "too_slow";
    case DropReason::out_of_window:
      return "out_of_window";
  }
  return "none";
}

size_t OutputLog::Segment::index_bytes() const {
  return entries.size() * sizeof(Entry) + sources.size() * sizeof(SourceId) + texts.size() +
         text_ends.size() * sizeof(uint32_t);
}

void OutputLog::Segment::clear() {
  size = 0;
  entries.clear();
  max_ordinal = INT64_MIN;
  sources.clear();
  texts.clear();
  text_ends.clear();
}

OutputLog::OutputLog(OutputLogOptions options) : options_(std::move(options)) {}

OutputLog::OutputLog(size_t high_water_mark) {
  options_.high_water_mark = high_water_mark;
}

OutputLog::SourceId OutputLog::source_id(std::string_view name) {
  auto [it, added] =
      source_ids_.try_emplace(std::string(name), static_cast<SourceId>(source_ids_.size()));
  return it->second;
}

OutputLog::Segment& OutputLog::new_segment(size_t record_bytes) {
  // Records never straddle segments: a record that does not fit starts a
  // new one (sized for it, if it is larger than a segment).
  std::shared_ptr<Segment> segment;
  if (record_bytes <= options_.segment_bytes && !spare_.empty()) {
    segment = std::move(spare_.back());
    spare_.pop_back();
  } else {
    segment = std::make_shared<Segment>();
    segment->capacity = std::max(options_.segment_bytes, record_bytes);
    segment->data.reset(new char[segment->capacity]);
  }
  segment->start = head_position_;
  segment->first = head_offset_;
  segments_.push_back(std::move(segment));
  update_trim_point();
  return *segments_.back();
}

bool OutputLog::append_parts(std::initializer_list<std::string_view> parts, const Key& key,
                             std::span<const SourceId> sources, std::span<const Origin> origins) {
  size_t bytes = 1;
  for (std::string_view part : parts) bytes += part.size();
  Segment& segment = writable_segment(bytes);
  char* at = segment.data.get() + segment.size;
  for (std::string_view part : parts) {
    std::memcpy(at, part.data(), part.size());
    at += part.size();
  }
  *at = '\n';
  return appended(segment, bytes, key, sources, origins);
}

bool OutputLog::append_heartbeat(std::string_view record, const Key& key) {
  // Not a name a feed can have: configured names exclude '<'.
  if (!heartbeat_source_) heartbeat_source_ = source_id("<heartbeat>");
  const SourceId source = *heartbeat_source_;
  return append(record, key, {&source, 1});
}

std::optional<Key> OutputLog::newest_key() const {
  for (auto it = segments_.rbegin(); it != segments_.rend(); ++it) {
    if (!(*it)->entries.empty()) {
      const size_t segment = static_cast<size_t>(segments_.rend() - it) - 1;
      return key_at(Place{segment, (*it)->entries.size() - 1});
    }
  }
  return std::nullopt;
}

void OutputLog::add_origins(std::span<const Origin> origins) {
  for (const Origin& origin : origins) unwritten_.push_back(Unwritten{head_position_, origin});
}

void OutputLog::report_written() {
  if (unwritten_.empty()) return;
  uint64_t written = head_position_;
  for (const auto& [id, consumer] : consumers_) {
    if (consumer.policy == ConsumerPolicy::block && consumer.engaged &&
        consumer.dropped == DropReason::none) {
      written = std::min(written, consumer.position);
    }
  }
  while (!unwritten_.empty() && unwritten_.front().end <= written) {
    const Origin origin = unwritten_.front().origin;
    unwritten_.pop_front();
    if (on_written_) on_written_(origin);
  }
}

void OutputLog::after_append() {
  if (head_position_ >= overflow_at_) recompute();
  if (retained_bytes_ >= trim_above_) trim();
  report_written();
  if (full() && !holder_) {
    // The merge is held from now on, by the consumer at the hold point.
    held_since_ms_ = now_ms_;
    for (const auto& [id, consumer] : consumers_) {
      if (consumer.policy == ConsumerPolicy::block && consumer.engaged &&
          consumer.dropped == DropReason::none && consumer.position + consumer.limit == full_at_) {
        holder_ = id;
        break;
      }
    }
  }
}

// Retention lets the front segment go once what follows it still holds
// retention_bytes; only a complete segment (not the one being filled) can
// go. append() compares against this one number.
void OutputLog::update_trim_point() {
  trim_above_ =
      segments_.size() > 1 ? options_.retention_bytes + segments_.front()->footprint() : UINT64_MAX;
}

void OutputLog::end() {
  ended_ = true;
}

void OutputLog::tick(uint64_t now_ms) {
  now_ms_ = now_ms;
  if (options_.retention_ms && segments_.size() > 1) trim();
}

uint64_t OutputLog::oldest_offset() const {
  return segments_.empty() ? head_offset_ : segments_.front()->first;
}

std::optional<Key> OutputLog::oldest_key() const {
  if (segments_.empty() || segments_.front()->entries.empty()) return std::nullopt;
  return key_at(Place{0, 0});
}

OutputLog::Location OutputLog::locate_after(std::string_view run, uint64_t after) const {
  if (run != options_.run_id || after >= head_offset_ || after + 1 < oldest_offset()) {
    return Location{true, 0};
  }
  return Location{false, after + 1};
}

// A consumer that only filters: for matches().
OutputLog::Consumer OutputLog::filter_of(std::span<const SourceId> sources) {
  Consumer filter;
  filter.sources.assign(sources.begin(), sources.end());
  std::sort(filter.sources.begin(), filter.sources.end());
  return filter;
}

OutputLog::Location OutputLog::locate_key(const Key& key, uint64_t skip,
                                          std::span<const SourceId> sources) const {
  // Retention dropped a record with this key or a newer one: what the
  // client asks for may be gone.
  if (dropped_key_ && !(*dropped_key_ < key)) return Location{true, 0};
  const Consumer filter = filter_of(sources);
  std::optional<Place> place = place_of_offset(oldest_offset());
  while (place) {
    const Segment& segment = *segments_[place->segment];
    if (place->index == 0 && options_.key_type != KeyType::string &&
        segment.max_ordinal < key.ordinal) {
      // Every key of the segment is older: skip it whole.
      place->index = segment.entries.size() - 1;
    } else if (!(key_at(*place) < key)) {
      break;
    }
    if (!next(*place)) place.reset();
  }
  while (place && skip > 0 && key_at(*place) == key) {
    if (matches(filter, *place)) --skip;
    if (!next(*place)) place.reset();
  }
  if (!place) return Location{false, head_offset_};
  return Location{false, segments_[place->segment]->first + place->index};
}

uint64_t OutputLog::first_match(uint64_t offset, std::span<const SourceId> sources) const {
  if (sources.empty()) return offset;
  const Consumer filter = filter_of(sources);
  std::optional<Place> place = place_of_offset(std::max(offset, oldest_offset()));
  while (place && !matches(filter, *place)) {
    if (!next(*place)) place.reset();
  }
  return place ? segments_[place->segment]->first + place->index : head_offset_;
}

OutputLog::ConsumerId OutputLog::subscribe(ConsumerOptions options, std::function<void()> notify) {
  ConsumerId id = next_id_++;
  Consumer& consumer = consumers_[id];
  consumer.policy = options.policy;
  consumer.limit = options.policy == ConsumerPolicy::block
                       ? std::min(options.max_buffer, options_.high_water_mark)
                       : options.max_buffer;
  consumer.sources = std::move(options.sources);
  std::sort(consumer.sources.begin(), consumer.sources.end());
  consumer.skip_heartbeats = !options.heartbeats;
  consumer.notify = std::move(notify);
  consumer.position = head_position_;
  if (options.start && *options.start < head_offset_) {
    if (std::optional<Place> place = place_of_offset(*options.start)) {
      consumer.position = position_of(*place);
    } else {
      consumer.dropped = DropReason::out_of_window;
    }
  }
  recompute();
  return id;
}

void OutputLog::unsubscribe(ConsumerId id) {
  auto it = consumers_.find(id);
  if (it == consumers_.end()) return;
  const bool was_full = full();
  consumers_.erase(it);
  recompute();
  trim();
  report_written();
  account_held(was_full);
}

void OutputLog::account_held(bool was_full) {
  if (!was_full || full()) return;
  if (holder_) {
    auto it = consumers_.find(*holder_);
    if (it != consumers_.end()) it->second.held_ms += now_ms_ - held_since_ms_;
    holder_.reset();
  }
  if (on_demand_) on_demand_();
}

void OutputLog::drop(Consumer& consumer, DropReason reason) {
  if (consumer.dropped == DropReason::none) consumer.dropped = reason;
}

void OutputLog::recompute() {
  full_at_ = UINT64_MAX;
  overflow_at_ = UINT64_MAX;
  for (auto& [id, consumer] : consumers_) {
    if (consumer.dropped != DropReason::none) continue;
    const uint64_t lag = head_position_ - consumer.position;
    if (consumer.policy == ConsumerPolicy::block) {
      // Engaged once caught up within its limit; a consumer still catching
      // up from far behind does not hold the merge.
      if (!consumer.engaged && lag <= consumer.limit) consumer.engaged = true;
      if (consumer.engaged) full_at_ = std::min(full_at_, consumer.position + consumer.limit);
    } else {
      // A reader that starts further behind than its limit (a resume from
      // the oldest record) is bound by the retained window alone until it
      // has caught up that close.
      if (!consumer.engaged && lag <= consumer.limit) consumer.engaged = true;
      if (!consumer.engaged) continue;
      if (lag > consumer.limit) {
        drop(consumer, DropReason::too_slow);
      } else {
        overflow_at_ = std::min(overflow_at_, consumer.position + consumer.limit + 1);
      }
    }
  }
}

void OutputLog::trim() {
  // Engaged block consumers keep what they have not read.
  uint64_t keep = head_position_;
  for (const auto& [id, consumer] : consumers_) {
    if (consumer.policy == ConsumerPolicy::block && consumer.engaged &&
        consumer.dropped == DropReason::none) {
      keep = std::min(keep, consumer.position);
    }
  }
  // The segment being filled stays (it is reused for the next append).
  bool trimmed = false;
  bool held = false;
  while (segments_.size() > 1) {
    Segment& front = *segments_.front();
    if (front.end() > keep) {
      held = true;
      break;
    }
    const size_t footprint = front.footprint();
    const bool over_bytes = retained_bytes_ - footprint >= options_.retention_bytes;
    const bool expired =
        options_.retention_ms && now_ms_ >= front.last_append_ms + *options_.retention_ms;
    if (!over_bytes && !expired) break;
    // The newest key dropped: string keys are compared by text, others by
    // the segment's largest ordinal.
    Key dropped{front.max_ordinal, {}};
    if (options_.key_type == KeyType::string) {
      for (size_t i = 0; i < front.entries.size(); ++i) {
        Key key = key_at(Place{0, i});
        if (i == 0 || dropped < key) dropped = std::move(key);
      }
    }
    if (!dropped_key_ || *dropped_key_ < dropped) dropped_key_ = std::move(dropped);
    retained_bytes_ -= footprint;
    // Recycle the segment unless an in-flight write still points into it:
    // fresh memory costs page faults on every segment of the stream.
    if (segments_.front().use_count() == 1 && front.capacity == options_.segment_bytes &&
        spare_.size() < max_spare_segments) {
      front.clear();
      spare_.push_back(std::move(segments_.front()));
    }
    segments_.pop_front();
    trimmed = true;
  }
  update_trim_point();
  // A block reader has not read the front segment: no append can let it
  // go, only that reader moving past it (advance() and unsubscribe() trim
  // again). Appends stop asking until then, or until a segment begins:
  // a one-shot merge, which retains nothing, asked at every record.
  if (held) trim_above_ = UINT64_MAX;
  if (!trimmed) return;
  const uint64_t oldest = segments_.empty() ? head_position_ : segments_.front()->start;
  for (auto& [id, consumer] : consumers_) {
    if (consumer.position < oldest) drop(consumer, DropReason::out_of_window);
  }
}

void OutputLog::advance(Consumer& consumer, uint64_t position) {
  const bool was_full = full();
  consumer.position = std::min(std::max(consumer.position, position), head_position_);
  recompute();
  if (segments_.size() > 1 && segments_.front()->end() <= consumer.position) trim();
  report_written();
  account_held(was_full);
}

size_t OutputLog::peek(ConsumerId id, std::vector<Slice>& out, size_t max_bytes, uint64_t* end) {
  auto it = consumers_.find(id);
  if (it == consumers_.end() || it->second.dropped != DropReason::none) {
    if (end) *end = it == consumers_.end() ? head_position_ : it->second.position;
    return 0;
  }
  Consumer& consumer = it->second;
  uint64_t pos = consumer.position;
  if (end) *end = pos;
  std::optional<Place> place = place_of_position(pos);
  if (!place) return 0;
  size_t added = 0;
  if (consumer.sources.empty() && !(consumer.skip_heartbeats && heartbeat_source_)) {
    // Whole segments from the cursor on: a segment holds whole records.
    for (size_t s = place->segment; s < segments_.size(); ++s) {
      const auto& segment = segments_[s];
      const size_t from = pos - segment->start;
      const size_t n = segment->size - from;
      if (n == 0) continue;
      if (added > 0 && added + n > max_bytes) break;
      const uint64_t first = segment->first + (s == place->segment ? place->index : 0);
      out.push_back(Slice{segment, std::string_view(segment->data.get() + from, n), first});
      added += n;
      pos += n;
    }
    if (end) *end = pos;
    return added;
  }
  // Filtered: records at the cursor that do not match are passed over at
  // once; then runs of matching records become slices.
  while (place && !matches(consumer, *place)) {
    if (!next(*place)) place.reset();
  }
  const uint64_t skipped_to = place ? position_of(*place) : head_position_;
  if (skipped_to > consumer.position) {
    // Moving the cursor may trim segments, which shifts the places.
    advance(consumer, skipped_to);
    place = place_of_position(consumer.position);
  }
  pos = consumer.position;
  if (end) *end = pos;
  bool open = false;  // the next matching record extends out.back()
  while (place) {
    const Segment& segment = *segments_[place->segment];
    const uint32_t from = place->index == 0 ? 0 : segment.entries[place->index - 1].end;
    const uint32_t to = segment.entries[place->index].end;
    if (matches(consumer, *place)) {
      if (added > 0 && added + (to - from) > max_bytes) break;
      if (open) {
        out.back().bytes =
            std::string_view(out.back().bytes.data(), out.back().bytes.size() + (to - from));
      } else {
        out.push_back(Slice{segments_[place->segment],
                            std::string_view(segment.data.get() + from, to - from),
                            segment.first + place->index});
      }
      open = true;
      added += to - from;
      if (end) *end = segment.start + to;
    } else {
      open = false;
    }
    const size_t segment_before = place->segment;
    if (!next(*place)) break;
    if (place->segment != segment_before) open = false;
  }
  return added;
}

void OutputLog::consume_to(ConsumerId id, uint64_t end) {
  auto it = consumers_.find(id);
  if (it == consumers_.end()) return;
  advance(it->second, end);
}

uint64_t OutputLog::position(ConsumerId id) const {
  auto it = consumers_.find(id);
  return it == consumers_.end() ? head_position_ : it->second.position;
}

size_t OutputLog::lag(ConsumerId id) const {
  auto it = consumers_.find(id);
  return it == consumers_.end() ? 0 : head_position_ - it->second.position;
}

DropReason OutputLog::dropped(ConsumerId id) const {
  auto it = consumers_.find(id);
  return it == consumers_.end() ? DropReason::none : it->second.dropped;
}

uint64_t OutputLog::held_ms(ConsumerId id) const {
  auto it = consumers_.find(id);
  if (it == consumers_.end()) return 0;
  uint64_t held = it->second.held_ms;
  if (holder_ == id && now_ms_ > held_since_ms_) held += now_ms_ - held_since_ms_;
  return held;
}

void OutputLog::flush() {
  // Collect first: a notify callback may unsubscribe (itself or others).
  std::vector<ConsumerId> ready;
  for (const auto& [id, consumer] : consumers_) {
    if (consumer.position < head_position_ || ended_ || consumer.dropped != DropReason::none) {
      ready.push_back(id);
    }
  }
  for (ConsumerId id : ready) {
    auto it = consumers_.find(id);
    if (it != consumers_.end() && it->second.notify) {
      auto notify = it->second.notify;  // the callback may erase the entry
      notify();
    }
  }
}

std::optional<OutputLog::Place> OutputLog::place_of_offset(uint64_t offset) const {
  if (offset >= head_offset_ || offset < oldest_offset()) return std::nullopt;
  auto it = std::upper_bound(segments_.begin(), segments_.end(), offset,
                             [](uint64_t o, const auto& s) { return o < s->first; });
  --it;
  return Place{static_cast<size_t>(it - segments_.begin()),
               static_cast<size_t>(offset - (*it)->first)};
}

std::optional<OutputLog::Place> OutputLog::place_of_position(uint64_t position) const {
  if (position >= head_position_ || segments_.empty() || position < segments_.front()->start) {
    return std::nullopt;
  }
  auto it = std::upper_bound(segments_.begin(), segments_.end(), position,
                             [](uint64_t p, const auto& s) { return p < s->start; });
  --it;
  const Segment& segment = **it;
  size_t s = static_cast<size_t>(it - segments_.begin());
  const uint64_t rel = position - segment.start;
  if (rel >= segment.size) return Place{s + 1, 0};  // only at a segment's end
  // Positions are record boundaries: the record starting at `rel` is the
  // first whose end lies past it.
  size_t index = static_cast<size_t>(
      std::upper_bound(segment.entries.begin(), segment.entries.end(), rel,
                       [](uint64_t r, const Segment::Entry& e) { return r < e.end; }) -
      segment.entries.begin());
  return Place{s, index};
}

uint64_t OutputLog::position_of(Place place) const {
  const Segment& segment = *segments_[place.segment];
  return segment.start + (place.index == 0 ? 0 : segment.entries[place.index - 1].end);
}

Key OutputLog::key_at(Place place) const {
  const Segment& segment = *segments_[place.segment];
  Key key{segment.entries[place.index].ordinal, {}};
  if (options_.key_type == KeyType::string) {
    const uint32_t from = place.index == 0 ? 0 : segment.text_ends[place.index - 1];
    key.text.assign(segment.texts, from, segment.text_ends[place.index] - from);
  }
  return key;
}

bool OutputLog::matches(const Consumer& consumer, Place place) const {
  const Segment& segment = *segments_[place.segment];
  const uint32_t from = place.index == 0 ? 0 : segment.entries[place.index - 1].source_end;
  const uint32_t to = segment.entries[place.index].source_end;
  if (consumer.skip_heartbeats && heartbeat_source_ && to - from == 1 &&
      segment.sources[from] == *heartbeat_source_) {
    return false;
  }
  if (consumer.sources.empty()) return true;
  for (uint32_t i = from; i < to; ++i) {
    if (std::binary_search(consumer.sources.begin(), consumer.sources.end(), segment.sources[i])) {
      return true;
    }
  }
  return false;
}

bool OutputLog::next(Place& place) const {
  if (++place.index < segments_[place.segment]->entries.size()) return true;
  place.index = 0;
  while (++place.segment < segments_.size()) {
    if (!segments_[place.segment]->entries.empty()) return true;
  }
  return false;
}

}  // namespace chronomerge
