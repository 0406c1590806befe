// The Merger driven by the input bytes as a sequence of operations on a few
// feeds (push a record, a heartbeat or a block of records; end a feed; add
// one, which may join idle; remove a retired one; let the clock run; run
// the merge; drain some of the output), checked after every run against
// the contract of SPEC §4, and at the end against a reference stable merge.
//
// What is checked, for every configuration:
// - Exactly once: every record pushed comes out once (in order, or late
//   and emitted), or is reported late and dropped; heartbeats never come
//   out. Records of one feed leave it in arrival order (no reorder window
//   here). The merger's queue bytes always match what the harness knows is
//   still queued, so a record cannot vanish unseen.
// - Order: the records emitted in order have non-decreasing keys (the
//   frontier); a record reported late is older than the frontier at that
//   point of the output, one emitted in order is not.
// - Safety: nothing is emitted in order while an open feed is certainly
//   *waiting*: empty, and its idle clock (started when its last record at
//   or after the frontier left it) not run out, or it has no idle timeout.
// - Liveness: a run that returns with records queued and room in the
//   output must have a feed that may still be waiting; a late record (more
//   than max_lag behind, where the feed has one) or a heartbeat behind the
//   frontier is no sign of life.
// - Combine mode: a step groups one record from each of several feeds, all
//   with the same key, with ascending indexes equal to the feeds' ranks and
//   the key written as in the first record.
// - Flow control: a feed is paused exactly while the listener was told so,
//   never with an empty queue, and between its water marks as documented.
// - The end: once every feed has ended and the output is drained, the
//   merge finishes and the stats add up.
// And when every feed is finite (no idle timeout), present from the start,
// with non-decreasing keys: nothing is late and the output is exactly the
// stable merge (interleave: sorted by key, then feed rank, then arrival;
// combine: the stream-combine grouping). With finite feeds and no
// heartbeats, the in-order records alone are in that order even when keys
// go backwards.
//
// Some moments are not observable from outside: a heartbeat leaves its
// queue unseen, at some point of a run. The checks then assume the least:
// safety only counts a feed as empty when its last record's exit was seen,
// liveness treats a heartbeat as a sign of life unless it was behind the
// frontier before the run began.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "merge/merger.h"
#include "output/output_log.h"
#include "record/record_parser.h"

namespace {

using namespace chronomerge;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "merger_fuzz: %s\n", what.c_str());
  std::abort();
}

void expect(bool condition, const std::string& what) {
  if (!condition) fail(what);
}

// MERGER_FUZZ_TRACE=1 prints every operation, to read a reproducer.
const bool tracing = std::getenv("MERGER_FUZZ_TRACE") != nullptr;

template <typename... Parts>
void trace(const Parts&... parts) {
  if (!tracing) return;
  std::string line;
  ((line += parts), ...);
  std::fprintf(stderr, "%s\n", line.c_str());
}

enum class Fate { queued, emitted, late_emitted, dropped, heartbeat_gone };

struct Item {
  uint64_t id = 0;
  size_t feed = 0;   // harness feed index
  uint64_t seq = 0;  // arrival order within the feed
  Key key;
  std::string key_text;
  bool heartbeat = false;
  bool alive_at_push = false;  // a sign of life when it arrived
  std::string bytes;
  Fate fate = Fate::queued;
};

// What the harness knows of one feed.
struct HarnessFeed {
  FeedId slot = 0;
  bool ended = false;
  bool removed = false;
  bool paused = false;
  bool initial = true;  // added before the first run
  uint32_t rank = 0;    // ties and combine indexes; fixed (no reloads here)
  std::optional<uint64_t> idle_timeout;
  std::optional<double> max_lag;
  bool lagging_at_start = false;  // let go by max_lag before this run
  size_t high = 0, low = 0;
  std::deque<uint64_t> queue;  // ids still queued, arrival order
  size_t queue_bytes = 0;
  uint64_t pushed = 0;
  // Last sign of life (a record at or after the frontier left the queue,
  // or the feed was added), as early and as late as the observations
  // allow; nullopt: joined idle and no sign of life since.
  std::optional<uint64_t> life_early, life_late;
  std::optional<Key> last_key;
  bool monotone = true;
  uint64_t records_in = 0, heartbeats = 0, records_out = 0, late = 0;
};

struct Bypass {
  size_t feed;
  uint64_t record;
};

struct LateReport {
  uint64_t line;  // output records pushed before it
  uint64_t id;
  bool emitted;
};

OutputLogOptions log_options(size_t high_water_mark, size_t segment_bytes, bool string_keys) {
  OutputLogOptions options;
  options.high_water_mark = high_water_mark;
  options.segment_bytes = segment_bytes;
  options.key_type = string_keys ? KeyType::string : KeyType::integer;
  return options;
}

