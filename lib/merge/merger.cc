#include "merge/merger.h"

#include <algorithm>
#include <cassert>

namespace chronomerge {

std::string_view to_string(FeedState state) {
  switch (state) {
    case FeedState::ready: return "ready";
    case FeedState::waiting: return "waiting";
    case FeedState::idle: return "idle";
    case FeedState::ended: return "ended";
  }
  return "?";
}

Merger::Merger(MergerOptions options, Output& output, MergerListener& listener)
    : options_(std::move(options)), output_(output), listener_(listener) {}

FeedId Merger::add_feed(FeedSettings settings, uint64_t now) {
  FeedId id = static_cast<FeedId>(feeds_.size());
  feeds_.emplace_back(std::move(settings));
  ++open_;
  finished_ = false;
  became_empty(id, now);
  return id;
}

FeedState Merger::state(FeedId feed) const {
  const Feed& f = feeds_[feed];
  if (!f.queue.empty()) return FeedState::ready;
  if (f.ended) return FeedState::ended;
  return f.idle ? FeedState::idle : FeedState::waiting;
}

// The heap keeps the smallest (key, feed id) on top; std::*_heap build
// max-heaps, so the comparison is reversed.
bool Merger::heap_less(FeedId a, FeedId b) const {
  const Key& ka = feeds_[a].queue.front().key;
  const Key& kb = feeds_[b].queue.front().key;
  if (ka != kb) return kb < ka;
  return b < a;
}

void Merger::heap_insert(FeedId feed) {
  heap_.push_back(feed);
  std::push_heap(heap_.begin(), heap_.end(),
                 [this](FeedId a, FeedId b) { return heap_less(a, b); });
}

void Merger::heap_pop_top() {
  std::pop_heap(heap_.begin(), heap_.end(),
                [this](FeedId a, FeedId b) { return heap_less(a, b); });
  heap_.pop_back();
}

void Merger::became_empty(FeedId feed, uint64_t now) {
  Feed& f = feeds_[feed];
  if (f.ended) return;
  f.idle = false;
  ++waiting_;
  if (f.settings.idle_timeout_ms) {
    f.idle_deadline = now + *f.settings.idle_timeout_ms;
    deadlines_.emplace(f.idle_deadline, feed);
  }
}

void Merger::push(FeedId feed, std::string_view record, ParsedRecord&& parsed, uint64_t now) {
  Feed& f = feeds_[feed];
  assert(!f.ended);
  if (parsed.heartbeat) {
    ++f.stats.heartbeats;
  } else {
    ++f.stats.records_in;
    f.stats.bytes_in += record.size();
  }
  f.stats.last_key = parsed.key;
  if (f.settings.reorder_window <= 0) {
    enqueue(feed, record, std::move(parsed), now);
    return;
  }
  // Reorder window: hold the record, sorted by (key, arrival); release
  // everything at least `window` older than the newest key seen.
  if (!f.newest || *f.newest < parsed.key) f.newest = parsed.key;
  Feed::Held held{parsed.key, f.held_seq++, std::string(record), std::move(parsed)};
  auto pos = std::upper_bound(f.held.begin(), f.held.end(), held, [](const auto& a, const auto& b) {
    return a.key < b.key || (a.key == b.key && a.seq < b.seq);
  });
  f.held.insert(pos, std::move(held));
  release_held(feed, false, now);
}

void Merger::release_held(FeedId feed, bool all, uint64_t now) {
  Feed& f = feeds_[feed];
  size_t n = 0;
  while (n < f.held.size() &&
         (all || key_distance(options_.key_type, f.held[n].key, *f.newest) >=
                     f.settings.reorder_window)) {
    ++n;
  }
  for (size_t i = 0; i < n; ++i) {
    enqueue(feed, f.held[i].bytes, std::move(f.held[i].parsed), now);
  }
  f.held.erase(f.held.begin(), f.held.begin() + static_cast<ptrdiff_t>(n));
}

void Merger::enqueue(FeedId feed, std::string_view record, ParsedRecord&& parsed, uint64_t) {
  Feed& f = feeds_[feed];
  bool was_empty = f.queue.empty();
  f.queue.push(record, std::move(parsed));
  if (was_empty) {
    if (f.idle) {
      f.idle = false;
      listener_.feed_idle(feed, false);
    } else {
      --waiting_;
      if (f.settings.idle_timeout_ms) deadlines_.erase({f.idle_deadline, feed});
    }
    heap_insert(feed);
  }
  if (!f.paused && f.queue.at_or_above_high()) {
    f.paused = true;
    ++f.stats.pauses;
    listener_.pause_feed(feed);
  }
}

void Merger::end(FeedId feed, uint64_t now) {
  Feed& f = feeds_[feed];
  if (f.ended) return;
  if (!f.held.empty()) release_held(feed, true, now);
  if (f.queue.empty()) {
    if (f.idle) {
      f.idle = false;
    } else {
      --waiting_;
      if (f.settings.idle_timeout_ms) deadlines_.erase({f.idle_deadline, feed});
    }
  }
  f.ended = true;
  --open_;
  check_finished();
}

void Merger::pop_front(FeedId feed, uint64_t now) {
  assert(heap_.front() == feed);
  heap_pop_top();
  pop_detached(feed, now);
}

// Pops the head of a feed that is not on the heap, and puts the feed back
// on the heap if it still has records.
void Merger::pop_detached(FeedId feed, uint64_t now) {
  Feed& f = feeds_[feed];
  f.queue.pop();
  if (f.queue.empty()) {
    became_empty(feed, now);
  } else {
    heap_insert(feed);
  }
  if (f.paused && f.queue.at_or_below_low()) {
    f.paused = false;
    listener_.resume_feed(feed);
  }
}

void Merger::sweep_idle(uint64_t now) {
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    FeedId feed = deadlines_.begin()->second;
    deadlines_.erase(deadlines_.begin());
    Feed& f = feeds_[feed];
    --waiting_;
    if (!f.held.empty()) {
      // Gone quiet with records held for reordering: nothing newer is
      // coming to release them, so release them all now.
      ++waiting_;  // enqueue() expects a waiting feed
      release_held(feed, true, now);
      continue;
    }
    f.idle = true;
    listener_.feed_idle(feed, true);
  }
}

