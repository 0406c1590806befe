#include "merge/merger.h"

#include <algorithm>
#include <cassert>

namespace chronomerge {
namespace {

// Copies `from` into `to` without touching the text when neither has any.
// This runs for every record (stats, frontier), and for the common
// non-string keys a std::string assignment would be a call per record for
// nothing.
void assign_key(std::optional<Key>& to, const Key& from) {
  if (!to) {
    to = from;
    return;
  }
  to->ordinal = from.ordinal;
  if (!from.text.empty() || !to->text.empty()) to->text = from.text;
}

}  // namespace

std::string_view to_string(FeedState state) {
  switch (state) {
    case FeedState::ready:
      return "ready";
    case FeedState::waiting:
      return "waiting";
    case FeedState::idle:
      return "idle";
    case FeedState::ended:
      return "ended";
  }
  return "?";
}

Merger::Merger(MergerOptions options, OutputLog& output)
    : options_(std::move(options)), output_(output) {}

void Merger::decide(MergerDecision::Kind kind, FeedId feed) {
  decisions_.push_back(MergerDecision{kind, feed, false, {}, 0});
}

void Merger::take_decisions(std::vector<MergerDecision>& out) {
  out.clear();
  out.swap(decisions_);
  decision_bytes_ = 0;
}

FeedId Merger::add_feed(FeedSettings settings, uint64_t now, bool joins_idle,
                        std::optional<uint32_t> rank) {
  FeedId id;
  if (free_.empty()) {
    id = static_cast<FeedId>(feeds_.size());
    feeds_.emplace_back();
    head_hints_.emplace_back();
  } else {
    id = free_.back();
    free_.pop_back();
  }
  feeds_[id] = std::make_unique<Feed>(std::move(settings));
  Feed& f = *feeds_[id];
  if (rank) {
    f.rank = *rank;
  } else {
    // After every feed in use: set_ranks() orders them by the configuration.
    f.rank = 0;
    for (const auto& other : feeds_) {
      if (other && other.get() != &f) f.rank = std::max(f.rank, other->rank + 1);
    }
  }
  f.sources[0] = output_.source_id(f.settings.name);
  if (!f.settings.group.empty()) {
    f.sources[1] = output_.source_id(f.settings.group);
    f.source_count = 2;
  }
  f.live_since = now;
  ++open_;
  finished_ = false;
  if (joins_idle && f.settings.idle_timeout_ms) {
    f.idle = true;
  } else {
    became_empty(id);
  }
  return id;
}

void Merger::update(FeedId feed, FeedSettings settings, uint64_t now) {
  Feed& f = *feeds_[feed];
  assert(!f.ended);
  const bool waiting = f.queue.empty() && !f.idle;
  if (waiting && f.settings.idle_timeout_ms) deadlines_.erase({f.idle_deadline, feed});
  settings.name = f.settings.name;
  settings.group = f.settings.group;
  f.settings = std::move(settings);
  if (waiting && f.settings.idle_timeout_ms) {
    // The clock keeps its start: a longer timeout extends the wait, a
    // shorter one may end it at the next run().
    f.idle_deadline = f.live_since + *f.settings.idle_timeout_ms;
    deadlines_.emplace(f.idle_deadline, feed);
  }
  f.queue.set_water_marks(f.settings.high_water_mark, f.settings.low_water_mark);
  if (!f.held.empty()) release_held(feed, false, now);
  check_water_marks(feed);
}

bool Merger::retired(FeedId feed) const {
  const Feed& f = *feeds_[feed];
  return f.ended && f.queue.empty() && f.held.empty();
}

void Merger::remove(FeedId feed) {
  assert(retired(feed));
  if (holder_ == feed) holder_.reset();
  // Its decisions not yet taken go with it: the slot may be reused before
  // the owner takes them, and they must not reach the next feed. (Late
  // records are never among them: only run() makes those, and the caller
  // takes them before it removes a feed.)
  std::erase_if(decisions_, [&](const MergerDecision& d) {
    assert(d.feed != feed || d.kind != MergerDecision::Kind::late);
    return d.feed == feed;
  });
  feeds_[feed].reset();
  free_.push_back(feed);
}

void Merger::flip_pause(FeedId feed) {
  Feed& f = *feeds_[feed];
  f.paused = !f.paused;
  if (f.paused) ++f.stats.pauses;
  decide(f.paused ? MergerDecision::Kind::pause : MergerDecision::Kind::resume, feed);
}

FeedState Merger::state(FeedId feed) const {
  const Feed& f = *feeds_[feed];
  if (!f.queue.empty()) return FeedState::ready;
  if (f.ended) return FeedState::ended;
  return f.idle ? FeedState::idle : FeedState::waiting;
}

Key Merger::front_key(FeedId feed) const {
  const FeedQueue& queue = feeds_[feed]->queue;
  return Key{queue.front_ordinal(), queue.front_text()};
}

// Whether the queue's head is older than the frontier (a late record), in
// key order: ordinal, then text. While no key has had text, every text is
// empty and the ordinals decide alone.
bool Merger::key_before_frontier(const Key& key) const {
  if (!frontier_) return false;
  if (key.ordinal != frontier_->ordinal) return key.ordinal < frontier_->ordinal;
  return compare_text_ && key.text < frontier_->text;
}

// Whether a record brings an idle feed back: one at or after the
// frontier, or, with max_lag, one no further behind it than max_lag (a
// feed back from a pause a little behind the others rejoins and catches
// up, while one far behind stays idle and its records stay late).
bool Merger::sign_of_life(const Feed& f, const Key& key) const {
  if (!key_before_frontier(key)) return true;
  return f.settings.max_lag &&
         key_distance(options_.key_type, key, *frontier_) <= *f.settings.max_lag;
}

// Merge order of two heads whose ordinals are equal (the tournament has
// compared those): key text, then rank, then name.
bool Merger::tie_before(const void* merger, const HeadTournament::Entry& a,
                        const HeadTournament::Entry& b) {
  const Merger& self = *static_cast<const Merger*>(merger);
  const Feed& fa = *self.feeds_[a.feed];
  const Feed& fb = *self.feeds_[b.feed];
  if (self.compare_text_) {
    int c = fa.queue.front_text().compare(fb.queue.front_text());
    if (c != 0) return c < 0;
  }
  if (a.rank != b.rank) return a.rank < b.rank;
  // Members of one fleet: by name (only they share a rank).
  return fa.settings.name < fb.settings.name;
}

void Merger::set_ranks(const std::vector<uint32_t>& ranks) {
  std::vector<uint32_t> rank_of(feeds_.size(), 0);
  for (size_t i = 0; i < feeds_.size(); ++i) {
    if (feeds_[i] && i < ranks.size()) feeds_[i]->rank = ranks[i];
    if (feeds_[i]) rank_of[i] = feeds_[i]->rank;
  }
  // Every match played again with the new ranks (reloads are rare).
  heads_.rerank(rank_of);
}

HeadTournament::Entry Merger::head_entry(FeedId feed) const {
  return HeadTournament::Entry{feeds_[feed]->queue.front_ordinal(), feeds_[feed]->rank, feed};
}

void Merger::enter(FeedId feed) {
  set_head_hint(feed);
  heads_.set(head_entry(feed));
}

// The queue ran dry: the feed is waiting again, its idle clock running
// from its last sign of life. An idle feed whose queue held only late
// records stays idle: they were no sign of life.
void Merger::became_empty(FeedId feed) {
  Feed& f = *feeds_[feed];
  if (f.ended || f.idle) return;
  ++waiting_;
  if (f.settings.idle_timeout_ms) {
    f.idle_deadline = f.live_since + *f.settings.idle_timeout_ms;
    deadlines_.emplace(f.idle_deadline, feed);
  }
}

bool Merger::push(FeedId feed, std::string_view record, ParsedRecord&& parsed, uint64_t now) {
  Feed& f = *feeds_[feed];
  assert(!f.ended);
  if (parsed.heartbeat) {
    ++f.stats.heartbeats;
  } else {
    ++f.stats.records_in;
    f.stats.bytes_in += record.size();
  }
  if (!parsed.key.text.empty()) compare_text_ = true;
  assign_key(f.stats.last_key, parsed.key);
  if (f.settings.reorder_window <= 0) {
    enqueue(feed, record, std::move(parsed), now);
    return may_read(feed);
  }
  // Reorder window: hold the record, sorted by (key, arrival); release
  // everything at least `window` older than the newest key seen.
  if (!f.newest || *f.newest < parsed.key) f.newest = parsed.key;
  f.held_bytes += record.size();
  Feed::Held held{parsed.key, f.held_seq++, std::string(record), std::move(parsed)};
  auto pos = std::upper_bound(f.held.begin(), f.held.end(), held, [](const auto& a, const auto& b) {
    return a.key < b.key || (a.key == b.key && a.seq < b.seq);
  });
  f.held.insert(pos, std::move(held));
  release_held(feed, false, now);
  return may_read(feed);
}

// Memory bounds the window too: a feed whose keys stop advancing (or that
// sends faster than the window allows) would otherwise be held without
// limit. Past the high-water mark the oldest held records are released
// early; from the queue on, the usual pause applies.
void Merger::release_held(FeedId feed, bool all, uint64_t now) {
  Feed& f = *feeds_[feed];
  size_t n = 0;
  while (n < f.held.size() &&
         (all || f.held_bytes > f.settings.high_water_mark ||
          key_distance(options_.key_type, f.held[n].key, *f.newest) >= f.settings.reorder_window)) {
    f.held_bytes -= f.held[n].bytes.size();
    ++n;
  }
  for (size_t i = 0; i < n; ++i) {
    enqueue(feed, f.held[i].bytes, std::move(f.held[i].parsed), now);
  }
  f.held.erase(f.held.begin(), f.held.begin() + static_cast<ptrdiff_t>(n));
}

bool Merger::push(FeedId feed, const RecordRun& run, uint64_t now) {
  if (run.records.empty()) return may_read(feed);
  Feed& f = *feeds_[feed];
  assert(!f.ended);
  if (f.settings.reorder_window > 0) {
    // Held records are copied anyway; one at a time through the window.
    for (size_t i = 0; i < run.size(); ++i) push(feed, run.records[i].bytes(), run.parsed(i), now);
    return may_read(feed);
  }
  // What push() does per record, done once for the run: the per-record
  // calls, stats and checks cost more than the queueing itself.
  for (const BlockRecord& record : run.records) {
    if (record.heartbeat) {
      ++f.stats.heartbeats;
    } else {
      ++f.stats.records_in;
      f.stats.bytes_in += record.length;
    }
  }
  if (run.any_text()) compare_text_ = true;
  assign_key(f.stats.last_key, run.key(run.size() - 1));
  // Only an idle feed asks whether these are a sign of life.
  bool alive = !f.idle;
  for (size_t i = 0; !alive && i < run.size(); ++i) alive = sign_of_life(f, run.key(i));
  bool was_empty = f.queue.empty();
  f.queue.push(run);
  enqueued(feed, was_empty, alive, now);
  return may_read(feed);
}

bool Merger::in_flight(FeedId feed, size_t bytes) {
  feeds_[feed]->queue.set_in_flight(bytes);
  return check_water_marks(feed);
}

void Merger::enqueue(FeedId feed, std::string_view record, ParsedRecord&& parsed, uint64_t now) {
  Feed& f = *feeds_[feed];
  bool alive = !f.idle || sign_of_life(f, parsed.key);
  bool was_empty = f.queue.empty();
  f.queue.push(record, std::move(parsed));
  enqueued(feed, was_empty, alive, now);
}

// After records were queued: a feed that was empty becomes ready (and
// enters the tournament); a queue at its high-water mark pauses the feed.
// An idle feed comes back only with a record at or after the frontier
// (`alive`): late records pass through it while it stays idle.
void Merger::enqueued(FeedId feed, bool was_empty, bool alive, uint64_t now) {
  Feed& f = *feeds_[feed];
  if (f.idle && alive) {
    f.idle = false;
    f.lagging = false;
    f.live_since = now;  // its idle clock starts afresh
    decide(MergerDecision::Kind::active, feed);
  } else if (was_empty && !f.idle) {
    --waiting_;
    if (f.settings.idle_timeout_ms) deadlines_.erase({f.idle_deadline, feed});
  }
  if (was_empty) enter(feed);
  check_water_marks(feed);
}

void Merger::end(FeedId feed, uint64_t now) {
  Feed& f = *feeds_[feed];
  if (f.ended) return;
  if (!f.held.empty()) release_held(feed, true, now);
  if (f.queue.empty() && !f.idle) {
    --waiting_;
    if (f.settings.idle_timeout_ms) deadlines_.erase({f.idle_deadline, feed});
  }
  f.idle = false;
  f.lagging = false;
  f.ended = true;
  --open_;
  check_finished();
}

// Pops the head of the feed on top of the tournament. If the feed has
// another record, that record replays the top's matches.
void Merger::pop_front(FeedId feed, uint64_t now, bool late) {
  assert(heads_.top().feed == feed);
  Feed& f = *feeds_[feed];
  f.queue.pop();
  if (f.queue.empty()) {
    heads_.remove_top();
  } else {
    set_head_hint(feed);
    heads_.replace_top(HeadTournament::Entry{f.queue.front_ordinal(), f.rank, feed});
  }
  popped(feed, late, now);
}

// After a record left the queue (and the tournament has its new top).
void Merger::popped(FeedId feed, bool late, uint64_t now) {
  Feed& f = *feeds_[feed];
  if (!late) f.live_since = now;
  if (f.queue.empty()) became_empty(feed);
  check_water_marks(feed);
}

// Pops the head of a feed that left the tournament, and enters the feed
// again if it still has records.
void Merger::pop_detached(FeedId feed, uint64_t now) {
  Feed& f = *feeds_[feed];
  f.queue.pop();
  if (!f.queue.empty()) enter(feed);
  popped(feed, false, now);
}

// True if any feed stopped waiting.
bool Merger::sweep_idle(uint64_t now) {
  bool changed = false;
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    FeedId feed = deadlines_.begin()->second;
    Feed& f = *feeds_[feed];
    changed = true;
    if (!f.held.empty()) {
      // Gone quiet with records held for reordering: nothing newer is
      // coming to release them, so release them all now.
      release_held(feed, true, now);
      continue;
    }
    go_idle(feed, false);
  }
  return changed;
}

