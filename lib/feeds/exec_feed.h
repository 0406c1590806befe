// ExecFeed: runs `command` (argv, no shell) and reads its standard output.
// Its standard error is logged line by line with the feed's name. The feed
// ends when the process has exited and its output is read to the end,
// unless `restart: "on-exit"`: then the program is started again, after
// 100 ms doubling to 30 s (back to 100 ms after a run of 10 s or more),
// each restart logged (rate-limited) and counted in connections_total.
#pragma once

#include <memory>

#include "feeds/stream_feed.h"
#include "log/log.h"

namespace chronomerge {

class ExecFeed final : public StreamFeed {
 public:
  // A child still running when the feed closes (a reload) gets SIGTERM,
  // then SIGKILL after this long; its handle stays open until it exits,
  // as libuv reaps only children whose handles are open.
  static constexpr uint64_t kill_grace_ms = 2000;

  ExecFeed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes);
  ~ExecFeed() override;
  bool start() override;
  static constexpr uint64_t first_backoff_ms = 100;
  static constexpr uint64_t max_backoff_ms = 30000;
  static constexpr uint64_t steady_run_ms = 10000;

  // Until the child is reaped, its exit callback needs this object.
  bool busy() const override {
    return StreamFeed::busy() || (process_ && process_->open() && !exited_);
  }

 protected:
  void connection_ended(int status) override;
  void close_transport() override;

 private:
  struct StderrLines;
  static void on_exit(uv_process_t* process, int64_t status, int signal);
  // Starts the program; false if it could not be started.
  bool spawn();
  void maybe_end();
  void schedule_restart();

  // A new pair of handles per run: a closed UvHandle is not reused.
  std::unique_ptr<UvHandle<uv_process_t>> process_;
  UvHandle<uv_timer_t> kill_timer_;
  std::unique_ptr<UvHandle<uv_pipe_t>> stderr_pipe_;
  UvHandle<uv_timer_t> restart_timer_;
  uint64_t backoff_ms_ = first_backoff_ms;
  uint64_t started_ms_ = 0;
  uint64_t restarts_ = 0;
  log::RateLimiter restart_log_;
  std::unique_ptr<StderrLines> stderr_lines_;
  std::unique_ptr<char[]> stderr_buffer_;
  bool exited_ = false;
  bool stdout_done_ = false;
};

}  // namespace chronomerge
