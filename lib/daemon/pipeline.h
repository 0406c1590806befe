// Pipeline: feeds -> merger -> output -> sinks, wired on one libuv loop.
//
// Built from a Config; used by the daemon and by the one-shot command
// (which builds a Config of file feeds and a stdout output, with `live`
// false so no feed ever goes idle). The Pipeline owns every part and is
// the host the feeds report to and the listener the merger reports to.
//
// Loop thread only.
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "feeds/feed.h"
#include "log/log.h"
#include "merge/merger.h"
#include "metrics/metrics_snapshot.h"
#include "output/output.h"
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

class Pipeline final : public FeedHost, public MergerListener {
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
  const Merger& merger_state() const { return merger_; }
  const Output& output() const { return output_; }
  // By FeedId; null where a slot is free (a retired feed).
  const std::vector<std::unique_ptr<Feed>>& feeds() const { return feeds_; }
  // Totals of retired feeds, by name, for names the configuration has.
  const std::map<std::string, RetiredFeed, std::less<>>& retired_feeds() const { return retired_; }
  const std::vector<std::unique_ptr<Sink>>& sinks() const { return sinks_; }
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

  // FeedHost
  uv_loop_t* loop() override { return loop_; }
  uint64_t now() override { return uv_now(loop_); }
  Merger& merger() override { return merger_; }
  const RecordParser& parser() override { return parser_; }
  void pump() override;
  void malformed(FeedId feed, LineError error, std::string_view line) override;
  void feed_finished(FeedId feed) override;

  // MergerListener
  void pause_feed(FeedId feed) override;
  void resume_feed(FeedId feed) override;
  void late_record(FeedId feed, std::string_view record, bool emitted) override;
  void feed_idle(FeedId feed, bool idle) override;

 private:
  // `feed` with the globals filled in (effective()).
  std::unique_ptr<Feed> make_feed(FeedId id, const FeedConfig& feed);
  std::unique_ptr<Sink> make_sink(const OutputConfig& output);
  static FeedConfig effective(const FeedConfig& feed, const Config& config);
  FeedSettings settings_for(const FeedConfig& feed) const;
  // Adds and starts a feed (`feed`: its effective configuration). Its id,
  // or nullopt if it could not start (it is removed again).
  std::optional<FeedId> add_feed(const FeedConfig& feed, bool joins_idle);
  bool add_sink(const OutputConfig& output);
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
  void check_finished();

  uv_loop_t* loop_;
  Config config_;
  bool live_;
  RecordParser parser_;
  Output output_;
  Merger merger_;
  std::vector<std::unique_ptr<Feed>> feeds_;  // index = FeedId
  std::vector<std::unique_ptr<Sink>> sinks_;
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
  std::map<std::string, RetiredFeed, std::less<>> retired_;
  std::optional<FeedId> hold_logged_;  // the holder already reported
  uint64_t discarded_output_bytes_ = 0;
  bool pumping_ = false;
  bool pump_again_ = false;
  bool finished_ = false;
  bool closed_ = false;
  std::function<void()> on_finished_;
  std::vector<log::RateLimiter> malformed_limiters_;
};

}  // namespace chronomerge
