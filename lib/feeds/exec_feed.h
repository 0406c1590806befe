// ExecFeed: runs `command` (argv, no shell) and reads its standard output.
// Its standard error is logged line by line with the feed's name. The feed
// ends when the process has exited and its output is read to the end.
#pragma once

#include "feeds/stream_feed.h"

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
  // Until the child is reaped, its exit callback needs this object.
  bool busy() const override { return StreamFeed::busy() || (process_.open() && !exited_); }

 protected:
  void connection_ended(int status) override;
  void close_transport() override;

 private:
  struct StderrLines;
  static void on_exit(uv_process_t* process, int64_t status, int signal);
  void maybe_end();

  UvHandle<uv_process_t> process_;
  UvHandle<uv_timer_t> kill_timer_;
  UvHandle<uv_pipe_t> stderr_pipe_;
  std::unique_ptr<StderrLines> stderr_lines_;
  std::unique_ptr<char[]> stderr_buffer_;
  bool exited_ = false;
  bool stdout_done_ = false;
};

}  // namespace chronomerge
