// Pipeline: feeds -> merger -> output -> sinks, wired on one libuv loop.
//
// Built from a Config; used by the daemon and by the one-shot command
// (which builds a Config of file feeds and a stdout output, with `live`
// false so no feed ever goes idle). The Pipeline owns every part and is
// the host the feeds hand their records to.
//
// One pump per loop turn, as Redis runs its deferred work before it sleeps:
// event handlers (a feed's read, a sink's write completing, a timer) only
// queue records or note that something changed (schedule_pump()); a
// uv_check handle then runs the merge once, carries out what the merger
// decided (resume these feeds, report those late records), and flushes the
// output. While the merge has more to do than one run's budget, a uv_idle
// handle keeps the loop from blocking in poll, so reads are served between
// runs and records never wait for an unrelated event.
//
// Loop thread only.
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "feeds/feed.h"
#include "feeds/fleet.h"
#include "kafka/kafka_consumer.h"
#include "log/log.h"
#include "merge/merger.h"
#include "metrics/metrics_snapshot.h"
#include "output/output_log.h"
#include "record/record_parser.h"
#include "sinks/sink.h"
#include "uv/uv_handle.h"

namespace chronomerge {

class DeadLetter;

// What the feeds of one name that have been retired (removed and drained,
// their objects freed) had counted, so that counters stay monotonic.
struct RetiredFeed {
  FeedStats stats;
  FeedCounters counters;
};

class Pipeline final : public FeedHost, public FleetHost {
 public:
  // live: feeds may go idle (daemon); false for one-shot runs.
  Pipeline(uv_loop_t* loop, Config config, bool live);
  ~Pipeline() override;
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Opens outputs, then feeds. False if an output cannot start (the
  // pipeline is then closed).
  bool start();
  // Closes every handle now; the loop can then run out.
  void close();
  // Graceful stop: every feed stops reading and ends; what is queued is
  // still merged and written, then the pipeline finishes.
  void drain();
  // SIGHUP: applies a validated new configuration. Feeds and outputs are
  // matched by name; unchanged ones keep their connections and clients.
  // False (with `error` set) when the change needs a restart (nothing is
  // changed then) or a new part failed to start (the rest is applied).
  bool reload(const Config& next, std::string& error);
  // SIGUSR1: file outputs and the dead-letter file reopen their paths.
  void reopen_files();

  // Runs once everything has been merged and every sink has finished.
  void on_finished(std::function<void()> callback) { on_finished_ = std::move(callback); }
  bool finished() const { return finished_; }

  const Config& config() const { return config_; }
  uint64_t now_ms() const { return uv_now(loop_); }
  const Merger& merger() const override { return merger_; }
  KeyType key_type() const override { return config_.key_type; }
  const OutputLog& output() const { return output_; }
  // By FeedId; null where a slot is free (a retired feed).
  const std::vector<std::unique_ptr<Feed>>& feeds() const { return feeds_; }
  // Totals of retired feeds, by name, for names the configuration has.
  const std::map<std::string, RetiredFeed, std::less<>>& retired_feeds() const { return retired_; }
  const std::vector<std::unique_ptr<Sink>>& sinks() const { return sinks_; }
  const std::vector<std::unique_ptr<Fleet>>& fleets() const { return fleets_; }
  // GET /fleet: every fleet and its members, as JSON.
  std::string fleet_json() const;
  // GET /tail: the newest `max_records` records of the merged stream (at
  // most 64 KiB), read by a passing disconnect cursor, as JSON:
  // {"records": [{"offset": N, "record": "..."}, ...]}.
  std::string tail_json(size_t max_records);
  FleetSnapshot fleet_snapshot(const Fleet& fleet) const;
  const DeadLetter* deadletter() const { return deadletter_.get(); }  // null if none
  bool sink_failed() const;
  // Every feed there is failed to open its input (a missing file, a
  // program that cannot run) and none ever read a byte.
  bool no_feed_opened() const;
  // Bytes outputs (and the dead-letter file) replaced or removed by a
  // reload had not written.
  uint64_t discarded_output_bytes() const { return discarded_output_bytes_; }
  // Everything the metrics report, summed by feed and output name.
  MetricsSnapshot metrics_snapshot() const;

  // Something changed (records queued, a sink asked for more, a deadline
  // passed): the pump runs once before the loop next waits for events.
  void schedule_pump();

  // FeedHost
  uv_loop_t* loop() override { return loop_; }
  uint64_t now() override { return uv_now(loop_); }
  const RecordParser& parser() override { return parser_; }
  bool queue_record(FeedId feed, std::string_view line, ParsedRecord&& parsed) override;
  bool queue_records(FeedId feed, const RecordRun& run) override;
  bool in_flight(FeedId feed, size_t bytes) override;
  void malformed(FeedId feed, LineError error, std::string_view line,
                 uint64_t line_number) override;
  void feed_ended(FeedId feed) override;
  void may_idle(FeedId feed, bool may) override;

  // FleetHost
  MemberFeed& add_member(Fleet& fleet, const std::string& member) override;
  void member_present(MemberFeed& member, bool present) override;
  void retire_member(MemberFeed& member) override;

 private:
  // The loop turn's work: merge, carry out the decisions, flush.
  void pump();
  void carry_out(const MergerDecision& decision);
  void late_record(FeedId feed, std::string_view record, bool emitted);
  void feed_idle(FeedId feed, bool idle);
  // `feed` with the globals filled in (effective()).
  std::unique_ptr<Feed> make_feed(FeedId id, const FeedConfig& feed);
  std::unique_ptr<Sink> make_sink(const OutputConfig& output);
  static FeedConfig effective(const FeedConfig& feed, const Config& config);
  // `may_idle`: see Feed::may_idle().
  FeedSettings settings_for(const FeedConfig& feed, bool may_idle = true) const;
  // The output log wrote a record that came from a source that commits
  // what was written (a Kafka partition), or its record was dropped late.
  void settle(OutputLog::SourceId source, uint64_t origin);
  // Adds and starts a feed (`feed`: its effective configuration). Its id,
  // or nullopt if it could not start (it is removed again).
  std::optional<FeedId> add_feed(const FeedConfig& feed, bool joins_idle);
  bool add_sink(const OutputConfig& output);
  // Starts a fleet (`feed`: its effective configuration) ranked `rank`.
  bool add_fleet(const FeedConfig& feed, uint32_t rank);
  // Drains the fleet's members and lets it go.
  void remove_fleet(Fleet& fleet);
  // Where `name` stands in `config`'s feeds, for ties; nullopt if absent.
  static std::optional<uint32_t> rank_in(const Config& config, std::string_view name);
  // A member's merger settings: idle at once while no producer is there.
  FeedSettings member_settings(const MemberFeed& member, bool present) const;
  Fleet* fleet_named(std::string_view name) const;
  // The fleet of a member feed; null for other feeds (or a fleet gone).
  Fleet* fleet_of(const Feed& feed) const;
  // Where a feed's per-record warnings are rate-limited.
  log::RateLimiter& limiter(FeedId feed);
  // `keep_counts`: the feed is restarting under its name, whose counters
  // go on; false when the name leaves the configuration.
  void remove_feed(Feed& feed, bool keep_counts = true);
  // Frees the feeds that were removed and are done (from a timer, never
  // inside a feed's own callback); stops those whose drain ran too long.
  void retire_feeds();
  void arm_retire_timer(uint64_t delay_ms);
  void log_long_hold();
  void discard_unwritten(std::string_view what, size_t bytes);
  void arm_idle_timer();
  // Starts (or stops) the heartbeat timer for the outputs that want
  // heartbeats: at the shortest of their intervals.
  void arm_heartbeats();
  // Appends a heartbeat if the merge moved past the newest record.
  void heartbeat();
  void check_finished();

  uv_loop_t* loop_;
  Config config_;
  bool live_;
  RecordParser parser_;
  OutputLog output_;
  Merger merger_;
  KafkaConsumers kafka_clients_;
  // Kafka partition feeds by the source id their records carry, for
  // settle().
  std::unordered_map<OutputLog::SourceId, FeedId> settling_feeds_;
  std::vector<std::unique_ptr<Feed>> feeds_;  // index = FeedId
  std::vector<std::unique_ptr<Sink>> sinks_;
  // After feeds_: a fleet goes first, while its members still exist.
  std::vector<std::unique_ptr<Fleet>> fleets_;
  std::vector<std::unique_ptr<Fleet>> removed_fleets_;  // draining, until close()
  std::unique_ptr<DeadLetter> deadletter_;
  UvHandle<uv_timer_t> idle_timer_;
  uint64_t idle_timer_due_ = 0;
  // Removed feeds not yet freed.
  struct Retiring {
    FeedId id;
    uint64_t deadline;  // loop time its drain must end
    bool keep_counts;
  };
  std::vector<Retiring> retiring_;
  UvHandle<uv_timer_t> retire_timer_;
  // retention_ms: the log drops what expired even while nothing is merged.
  UvHandle<uv_timer_t> retention_timer_;
  UvHandle<uv_timer_t> heartbeat_timer_;
  uint64_t heartbeat_interval_ms_ = 0;  // 0: no output wants heartbeats
  std::map<std::string, RetiredFeed, std::less<>> retired_;
  std::optional<FeedId> hold_logged_;  // the holder already reported
  uint64_t discarded_output_bytes_ = 0;
  UvHandle<uv_check_t> pump_check_;  // runs pump() once per loop turn
  UvHandle<uv_idle_t> pump_idle_;    // active while a pump is due: no blocking poll
  bool pump_due_ = false;
  std::vector<MergerDecision> decisions_;  // reused by pump()
  bool finished_ = false;
  bool closed_ = false;
  std::function<void()> on_finished_;
  std::vector<log::RateLimiter> malformed_limiters_;
};

}  // namespace chronomerge