class Harness {
 public:
  Harness(MergerOptions options, size_t output_high, size_t chunk_bytes, bool string_keys)
      : options_(options),
        output_(log_options(output_high, chunk_bytes, string_keys)),
        merger_(options, output_),
        string_keys_(string_keys) {
    KeySpec spec;
    spec.path = "time";
    spec.type = string_keys ? KeyType::string : KeyType::integer;
    spec.heartbeat_field = "hb";
    parser_ = std::make_unique<RecordParser>(spec);
    subscriber_ = output_.subscribe(OutputLog::ConsumerOptions::lossless(SIZE_MAX), nullptr);
  }

  // --- the merger's decisions, taken after every call into it ---
  void take_decisions() {
    merger_.take_decisions(decisions_);
    for (const MergerDecision& d : decisions_) {
      switch (d.kind) {
        case MergerDecision::Kind::pause:
          pause_feed(d.feed);
          break;
        case MergerDecision::Kind::resume:
          resume_feed(d.feed);
          break;
        case MergerDecision::Kind::late:
          late_record(d.feed, d.record, d.emitted, d.output_position);
          break;
        case MergerDecision::Kind::idle:
        case MergerDecision::Kind::active:
          break;
      }
    }
  }
  void pause_feed(FeedId slot) {
    HarnessFeed& f = by_slot(slot);
    expect(!f.paused, "paused twice");
    f.paused = true;
  }
  void resume_feed(FeedId slot) {
    HarnessFeed& f = by_slot(slot);
    expect(f.paused, "resumed while not paused");
    f.paused = false;
  }
  void late_record(FeedId slot, std::string_view record, bool emitted, uint64_t position) {
    const std::vector<uint64_t> ids = ids_in(record);
    expect(ids.size() == 1, "a late report is not one record");
    expect(items_[ids[0]].bytes == record, "a late record's bytes changed");
    expect(items_[ids[0]].feed == owner_.at(slot), "a late record reported for another feed");
    reports_.push_back({position, ids[0], emitted});
  }

  // --- operations ---
  static FeedSettings settings_for(size_t index, std::optional<uint64_t> idle_timeout, size_t high,
                                   size_t low, std::optional<LatePolicy> late,
                                   std::optional<double> max_lag) {
    FeedSettings settings;
    settings.name = "f" + std::to_string(index);
    settings.high_water_mark = high;
    settings.low_water_mark = low;
    settings.idle_timeout_ms = idle_timeout;
    settings.late = late;
    settings.max_lag = max_lag;
    return settings;
  }

  size_t add_feed(std::optional<uint64_t> idle_timeout, size_t high, size_t low,
                  std::optional<LatePolicy> late, std::optional<double> max_lag, bool joins_idle) {
    FeedSettings settings = settings_for(feeds_.size(), idle_timeout, high, low, late, max_lag);
    HarnessFeed f;
    f.slot = merger_.add_feed(settings, now_, joins_idle);
    f.initial = runs_ == 0;
    f.rank = merger_.rank(f.slot);
    f.idle_timeout = idle_timeout;
    f.max_lag = max_lag;
    f.high = high;
    f.low = low;
    if (!(joins_idle && idle_timeout)) f.life_early = f.life_late = now_;
    // Ranks: after every feed in use.
    for (const HarnessFeed& other : feeds_) {
      if (!other.removed) {
        expect(f.rank > other.rank, "a new feed ranks before another");
      }
    }
    owner_[f.slot] = feeds_.size();
    trace("t=", std::to_string(now_), " add feed ", std::to_string(feeds_.size()), " slot ",
          std::to_string(f.slot), " timeout ",
          idle_timeout ? std::to_string(*idle_timeout) : "none", " marks ", std::to_string(high),
          "/", std::to_string(low), " max_lag ", max_lag ? std::to_string(*max_lag) : "none",
          joins_idle ? " joins idle" : "");
    feeds_.push_back(f);
    return feeds_.size() - 1;
  }

  // Candidates for an operation: feeds open (and, for pushes, not paused:
  // a paused transport does not read).
  std::vector<size_t> open_feeds(bool for_push) const {
    std::vector<size_t> out;
    for (size_t i = 0; i < feeds_.size(); ++i) {
      const HarnessFeed& f = feeds_[i];
      if (!f.removed && !f.ended && !(for_push && f.paused)) out.push_back(i);
    }
    return out;
  }

