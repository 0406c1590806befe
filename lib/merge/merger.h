// Merger: the k-way chronological merge of feeds into an Output.
//
// Pure: no I/O and no clock of its own. Transports push() parsed records
// and report end(); the owner calls run(now) after anything changed (new
// records, an idle deadline passed, the output asked for more). run() emits
// the smallest head only while no open feed is *waiting* (empty, and empty
// for less than its idle timeout), and stops as soon as Output::push()
// returns false.
//
// The merger never calls out. push() returns whether the feed may go on
// reading; everything else it decides — read this feed again, this record
// was late, this feed went idle — is collected as MergerDecisions that the
// owner takes (take_decisions()) and acts on after the call returns. So no
// transport, sink or log can re-enter the merger while it works.
//
// Order, interleave mode: (key, feed rank, arrival); the rank is the feed's
// position in the configuration (see set_ranks()).
//
// A late record (older than the frontier) is never a sign of life: a
// feed's idle clock runs from its last record at or after the frontier,
// so a producer with a wrong clock cannot hold the merge. With max_lag, a
// waiting feed that has fallen too far behind the others stops holding the
// merge too (see FeedSettings::max_lag).
//
// Feed ids are slots: remove() frees an ended, drained feed's slot, and
// add_feed() reuses it, so a daemon that adds and removes feeds for months
// keeps only the feeds it has.
//
// Loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "merge/feed_queue.h"
#include "merge/head_tournament.h"
#include "merge/merge_options.h"
#include "output/output_log.h"
#include "record/record_parser.h"

namespace chronomerge {

using FeedId = uint32_t;

enum class FeedState { ready, waiting, idle, ended };
std::string_view to_string(FeedState state);

struct FeedSettings {
  std::string name;
  size_t high_water_mark = default_feed_high_water_mark;
  size_t low_water_mark = default_feed_low_water_mark;
  // nullopt: the feed never goes idle (finite inputs: files, one-shot runs).
  std::optional<uint64_t> idle_timeout_ms;
  // Hold and sort records until one this much newer arrives; 0 = off.
  double reorder_window = 0;
  // A waiting feed stops holding the merge once the smallest ready head is
  // more than this past its last key (key units) and most open feeds are
  // that far ahead of it: a feed behind the rest no longer sets the pace,
  // while a feed ahead of the rest (a clock running fast) never makes the
  // others' records late. Unset: off.
  std::optional<double> max_lag;
  // Unset: MergerOptions::late.
  std::optional<LatePolicy> late;
  // A fleet member: the fleet's name. Its records carry the fleet as a
  // source too (a filter naming the fleet takes them), and ties with
  // the fleet's other members (which share its rank) go by name.
  std::string group;
};

struct FeedStats {
  uint64_t records_in = 0;  // records pushed (heartbeats excluded)
  uint64_t bytes_in = 0;
  uint64_t heartbeats = 0;
  uint64_t records_out = 0;  // emitted in order
  uint64_t late = 0;         // late records, whatever the policy did
  uint64_t pauses = 0;
  std::optional<Key> last_key;

  // Adds the counts of another instance (a retired feed of the same
  // name, a member of the same fleet); its last key, if it has one, wins.
  void add(const FeedStats& other) {
    records_in += other.records_in;
    bytes_in += other.bytes_in;
    heartbeats += other.heartbeats;
    records_out += other.records_out;
    late += other.late;
    pauses += other.pauses;
    if (other.last_key) last_key = other.last_key;
  }
};

// What the merger decided for its owner to carry out.
struct MergerDecision {
  enum class Kind {
    // Stop reading the feed: its queue reached the high-water mark by a
    // change of settings (update()). push() returns false instead.
    pause,
    // Read the feed again: its queue dropped to the low-water mark.
    resume,
    // A record older than the frontier reached the head of its queue;
    // `record` holds its bytes, `emitted` whether policy emit forwarded it.
    late,
    // Waiting -> idle (Merger::lagging() tells whether max_lag rather than
    // the idle timeout let it go), and idle -> active.
    idle,
    active,
  };
  Kind kind;
  FeedId feed;
  bool emitted = false;
  std::string record;
  // late: records the output had taken before this one (emitted or not).
  uint64_t output_position = 0;
  // late, not emitted: the record's ParsedRecord::origin (0 if untracked);
  // an emitted one reaches the output log with it.
  uint64_t origin = 0;
};

struct MergerOptions {
  MergeMode mode = MergeMode::interleave;
  LatePolicy late = LatePolicy::emit;
  KeyType key_type = KeyType::integer;
  // Field name written into combine-mode objects ("time").
  std::string combine_key_name = "time";
};

class Merger {
 public:
  Merger(MergerOptions options, OutputLog& output);
  Merger(const Merger&) = delete;
  Merger& operator=(const Merger&) = delete;