// A waiting feed stops holding the merge.
void Merger::go_idle(FeedId feed, bool lagging) {
  Feed& f = *feeds_[feed];
  if (f.settings.idle_timeout_ms) deadlines_.erase({f.idle_deadline, feed});
  --waiting_;
  f.idle = true;
  f.lagging = lagging;
  decide(MergerDecision::Kind::idle, feed);
}

// max_lag: while the merge is held, lets go of waiting feeds that have
// fallen more than their max_lag behind the smallest ready head and
// behind most open feeds (see FeedSettings::max_lag). True if any went.
// Only live feeds (those with an idle timeout) wait long enough to lag.
bool Merger::release_lagging() {
  if (heads_.empty()) return false;
  const Key head = front_key(heads_.top().feed);
  std::vector<FeedId> lagging;
  for (const auto& [deadline, feed] : deadlines_) {
    const Feed& f = *feeds_[feed];
    if (f.settings.max_lag && f.stats.last_key &&
        key_distance(options_.key_type, *f.stats.last_key, head) > *f.settings.max_lag) {
      lagging.push_back(feed);
    }
  }
  if (lagging.empty()) return false;
  // Where every open, not idle feed has got to: its head if it has
  // records, else its last key.
  std::vector<Key> progress;
  for (FeedId id = 0; id < feeds_.size(); ++id) {
    const Feed* f = feeds_[id].get();
    if (f == nullptr || f->ended || f->idle) continue;
    if (!f->queue.empty()) {
      progress.push_back(front_key(id));
    } else if (f->stats.last_key) {
      progress.push_back(*f->stats.last_key);
    }
  }
  const size_t open = progress.size();
  bool released = false;
  for (FeedId feed : lagging) {
    const Feed& f = *feeds_[feed];
    size_t ahead = std::count_if(progress.begin(), progress.end(), [&](const Key& k) {
      return key_distance(options_.key_type, *f.stats.last_key, k) > *f.settings.max_lag;
    });
    if (2 * ahead > open) {
      go_idle(feed, true);
      released = true;
    }
  }
  return released;
}