  // Record (or heartbeat) `id` with key index `k` (0..675) for feed `i`.
  Item make_item(size_t i, int k, bool heartbeat, uint64_t id) {
    Item item;
    item.id = id;
    item.feed = i;
    item.heartbeat = heartbeat;
    item.key_text =
        string_keys_
            ? "\"" + std::string{static_cast<char>('a' + k / 26), static_cast<char>('a' + k % 26)} +
                  "\""
            : std::to_string(k);
    item.bytes = "{\"time\":" + item.key_text + (heartbeat ? ",\"hb\":true" : "") +
                 ",\"id\":" + std::to_string(item.id) + "}";
    return item;
  }

  ParsedRecord parse(const Item& item) const {
    ParsedRecord parsed;
    auto error = parser_->parse(item.bytes, parsed);
    expect(!error, "the harness made a bad record");
    expect(parsed.heartbeat == item.heartbeat, "heartbeat flag");
    return parsed;
  }

  void note_push(HarnessFeed& f, Item& item, const ParsedRecord& parsed) {
    item.key = parsed.key;
    // A sign of life brings an idle feed back and restarts its clock now.
    item.alive_at_push = sign_of_life(f, parsed.key);
    if (item.alive_at_push) f.life_late = now_;
    item.seq = f.pushed++;
    if (f.last_key && parsed.key < *f.last_key) f.monotone = false;
    f.last_key = parsed.key;
    (item.heartbeat ? f.heartbeats : f.records_in) += 1;
    f.queue.push_back(item.id);
    f.queue_bytes += item.bytes.size();
  }

  void push(size_t i, int k, bool heartbeat) {
    HarnessFeed& f = feeds_[i];
    Item item = make_item(i, k, heartbeat, items_.size());
    ParsedRecord parsed = parse(item);
    note_push(f, item, parsed);
    trace("t=", std::to_string(now_), " push feed ", std::to_string(i), " ", item.bytes);
    items_.push_back(item);
    const bool read_on = merger_.push(f.slot, items_.back().bytes, std::move(parsed), now_);
    take_decisions();
    expect(read_on == !f.paused, "push() disagrees with the pause decisions");
    check_flow();
  }

  // Several records of one read, handed over without a copy.
  void push_block(size_t i, const std::vector<int>& keys) {
    HarnessFeed& f = feeds_[i];
    auto block = std::make_shared<std::string>();
    std::vector<Item> made;
    for (int k : keys) {
      made.push_back(make_item(i, k, false, items_.size() + made.size()));
      block->append(made.back().bytes);
    }
    std::vector<BlockRecord> records;
    std::vector<std::string> texts;  // string keys travel beside their records
    size_t at = 0;
    for (Item& item : made) {
      ParsedRecord parsed = parse(item);
      note_push(f, item, parsed);
      trace("t=", std::to_string(now_), " push (block) feed ", std::to_string(i), " ", item.bytes);
      texts.push_back(std::exchange(parsed.key.text, {}));
      records.emplace_back(std::string_view(*block).substr(at, item.bytes.size()), parsed);
      at += item.bytes.size();
      items_.push_back(item);
    }
    RecordRun run{records, BlockOwner(block)};
    if (string_keys_) run.texts = texts;
    const bool read_on = merger_.push(f.slot, run, now_);
    take_decisions();
    expect(read_on == !f.paused, "push() disagrees with the pause decisions");
    check_flow();
  }

  // A reload's new tuning for an open feed, applied in place. A feed keeps
  // having an idle timeout or not (that is its transport's nature); the
  // clock of a waiting feed keeps its start.
  void update(size_t i, uint64_t idle_timeout, size_t high, size_t low,
              std::optional<LatePolicy> late, std::optional<double> max_lag) {
    HarnessFeed& f = feeds_[i];
    // A feed that may have gone idle (its clock ran out, or max_lag let it
    // go, which was checked then) stays idle under the new settings until
    // its next sign of life: no longer certainly waiting.
    if (merger_.lagging(f.slot) ||
        (f.idle_timeout && (!f.life_early || now_ >= *f.life_early + *f.idle_timeout))) {
      f.life_early.reset();
    }
    if (f.idle_timeout) f.idle_timeout = idle_timeout;
    f.high = high;
    f.low = low;
    f.max_lag = max_lag;
    trace("t=", std::to_string(now_), " update feed ", std::to_string(i), " timeout ",
          f.idle_timeout ? std::to_string(*f.idle_timeout) : "none", " marks ",
          std::to_string(high), "/", std::to_string(low), " max_lag ",
          max_lag ? std::to_string(*max_lag) : "none");
    merger_.update(f.slot, settings_for(i, f.idle_timeout, high, low, late, max_lag), now_);
    take_decisions();
    check_flow();
  }

  void end(size_t i) {
    trace("t=", std::to_string(now_), " end feed ", std::to_string(i));
    feeds_[i].ended = true;
    merger_.end(feeds_[i].slot, now_);
    take_decisions();
    check_flow();
  }