  // A new feed, in the first free slot. It starts waiting (the merge waits
  // for it, as for every feed at start) or, with `joins_idle`, idle: a
  // feed added while the merge runs must not stall it, and its records
  // older than the frontier are late. A feed without an idle timeout
  // always starts waiting.
  // `rank`: its rank (see set_ranks()); unset, after every feed in use.
  FeedId add_feed(FeedSettings settings, uint64_t now, bool joins_idle = false,
                  std::optional<uint32_t> rank = std::nullopt);

  // New settings for an open feed, applied in place (a reload): water
  // marks (pausing or resuming it at once if need be), idle timeout (a
  // waiting feed's clock keeps its start), reorder window (a smaller one
  // releases what it no longer holds), max_lag, late policy. Nothing
  // queued is lost or reordered.
  void update(FeedId feed, FeedSettings settings, uint64_t now);

  // Frees the slot of a feed that has ended and has nothing queued
  // (retired()); its id may be reused by the next add_feed(). Decisions
  // about it not yet taken (pause, resume, idle) are dropped. REQUIRES:
  // the decisions of the last run() were taken (late records are among
  // them and must not be lost).
  void remove(FeedId feed);
  // Ended, nothing queued or held: remove() may be called.
  bool retired(FeedId feed) const;

  // A parsed record (or heartbeat) from the feed's transport. True while
  // the feed may go on reading; false once its queue has reached the
  // high-water mark: the feed is then paused until a `resume` decision.
  // REQUIRES: the feed has not ended. `record` is copied; it need only be
  // valid during the call.
  bool push(FeedId feed, std::string_view record, ParsedRecord&& parsed, uint64_t now);
  // The same for a run of records of one block, in arrival order, without
  // a copy: their bytes lie in memory kept alive by `run.block` (see
  // FeedQueue's zero-copy push), which the queue references until they are
  // emitted. Records held by a reorder window are still copied. Key texts
  // are moved out of `run.texts`.
  bool push(FeedId feed, const RecordRun& run, uint64_t now);

  // Bytes the feed's transport has read and not yet pushed (a block on
  // another thread): they count toward its water marks from now on, and
  // pushing the block takes them over. 0 once the batch is pushed. Same
  // answer as push(); a feed that has ended may call it too.
  bool in_flight(FeedId feed, size_t bytes);

  // The feed delivers nothing more (EOF, process exit, removed on reload).
  // Its queued records are still merged.
  void end(FeedId feed, uint64_t now);

  // The merge ends (the output is ended) once every feed has ended and
  // everything is emitted. While the set of feeds is being changed
  // (starting up, reloading) a feed may end, or all may be replaced,
  // before the last one is added: hold() defers the end until the
  // matching release(). Holds nest.
  void hold() { ++holds_; }
  void release();

  // Emits while allowed and the output accepts, for at most
  // `max_steps_per_run` records (or until the decisions taken hold
  // `max_decision_bytes`), so one call never monopolises the loop. True if
  // it stopped for that budget with more to do: call again soon. Cheap
  // when nothing is to be done.
  bool run(uint64_t now);
  static constexpr size_t max_steps_per_run = 16384;
  static constexpr size_t max_decision_bytes = 1 << 20;

  // The decisions made since the last call, in order, moved into `out`
  // (which is cleared first; its capacity is reused).
  void take_decisions(std::vector<MergerDecision>& out);
  bool has_decisions() const { return !decisions_.empty(); }