// Who holds the merge after a run: the feed waiting longest while others
// have records ready.
void Merger::update_holder(uint64_t now) {
  std::optional<FeedId> holder;
  if (!heads_.empty() && waiting_ > 0 && !output_.full()) {
    if (!deadlines_.empty()) {
      holder = deadlines_.begin()->second;
    } else {
      for (FeedId id = 0; id < feeds_.size() && !holder; ++id) {
        if (feeds_[id] && state(id) == FeedState::waiting) holder = id;
      }
    }
  }
  if (holder != holder_) held_since_ = now;
  holder_ = holder;
}

std::optional<uint64_t> Merger::next_deadline() const {
  if (deadlines_.empty()) return std::nullopt;
  return deadlines_.begin()->first;
}

void Merger::handle_late(FeedId feed) {
  Feed& f = *feeds_[feed];
  ++f.stats.late;
  bool emit = f.settings.late.value_or(options_.late) == LatePolicy::emit;
  std::string_view record = f.queue.front_bytes();
  decisions_.push_back(MergerDecision{MergerDecision::Kind::late, feed, emit, std::string(record),
                                      output_.records(), emit ? 0 : f.queue.front_origin()});
  decision_bytes_ += record.size();
  if (emit) {
    OutputLog::Origin origin;
    if (options_.mode == MergeMode::combine) {
      scratch_ = std::to_string(f.rank);
      output_.append_parts({"{\"data\":[", record, "],\"indexes\":[", scratch_, "],\"",
                            options_.combine_key_name, "\":", f.queue.front_key_text(), "}"},
                           front_key(feed), f.source_span(), f.front_origin(origin));
    } else {
      output_.append(record, front_key(feed), f.source_span(), f.front_origin(origin));
    }
    ++records_out_;
  }
}