  void remove_retired() {
    for (size_t i = 0; i < feeds_.size(); ++i) {
      HarnessFeed& f = feeds_[i];
      if (f.removed || !f.ended) continue;
      expect(merger_.retired(f.slot) == (f.queue.empty()), "retired() disagrees with the queue");
      if (!merger_.retired(f.slot)) continue;
      trace("t=", std::to_string(now_), " remove feed ", std::to_string(i));
      merger_.remove(f.slot);
      owner_.erase(f.slot);
      f.removed = true;
      return;
    }
  }

  void advance(uint64_t ms) { now_ += ms; }

  void drain(size_t max_bytes) {
    std::vector<OutputLog::Slice> slices;
    size_t n = output_.peek(subscriber_, slices, max_bytes, nullptr);
    if (n > max_bytes) n = max_bytes;
    output_.consume(subscriber_, n);
    consumed_ += n;
    if (n) trace("t=", std::to_string(now_), " drain ", std::to_string(n), " bytes");
  }

  void run() {
    frontier_at_start_ = frontier_;
    for (HarnessFeed& f : feeds_) f.lagging_at_start = !f.removed && merger_.lagging(f.slot);
    ++runs_;
    trace("t=", std::to_string(now_), " run");
    merger_.run(now_);
    take_decisions();
    if (tracing) {
      std::string states;
      for (size_t i = 0; i < feeds_.size(); ++i) {
        if (feeds_[i].removed) continue;
        states += " " + std::to_string(i) + ":" +
                  std::string(to_string(merger_.state(feeds_[i].slot))) +
                  (merger_.lagging(feeds_[i].slot) ? "(lagging)" : "");
      }
      trace("    states after run:", states);
    }
    observe();
    check_flow();
  }

  // Ends every feed and runs the merge out.
  void finish() {
    for (size_t i = 0; i < feeds_.size(); ++i) {
      if (!feeds_[i].removed && !feeds_[i].ended) end(i);
    }
    for (size_t round = 0; !merger_.finished(); ++round) {
      expect(round <= items_.size() + 2, "the merge never finishes once every feed ended");
      drain(SIZE_MAX);
      run();
    }
    drain(SIZE_MAX);
    expect(output_.ended(), "finished without ending the output");
    for (const Item& item : items_) {
      if (item.fate == Fate::queued) fail("record " + std::to_string(item.id) + " never came out");
    }
    expect(reports_.empty(), "late reports left over");
    uint64_t out = 0;
    for (const HarnessFeed& f : feeds_) {
      if (f.removed) continue;
      const FeedStats& stats = merger_.stats(f.slot);
      expect(stats.records_in == f.records_in, "stats: records_in");
      expect(stats.heartbeats == f.heartbeats, "stats: heartbeats");
      expect(stats.records_out == f.records_out, "stats: records_out");
      expect(stats.late == f.late, "stats: late");
    }
    for (const Item& item : items_)
      out += item.fate == Fate::emitted || item.fate == Fate::late_emitted;
    expect(merger_.records_out() == out, "records_out counts what was written");
    check_reference();
  }

 private:
  HarnessFeed& by_slot(FeedId slot) {
    auto it = owner_.find(slot);
    expect(it != owner_.end(), "a callback for a feed not in use");
    return feeds_[it->second];
  }

  static std::vector<uint64_t> ids_in(std::string_view text) {
    std::vector<uint64_t> ids;
    for (size_t at = text.find("\"id\":"); at != std::string_view::npos;
         at = text.find("\"id\":", at + 1)) {
      uint64_t id = 0;
      for (size_t i = at + 5; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
        id = id * 10 + static_cast<uint64_t>(text[i] - '0');
      }
      ids.push_back(id);
    }
    return ids;
  }

  bool key_before_frontier(const Key& key) const { return frontier_ && key < *frontier_; }

  // A record at or after the frontier; with max_lag, also one no more
  // than max_lag behind it (config/README.md: an idle feed a little behind
  // rejoins and the merge waits while it catches up).
  bool sign_of_life(const HarnessFeed& f, const Key& key) const {
    if (!key_before_frontier(key)) return true;
    return f.max_lag && key_distance(options_.key_type, key, *frontier_) <= *f.max_lag;
  }

  // A late record left the queue: within max_lag it was a sign of life.
  // An idle feed comes back only with a record that was one on arrival;
  // a reload that widened max_lag since does not wake it.
  void late_departure(Item& item, Fate fate) {
    HarnessFeed& f = feeds_[item.feed];
    const bool alive = sign_of_life(f, item.key);
    ++f.late;
    depart(item, fate);
    if (alive) f.life_late = now_;
    if (alive && item.alive_at_push) f.life_early = now_;
  }