  // Ties between equal keys go by rank: a feed's position in the current
  // configuration (combine mode's "indexes" too), then, between members
  // of one fleet (one rank), by name bytewise. add_feed() ranks a feed
  // after every existing one; a reload re-ranks the open feeds by their
  // new positions. REQUIRES: one rank per feed id in `ranks`.
  void set_ranks(const std::vector<uint32_t>& ranks);
  uint32_t rank(FeedId feed) const { return feeds_[feed]->rank; }

  // A reload may change what happens to late records.
  void set_late_policy(LatePolicy late) { options_.late = late; }

  // When run() must be called again for a waiting feed to turn idle.
  std::optional<uint64_t> next_deadline() const;

  // Every feed ended and every queue drained; the output has been ended.
  bool finished() const { return finished_; }

  FeedState state(FeedId feed) const;
  // Idle because max_lag let it go, not because it was quiet.
  bool lagging(FeedId feed) const { return feeds_[feed]->lagging; }
  bool paused(FeedId feed) const { return feeds_[feed]->paused; }
  const FeedStats& stats(FeedId feed) const { return feeds_[feed]->stats; }
  const FeedSettings& settings(FeedId feed) const { return feeds_[feed]->settings; }
  size_t queue_bytes(FeedId feed) const { return feeds_[feed]->queue.bytes(); }
  // What the feed's water marks compare against (FeedQueue::memory()).
  size_t queue_memory(FeedId feed) const { return feeds_[feed]->queue.memory(); }
  // Slots, used or free: ids are below this.
  size_t feed_count() const { return feeds_.size(); }
  // Feeds added and not removed.
  size_t feeds_in_use() const { return feeds_.size() - free_.size(); }

  // The feed the merge is waiting for while records of other feeds are
  // ready (the one waiting longest, if several), and since when (loop
  // time) that feed has held it without a break. Updated by run().
  std::optional<FeedId> holder() const { return holder_; }
  uint64_t held_since() const { return held_since_; }
  const std::optional<Key>& frontier() const { return frontier_; }
  // A lower bound of every key the merge may still emit in order (late
  // records aside): the smallest of the ready feeds' heads and of the
  // waiting feeds' newest keys (a feed's own keys never go back), and never
  // below the frontier. While a feed is idle, or waits with no key yet, it
  // could still send anything from the frontier on: the bound is then the
  // frontier. nullopt before anything is known. What heartbeats on an
  // output carry.
  std::optional<Key> lower_bound() const;
  uint64_t records_out() const { return records_out_; }

 private:
  struct Feed {
    Feed(FeedSettings s)
        : settings(std::move(s)), queue(settings.high_water_mark, settings.low_water_mark) {}
    FeedSettings settings;
    uint32_t rank = 0;  // position in the current config: breaks ties
    // What the log records it came from: the feed, and its group.
    OutputLog::SourceId sources[2] = {0, 0};
    uint8_t source_count = 1;
    std::span<const OutputLog::SourceId> source_span() const { return {sources, source_count}; }
    // The head's origin, for the log (none if untracked).
    std::span<const OutputLog::Origin> front_origin(OutputLog::Origin& storage) const {
      storage = OutputLog::Origin{sources[0], queue.front_origin()};
      return storage.position != 0 ? std::span<const OutputLog::Origin>(&storage, 1)
                                   : std::span<const OutputLog::Origin>();
    }
    FeedQueue queue;
    FeedStats stats;
    bool ended = false;
    bool paused = false;
    bool idle = false;
    bool lagging = false;        // idle because of max_lag
    uint64_t idle_deadline = 0;  // valid while in deadlines_
    // Last sign of life: when a record at or after the frontier left the
    // queue (or the feed was added). The idle clock runs from here.
    uint64_t live_since = 0;
    // Reorder window: records held back, sorted by (key, arrival).
    struct Held {
      Key key;
      uint64_t seq;
      std::string bytes;
      ParsedRecord parsed;
    };
    std::vector<Held> held;
    size_t held_bytes = 0;  // bounded by the feed's high-water mark
    uint64_t held_seq = 0;
    std::optional<Key> newest;  // largest key seen, for the window
  };

  // Where a feed's head lies, for prefetch_next(): its bytes and its slot
  // in the queue. Kept beside the tournament, by feed, so that its
  // entries stay 16 bytes.
  struct HeadHint {
    const char* bytes = nullptr;
    const void* slot = nullptr;
  };