bool Merger::emit_one(FeedId feed) {
  Feed& f = *feeds_[feed];
  // The frontier is assigned per record: copy the text only if keys have
  // any (a std::string assignment per record would be a call for nothing).
  if (!frontier_) {
    frontier_ = front_key(feed);
  } else {
    frontier_->ordinal = f.queue.front_ordinal();
    if (compare_text_) frontier_->text = f.queue.front_text();
  }
  ++f.stats.records_out;
  ++records_out_;
  OutputLog::Origin origin;
  return output_.append(f.queue.front_bytes(), *frontier_, f.source_span(), f.front_origin(origin));
}

// One combine step: the feeds whose heads share the smallest key, one
// record from each, in feed order.
bool Merger::emit_combined(uint64_t now) {
  group_.clear();
  const Key key = front_key(heads_.top().feed);
  // Take the tied tops out of the tournament; they come out in rank order.
  while (!heads_.empty() && front_key(heads_.top().feed) == key) {
    FeedId feed = heads_.top().feed;
    heads_.remove_top();
    if (feeds_[feed]->queue.front_heartbeat()) {
      pop_detached(feed, now);  // not forwarded; its next record may tie too
      continue;
    }
    group_.push_back(feed);
  }
  scratch_.assign("{\"data\":[");
  for (size_t i = 0; i < group_.size(); ++i) {
    if (i) scratch_ += ',';
    scratch_ += feeds_[group_[i]]->queue.front_bytes();
  }
  scratch_ += "],\"indexes\":[";
  for (size_t i = 0; i < group_.size(); ++i) {
    if (i) scratch_ += ',';
    scratch_ += std::to_string(feeds_[group_[i]]->rank);
  }
  scratch_ += "],\"";
  scratch_ += options_.combine_key_name;
  scratch_ += "\":";
  scratch_ += feeds_[group_[0]]->queue.front_key_text();
  scratch_ += '}';
  frontier_ = key;
  records_out_ += group_.size();
  group_sources_.clear();
  group_origins_.clear();
  for (FeedId feed : group_) {
    const Feed& f = *feeds_[feed];
    for (OutputLog::SourceId source : f.source_span()) group_sources_.push_back(source);
    if (f.queue.front_origin() != 0) {
      group_origins_.push_back(OutputLog::Origin{f.sources[0], f.queue.front_origin()});
    }
  }
  bool more = output_.append(scratch_, key, group_sources_, group_origins_);
  for (FeedId feed : group_) {
    ++feeds_[feed]->stats.records_out;
    pop_detached(feed, now);
  }
  return more;
}