  // The item leaves its feed's queue: it must be at the front, after any
  // heartbeats that left unseen before it.
  void depart(Item& item, Fate fate) {
    HarnessFeed& f = feeds_[item.feed];
    expect(item.fate == Fate::queued, "record " + std::to_string(item.id) + " came out twice");
    while (!f.queue.empty() && f.queue.front() != item.id) {
      Item& before = items_[f.queue.front()];
      expect(before.heartbeat, "record " + std::to_string(item.id) + " overtook record " +
                                   std::to_string(before.id) + " of its own feed");
      heartbeat_gone(before);
    }
    expect(!f.queue.empty(), "a record came out of a feed that did not hold it");
    f.queue.pop_front();
    f.queue_bytes -= item.bytes.size();
    item.fate = fate;
  }

  void heartbeat_gone(Item& heartbeat) {
    HarnessFeed& f = feeds_[heartbeat.feed];
    expect(f.queue.front() == heartbeat.id, "heartbeat bookkeeping");
    f.queue.pop_front();
    f.queue_bytes -= heartbeat.bytes.size();
    heartbeat.fate = Fate::heartbeat_gone;
    note_run_key(heartbeat.key);
    // More than max_lag (if any) behind the frontier before the run:
    // certainly late and no sign of life (the frontier only grows). At or
    // after the frontier at the end of the run: certainly not late.
    const bool no_life = frontier_at_start_ && heartbeat.key < *frontier_at_start_ &&
                         !(f.max_lag && key_distance(options_.key_type, heartbeat.key,
                                                     *frontier_at_start_) <= *f.max_lag);
    if (!no_life) f.life_late = now_;
    if (!key_before_frontier(heartbeat.key)) f.life_early = now_;
  }

  // Certainly waiting now: empty as far as seen, open, and its idle clock
  // (from the earliest possible sign of life) not run out.
  bool certainly_waiting(const HarnessFeed& f) const {
    if (f.removed || f.ended || !f.queue.empty()) return false;
    if (!f.idle_timeout) return true;
    return f.life_early && now_ < *f.life_early + *f.idle_timeout;
  }

  // May still be waiting: as above with the latest possible sign of life.
  bool maybe_waiting(const HarnessFeed& f) const {
    if (f.removed || f.ended || !f.queue.empty()) return false;
    if (!f.idle_timeout) return true;
    return f.life_late && now_ < *f.life_late + *f.idle_timeout;
  }

  // Reads what the last run wrote, in order, with the late reports.
  void observe() {
    std::vector<OutputLog::Slice> slices;
    output_.peek(subscriber_, slices, SIZE_MAX, nullptr);
    std::string pending;
    for (const OutputLog::Slice& s : slices) pending.append(s.bytes);
    std::string_view fresh = std::string_view(pending).substr(processed_ - consumed_);
    size_t report = 0;
    auto reports_before = [&](uint64_t line) {
      // Dropped records reported before this line was written.
      while (report < reports_.size() && reports_[report].line <= line &&
             !(reports_[report].line == line && reports_[report].emitted)) {
        const LateReport& r = reports_[report++];
        trace("    dropped late: ", items_[r.id].bytes);
        expect(!r.emitted && r.line == line, "a late emitted record without its line");
        Item& item = items_[r.id];
        expect(
            key_before_frontier(item.key),
            "record " + std::to_string(r.id) + " dropped as late but not older than the frontier");
        late_departure(item, Fate::dropped);
      }
    };
    while (!fresh.empty()) {
      const size_t nl = fresh.find('\n');
      expect(nl != std::string_view::npos, "a record without its newline");
      const std::string_view line = fresh.substr(0, nl);
      fresh.remove_prefix(nl + 1);
      processed_ += nl + 1;
      reports_before(lines_);
      const bool late =
          report < reports_.size() && reports_[report].line == lines_ && reports_[report].emitted;
      trace("    out: ", std::string(line), late ? "  (late)" : "");
      on_line(line, late ? &reports_[report] : nullptr);
      if (late) ++report;
      ++lines_;
    }
    reports_before(lines_);
    expect(report == reports_.size(), "a late report out of place");
    reports_.clear();
    reconcile();
    check_bypassed();
    check_liveness();
  }

  // A waiting feed passed over by an emission must have been let go by
  // max_lag. If that happened in this run, the smallest ready head then
  // was more than max_lag past the feed's last key; that head left in this
  // run, emitted in order or as a heartbeat (whose feed may break its
  // promise afterwards), so the largest such key must be that far ahead
  // at least. (One let go earlier stays idle until a sign of life; that
  // was checked when it happened.)
  void check_bypassed() {
    for (const Bypass& b : bypassed_) {
      const HarnessFeed& f = feeds_[b.feed];
      const std::string what = "record " + std::to_string(b.record) + " emitted while feed " +
                               std::to_string(b.feed) + " was waiting";
      expect(merger_.lagging(f.slot), what + " (and not lagging)");
      if (f.lagging_at_start) continue;
      expect(f.last_key && run_max_key_ &&
                 key_distance(options_.key_type, *f.last_key, *run_max_key_) > *f.max_lag,
             what + " (lagging, but not max_lag behind: last key " +
                 (f.last_key ? std::to_string(f.last_key->ordinal) : "none") + ", max_lag " +
                 std::to_string(*f.max_lag) + ")");
    }
    bypassed_.clear();
    run_max_key_.reset();
  }