  // HeadTournament's order for equal ordinals: key text, then rank, then
  // name.
  static bool tie_before(const void* merger, const HeadTournament::Entry& a,
                         const HeadTournament::Entry& b);
  void set_head_hint(FeedId feed) {
    const FeedQueue& queue = feeds_[feed]->queue;
    head_hints_[feed] = HeadHint{queue.front_data(), queue.front_slot()};
  }
  Key front_key(FeedId feed) const;
  // Whether the queue's head is older than the frontier (a late record).
  // REQUIRES: a frontier. Inline, like the rest of a merge step's checks.
  bool before_frontier(const FeedQueue& queue) const {
    if (queue.front_ordinal() != frontier_->ordinal)
      return queue.front_ordinal() < frontier_->ordinal;
    return compare_text_ && queue.front_text() < frontier_->text;
  }
  HeadTournament::Entry head_entry(FeedId feed) const;
  bool key_before_frontier(const Key& key) const;
  bool sign_of_life(const Feed& f, const Key& key) const;
  bool release_lagging();
  void update_holder(uint64_t now);
  // The feed (not the top) has a head now: it enters the tournament.
  void enter(FeedId feed);
  void prefetch_next() const;
  static constexpr size_t next_heads_asked = 3;  // see prefetch_next()
  void enqueue(FeedId feed, std::string_view record, ParsedRecord&& parsed, uint64_t now);
  void enqueued(FeedId feed, bool was_empty, bool alive, uint64_t now);
  bool may_read(FeedId feed) const { return !feeds_[feed]->paused; }
  void release_held(FeedId feed, bool all, uint64_t now);
  void popped(FeedId feed, bool late, uint64_t now);
  // `late`: the record was late and no sign of life; the feed's idle
  // clock keeps running.
  void pop_front(FeedId feed, uint64_t now, bool late = false);
  void pop_detached(FeedId feed, uint64_t now);
  void became_empty(FeedId feed);
  // After the queue or its marks changed: pause a feed at its high mark,
  // resume a paused one at its low mark (hysteresis: nothing in between).
  // False if the feed is (now) paused. Inline: every pop asks.
  bool check_water_marks(FeedId feed) {
    Feed& f = *feeds_[feed];
    if (f.paused ? f.queue.at_or_below_low() : f.queue.at_or_above_high()) flip_pause(feed);
    return !f.paused;
  }
  void flip_pause(FeedId feed);
  bool sweep_idle(uint64_t now);
  void go_idle(FeedId feed, bool lagging);
  bool emit_one(FeedId feed);
  bool emit_combined(uint64_t now);
  void handle_late(FeedId feed);
  void check_finished();

  void decide(MergerDecision::Kind kind, FeedId feed);

  MergerOptions options_;
  OutputLog& output_;
  std::vector<MergerDecision> decisions_;
  size_t decision_bytes_ = 0;                 // late records' bytes in decisions_
  std::vector<std::unique_ptr<Feed>> feeds_;  // by id; null: a free slot
  std::vector<FeedId> free_;                  // free slots, reused first
  // The heads of the feeds with a non-empty queue.
  HeadTournament heads_{&Merger::tie_before, this};
  std::vector<HeadHint> head_hints_;  // by FeedId, as feeds_; valid while it has a head
  // Whether any key so far had text (string keys). Until one does, every
  // key's text is empty and comparing ordinals alone is comparing keys.
  bool compare_text_ = false;
  size_t waiting_ = 0;  // open feeds, empty, not idle
  size_t open_ = 0;     // feeds not ended
  size_t holds_ = 0;    // see hold()
  // Waiting feeds with an idle timeout, by deadline.
  std::set<std::pair<uint64_t, FeedId>> deadlines_;
  std::optional<FeedId> holder_;
  uint64_t held_since_ = 0;
  std::optional<Key> frontier_;
  uint64_t records_out_ = 0;
  bool finished_ = false;
  std::string scratch_;                             // combine-mode assembly
  std::vector<FeedId> group_;                       // combine-mode group
  std::vector<OutputLog::SourceId> group_sources_;  // the group's feeds, for the log
  std::vector<OutputLog::Origin> group_origins_;    // the group's origins, for the log
};

}  // namespace chronomerge