// The next record emitted is most often the head of one of the losers
// kept nearest the root on the top's path in the tournament: at K=1000 on
// the benchmark data, the root's in 49 % of the steps (the best of the
// other half of the feeds), the next one down in 25 %, the third in 12 %;
// in 1 % the top's own next record follows, next in memory to the one
// just emitted. With many feeds those heads lie in a thousand read
// blocks that left the cache long ago, and the merge waited on memory at
// every record: reading its feed's queue, copying it into the output.
// Asking for them a step ahead overlaps that wait with the step (K=1000
// one-shot: 10-19 % less wall time). The record's first bytes are loaded
// rather than prefetched: a prefetch of them alone measured no gain (it
// may be dropped on a TLB miss, and the blocks span thousands of pages);
// the feed's own lines are few and stay mapped. The two lines after the
// first are prefetched behind that load, on its page as a rule: a
// telemetry record spans two or three lines, and the copy into the output
// waited on them (K=1000 one-shot: 7 % less CPU, 11 alternated runs).
void Merger::prefetch_next() const {
  heads_.contenders(next_heads_asked, [&](const HeadTournament::Entry& contender) {
    const FeedId feed = contender.feed;
    const HeadHint& head = head_hints_[feed];
    // Loaded, so it must be the head's: a queue's front changes only in
    // pop_front(), which updates the hint, and while the feed has no head
    // (enter() sets it).
    assert(head.bytes == feeds_[feed]->queue.front_data());
    (void)*static_cast<const volatile char*>(head.bytes);
    __builtin_prefetch(static_cast<const char*>(head.bytes) + 64);
    __builtin_prefetch(static_cast<const char*>(head.bytes) + 128);
    __builtin_prefetch(head.slot);
    const Feed* f = feeds_[feed].get();
    const char* from = reinterpret_cast<const char*>(&f->rank);
    const char* to = reinterpret_cast<const char*>(&f->live_since);
    for (const char* line = from; line <= to; line += 64) __builtin_prefetch(line);
  });
}