  void note_run_key(const Key& key) {
    if (!run_max_key_ || *run_max_key_ < key) run_max_key_ = key;
  }

  void on_line(std::string_view line, const LateReport* late) {
    const std::vector<uint64_t> ids = ids_in(line);
    expect(!ids.empty(), "a line without records");
    for (uint64_t id : ids) {
      expect(id < items_.size(), "an unknown record");
      expect(!items_[id].heartbeat, "a heartbeat was forwarded");
    }
    const bool combine = options_.mode == MergeMode::combine;
    if (combine) check_combined(line, ids);
    if (late) {
      expect(ids.size() == 1 && ids[0] == late->id, "the late line is another record");
      Item& item = items_[ids[0]];
      expect(key_before_frontier(item.key), "record " + std::to_string(item.id) +
                                                " emitted as late but not older than the frontier");
      late_departure(item, Fate::late_emitted);
      return;
    }
    expect(combine || ids.size() == 1, "an interleave line with several records");
    const Key key = items_[ids[0]].key;
    expect(!key_before_frontier(key),
           "record " + std::to_string(ids[0]) + " emitted in order but older than the frontier");
    // Nobody may still be waiting: the group's own feeds are not.
    for (size_t i = 0; i < feeds_.size(); ++i) {
      bool member = false;
      for (uint64_t id : ids) member = member || items_[id].feed == i;
      if (!member && certainly_waiting(feeds_[i])) {
        // Only max_lag may let a waiting feed go; checked after the run.
        if (!feeds_[i].max_lag) {
          fail("record " + std::to_string(ids[0]) + " emitted while feed " + std::to_string(i) +
               " was waiting");
        }
        bypassed_.push_back({i, ids[0]});
      }
    }
    frontier_ = key;
    note_run_key(key);
    in_order_.push_back(ids);
    for (uint64_t id : ids) {
      Item& item = items_[id];
      expect(item.key == key, "a combined step mixes keys");
      depart(item, Fate::emitted);
      HarnessFeed& f = feeds_[item.feed];
      ++f.records_out;
      f.life_early = f.life_late = now_;
    }
  }

  // {"data":[r1,r2],"indexes":[i1,i2],"time":K}
  void check_combined(std::string_view line, const std::vector<uint64_t>& ids) {
    const std::string head = "{\"data\":[";
    expect(line.starts_with(head), "a combined step's shape");
    std::string data;
    std::string indexes;
    for (size_t i = 0; i < ids.size(); ++i) {
      const Item& item = items_[ids[i]];
      if (i) {
        data += ',';
        indexes += ',';
        expect(item.feed != items_[ids[i - 1]].feed, "a combined step takes two of one feed");
        expect(feeds_[item.feed].rank > feeds_[items_[ids[i - 1]].feed].rank,
               "combined indexes not ascending");
      }
      data += item.bytes;
      indexes += std::to_string(feeds_[item.feed].rank);
    }
    const std::string want =
        head + data + "],\"indexes\":[" + indexes + "],\"time\":" + items_[ids[0]].key_text + "}";
    if (line != want) fail("combined step\n got:  " + std::string(line) + "\n want: " + want);
  }

  // Heartbeats leave unseen: whatever the merger no longer holds beyond
  // the records seen leaving must be heartbeats at the front of a queue.
  void reconcile() {
    for (size_t i = 0; i < feeds_.size(); ++i) {
      HarnessFeed& f = feeds_[i];
      if (f.removed) continue;
      const size_t actual = merger_.queue_bytes(f.slot);
      while (f.queue_bytes > actual && !f.queue.empty()) {
        Item& front = items_[f.queue.front()];
        if (!front.heartbeat) {
          fail("record " + std::to_string(front.id) + " of feed " + std::to_string(i) +
               " left the queue but never came out");
        }
        heartbeat_gone(front);
      }
      expect(f.queue_bytes == actual, "queue bytes: harness " + std::to_string(f.queue_bytes) +
                                          ", merger " + std::to_string(actual));
    }
  }