std::optional<uint64_t> Merger::next_deadline() const {
  if (deadlines_.empty()) return std::nullopt;
  return deadlines_.begin()->first;
}

void Merger::handle_late(FeedId feed) {
  Feed& f = feeds_[feed];
  ++f.stats.late;
  bool emit = options_.late == LatePolicy::emit;
  std::string_view record = f.queue.front_bytes();
  listener_.late_record(feed, record, emit);
  if (emit) {
    if (options_.mode == MergeMode::combine) {
      scratch_ = std::to_string(feed);
      output_.push_parts({"{\"data\":[", record, "],\"indexes\":[", scratch_, "],\"",
                          options_.combine_key_name, "\":", f.queue.front_key_text(), "}"});
    } else {
      output_.push(record);
    }
    ++records_out_;
  }
}

bool Merger::emit_one(FeedId feed) {
  Feed& f = feeds_[feed];
  frontier_ = f.queue.front().key;
  ++f.stats.records_out;
  ++records_out_;
  return output_.push(f.queue.front_bytes());
}

// One combine step: the feeds whose heads share the smallest key, one
// record from each, in feed order.
bool Merger::emit_combined(uint64_t now) {
  group_.clear();
  const Key key = feeds_[heap_.front()].queue.front().key;
  // Pop the tied tops off the heap; they come out in feed-id order.
  while (!heap_.empty() && feeds_[heap_.front()].queue.front().key == key) {
    FeedId feed = heap_.front();
    heap_pop_top();
    if (feeds_[feed].queue.front().heartbeat) {
      pop_detached(feed, now);  // not forwarded; its next record may tie too
      continue;
    }
    group_.push_back(feed);
  }
  scratch_.assign("{\"data\":[");
  for (size_t i = 0; i < group_.size(); ++i) {
    if (i) scratch_ += ',';
    scratch_ += feeds_[group_[i]].queue.front_bytes();
  }
  scratch_ += "],\"indexes\":[";
  for (size_t i = 0; i < group_.size(); ++i) {
    if (i) scratch_ += ',';
    scratch_ += std::to_string(group_[i]);
  }
  scratch_ += "],\"";
  scratch_ += options_.combine_key_name;
  scratch_ += "\":";
  scratch_ += feeds_[group_[0]].queue.front_key_text();
  scratch_ += '}';
  frontier_ = key;
  records_out_ += group_.size();
  bool more = output_.push(scratch_);
  for (FeedId feed : group_) {
    ++feeds_[feed].stats.records_out;
    pop_detached(feed, now);
  }
  return more;
}

void Merger::run(uint64_t now) {
  sweep_idle(now);
  while (!heap_.empty() && !output_.full()) {
    FeedId top = heap_.front();
    Feed& f = feeds_[top];
    const QueuedRecord& head = f.queue.front();
    if (head.heartbeat) {
      // A heartbeat at the very front has done its job: everything older
      // from the other feeds has been emitted. It is never forwarded.
      pop_front(top, now);
      continue;
    }
    if (frontier_ && head.key < *frontier_) {
      handle_late(top);
      pop_front(top, now);
      continue;
    }
    if (waiting_ > 0) break;
    if (options_.mode == MergeMode::combine) {
      emit_combined(now);
    } else {
      emit_one(top);
      pop_front(top, now);
    }
  }
  check_finished();
}

void Merger::check_finished() {
  if (finished_ || !heap_.empty() || open_ > 0) return;
  finished_ = true;
  output_.end();
}

}  // namespace chronomerge