bool Merger::run(uint64_t now) {
  sweep_idle(now);
  size_t steps = 0;
  bool budget_spent = false;
  while (!heads_.empty() && !output_.full()) {
    if (++steps > max_steps_per_run || decision_bytes_ >= max_decision_bytes) {
      budget_spent = true;
      break;
    }
    FeedId top = heads_.top().feed;
    prefetch_next();
    Feed& f = *feeds_[top];
    if (f.queue.front_heartbeat()) {
      // A heartbeat is never forwarded. While another feed is waiting it
      // must stay: that feed may still send something older, and the
      // heartbeat is what keeps this feed from counting as waiting too.
      // Once nothing waits and it is the smallest head, everything older
      // has been emitted and it has done its job. One behind the frontier
      // promises nothing new.
      const bool behind = frontier_ && before_frontier(f.queue);
      if (waiting_ > 0 && !behind) {
        if (sweep_idle(now) || release_lagging()) continue;
        break;
      }
      // One behind the frontier is no sign of life either (unless within
      // max_lag, like a late record): a wrong clock sending heartbeats
      // must not keep its feed waiting.
      pop_front(top, now, behind && !sign_of_life(f, front_key(top)));
      continue;
    }
    if (frontier_ && before_frontier(f.queue)) {
      // Late, but within max_lag: still a sign of life (see sign_of_life).
      const bool alive = sign_of_life(f, front_key(top));
      handle_late(top);
      pop_front(top, now, !alive);
      continue;
    }
    if (waiting_ > 0) {
      // A late record may have left a feed whose clock ran out already.
      if (sweep_idle(now) || release_lagging()) continue;
      break;
    }
    if (options_.mode == MergeMode::combine) {
      emit_combined(now);
    } else {
      emit_one(top);
      pop_front(top, now);
    }
  }
  update_holder(now);
  check_finished();
  return budget_spent;
}

std::optional<Key> Merger::lower_bound() const {
  std::optional<Key> bound;
  for (const auto& slot : feeds_) {
    if (!slot) continue;
    const Feed& f = *slot;
    std::optional<Key> feed_bound;
    if (!f.queue.empty()) {
      feed_bound = Key{f.queue.front_ordinal(), f.queue.front_text()};
    } else if (f.ended) {
      if (f.held.empty()) continue;  // delivers nothing more
    } else if (f.idle || !f.stats.last_key) {
      return frontier_;
    } else {
      feed_bound = f.stats.last_key;
    }
    if (!f.held.empty() && (!feed_bound || f.held.front().key < *feed_bound)) {
      feed_bound = f.held.front().key;
    }
    if (!bound || *feed_bound < *bound) bound = std::move(feed_bound);
  }
  if (!bound || (frontier_ && *bound < *frontier_)) return frontier_;
  return bound;
}

void Merger::release() {
  --holds_;
  check_finished();
}

void Merger::check_finished() {
  if (finished_ || !heads_.empty() || open_ > 0 || holds_ > 0) return;
  finished_ = true;
  output_.end();
}

}  // namespace chronomerge