  void check_liveness() {
    if (output_.full()) return;
    bool queued = false, waiting = false;
    for (const HarnessFeed& f : feeds_) {
      if (f.removed) continue;
      queued = queued || !f.queue.empty();
      waiting = waiting || maybe_waiting(f);
    }
    if (queued && !waiting) {
      std::string state;
      for (size_t i = 0; i < feeds_.size(); ++i) {
        const HarnessFeed& f = feeds_[i];
        if (f.removed) continue;
        state += "\n  feed " + std::to_string(i) + ": " +
                 std::string(to_string(merger_.state(f.slot))) + ", " +
                 std::to_string(f.queue.size()) + " queued" + (f.ended ? ", ended" : "") +
                 ", life " + (f.life_late ? std::to_string(*f.life_late) : "none") + ", timeout " +
                 (f.idle_timeout ? std::to_string(*f.idle_timeout) : "none");
      }
      fail("at " + std::to_string(now_) +
           " the merge holds records although no feed can be waiting" + state);
    }
  }

  void check_flow() {
    for (size_t i = 0; i < feeds_.size(); ++i) {
      const HarnessFeed& f = feeds_[i];
      if (f.removed) continue;
      // The marks compare memory: the harness's blocks are of unknown
      // size, so that is the records' bytes and a ring slot for each.
      const size_t bytes = merger_.queue_bytes(f.slot);
      const size_t memory = merger_.queue_memory(f.slot);
      expect(memory >= bytes && (memory - bytes) % FeedQueue::slot_bytes == 0,
             "queue memory is not its bytes and whole slots");
      expect(merger_.paused(f.slot) == f.paused, "paused() disagrees with the listener");
      if (f.paused) expect(memory > f.low, "paused at or under the low-water mark");
      if (!f.paused) expect(memory < f.high, "not paused at the high-water mark");
    }
  }

  // Finite feeds, all there from the start: the reference stable merge.
  void check_reference() {
    bool finite = true, monotone = true, heartbeats = false;
    for (const HarnessFeed& f : feeds_) {
      finite = finite && !f.idle_timeout && f.initial;
      monotone = monotone && f.monotone;
      heartbeats = heartbeats || f.heartbeats > 0;
    }
    if (!finite) return;
    auto rank = [&](const Item& item) { return feeds_[item.feed].rank; };
    if (monotone) {
      for (const Item& item : items_) {
        expect(item.fate != Fate::dropped && item.fate != Fate::late_emitted,
               "a late record although every feed was finite and in order");
      }
      std::vector<std::vector<uint64_t>> want;
      if (options_.mode == MergeMode::interleave) {
        std::vector<const Item*> records;
        for (const Item& item : items_) {
          if (!item.heartbeat) records.push_back(&item);
        }
        std::stable_sort(records.begin(), records.end(), [&](const Item* a, const Item* b) {
          if (a->key != b->key) return a->key < b->key;
          if (rank(*a) != rank(*b)) return rank(*a) < rank(*b);
          return a->seq < b->seq;
        });
        for (const Item* item : records) want.push_back({item->id});
      } else {
        std::vector<std::deque<const Item*>> queues(feeds_.size());
        for (const Item& item : items_) {
          if (!item.heartbeat) queues[item.feed].push_back(&item);
        }
        for (;;) {
          std::optional<Key> smallest;
          for (const auto& q : queues) {
            if (!q.empty() && (!smallest || q.front()->key < *smallest)) smallest = q.front()->key;
          }
          if (!smallest) break;
          std::vector<size_t> group;
          for (size_t i = 0; i < queues.size(); ++i) {
            if (!queues[i].empty() && queues[i].front()->key == *smallest) group.push_back(i);
          }
          std::sort(group.begin(), group.end(),
                    [&](size_t a, size_t b) { return feeds_[a].rank < feeds_[b].rank; });
          std::vector<uint64_t> ids;
          for (size_t i : group) {
            ids.push_back(queues[i].front()->id);
            queues[i].pop_front();
          }
          want.push_back(ids);
        }
      }
      expect(in_order_ == want, "the output is not the stable merge of the feeds");
    } else if (!heartbeats && options_.mode == MergeMode::interleave) {
      for (size_t i = 1; i < in_order_.size(); ++i) {
        const Item& a = items_[in_order_[i - 1][0]];
        const Item& b = items_[in_order_[i][0]];
        const bool ordered =
            a.key < b.key ||
            (a.key == b.key && (rank(a) < rank(b) || (rank(a) == rank(b) && a.seq < b.seq)));
        expect(ordered, "in-order records out of (key, rank, arrival) order");
      }
    }
  }

  MergerOptions options_;
  OutputLog output_;
  Merger merger_;
  bool string_keys_;
  std::unique_ptr<RecordParser> parser_;
  OutputLog::ConsumerId subscriber_ = 0;
  uint64_t now_ = 0;
  uint64_t runs_ = 0;
  std::vector<HarnessFeed> feeds_;
  std::map<FeedId, size_t> owner_;  // slot -> harness feed
  std::vector<Item> items_;
  std::vector<MergerDecision> decisions_;
  std::vector<LateReport> reports_;  // since the last observe()
  std::vector<Bypass> bypassed_;     // waiting feeds passed over in this run
  std::optional<Key> run_max_key_;   // largest head seen leaving in this run
  std::optional<Key> frontier_;      // the last key emitted in order
  std::optional<Key> frontier_at_start_;
  uint64_t consumed_ = 0;   // output bytes drained
  uint64_t processed_ = 0;  // output bytes read by observe()
  uint64_t lines_ = 0;
  std::vector<std::vector<uint64_t>> in_order_;  // ids of each in-order line
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  MergerOptions options;
  options.mode = input.ConsumeBool() ? MergeMode::combine : MergeMode::interleave;
  options.late = input.ConsumeBool() ? LatePolicy::drop : LatePolicy::emit;
  const bool string_keys = input.ConsumeBool();
  options.key_type = string_keys ? KeyType::string : KeyType::integer;
  const size_t output_high = input.ConsumeIntegralInRange<size_t>(16, 2048);
  const size_t chunk_bytes = input.ConsumeIntegralInRange<size_t>(8, 512);
  Harness h(options, output_high, chunk_bytes, string_keys);

  std::vector<int> key(8, 100);  // per harness feed: the last key index
  struct Tuning {
    std::optional<uint64_t> timeout;
    size_t high, low;
    std::optional<LatePolicy> late;
    std::optional<double> max_lag;
  };
  auto tuning = [&] {
    Tuning t;
    const uint8_t kind = input.ConsumeIntegral<uint8_t>();
    if (kind & 1) t.timeout = input.ConsumeIntegralInRange<uint64_t>(0, 100);
    t.high = input.ConsumeIntegralInRange<size_t>(20, 400);
    t.low = input.ConsumeIntegralInRange<size_t>(0, t.high - 1);
    if (kind & 2) t.late = kind & 4 ? LatePolicy::drop : LatePolicy::emit;
    // max_lag is a distance in key units: positive, and not for string keys.
    if ((kind & 8) && !string_keys) t.max_lag = input.ConsumeIntegralInRange<int>(1, 200);
    return t;
  };
  auto add = [&](bool joins_idle) {
    const Tuning t = tuning();
    h.add_feed(t.timeout, t.high, t.low, t.late, t.max_lag, joins_idle);
  };
  const int initial = input.ConsumeIntegralInRange<int>(1, 4);
  for (int i = 0; i < initial; ++i) add(false);
  size_t feeds = static_cast<size_t>(initial);

  for (int op = 0; op < 400 && input.remaining_bytes() > 0; ++op) {
    const int what = input.ConsumeIntegralInRange<int>(0, 12);
    auto pick = [&](bool for_push) -> std::optional<size_t> {
      std::vector<size_t> open = h.open_feeds(for_push);
      if (open.empty()) return std::nullopt;
      return open[input.ConsumeIntegralInRange<size_t>(0, open.size() - 1)];
    };
    auto next_key = [&](size_t i) {
      const int step = input.ConsumeIntegralInRange<int>(-4, 12);
      key[i] = std::clamp(key[i] + (step > 9 ? (step - 9) * 40 : step), 0, 675);
      return key[i];
    };
    switch (what) {
      case 0:
      case 1:
      case 2:
        if (auto i = pick(true)) h.push(*i, next_key(*i), false);
        break;
      case 3:
        if (auto i = pick(true)) h.push(*i, next_key(*i), true);
        break;
      case 4:
        if (auto i = pick(true)) {
          std::vector<int> keys(input.ConsumeIntegralInRange<size_t>(1, 4));
          for (int& k : keys) k = next_key(*i);
          h.push_block(*i, keys);
        }
        break;
      case 5:
        if (auto i = pick(false)) h.end(*i);
        break;
      case 6:
        h.advance(input.ConsumeIntegralInRange<uint64_t>(0, 120));
        break;
      case 7:
      case 8:
        h.run();
        break;
      case 9:
        h.drain(input.ConsumeBool() ? SIZE_MAX : input.ConsumeIntegralInRange<size_t>(0, 256));
        break;
      case 10:
        if (feeds < key.size()) {
          key[feeds] = key[0];
          add(input.ConsumeBool());
          ++feeds;
        }
        break;
      case 11:
        h.remove_retired();
        break;
      case 12:
        if (auto i = pick(false)) {
          const Tuning t = tuning();
          h.update(*i, t.timeout.value_or(50), t.high, t.low, t.late, t.max_lag);
        }
        break;
    }
  }
  h.finish();
  return 0;
}
