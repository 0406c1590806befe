#include "feeds/exec_feed.h"

#include <signal.h>

#include <algorithm>
#include <vector>

#include "log/log.h"
#include "uv/uv_error.h"

namespace chronomerge {

// Frames the child's stderr into log lines.
struct ExecFeed::StderrLines {
  const std::string& feed;
  LineFramer framer{4096};
  void line(std::string_view text) {
    log::warn("feed {}: stderr: {}", feed, log::excerpt(text, 300));
  }
  void overlong(std::string_view head, size_t) { line(head); }
};

ExecFeed::ExecFeed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes)
    : StreamFeed(host, id, std::move(config), max_line_bytes) {}

ExecFeed::~ExecFeed() {
  close();
}

bool ExecFeed::start() {
  if (config_.restart_on_exit) {
    uv_timer_init(host_.loop(), restart_timer_.get());
    restart_timer_.initialized(this);
  }
  if (!spawn() && !config_.restart_on_exit) {
    counters_.io_error = true;
    end_feed();  // a missing program ends the feed; the daemon goes on
  }
  return true;
}

bool ExecFeed::spawn() {
  exited_ = false;
  stdout_done_ = false;
  process_ = std::make_unique<UvHandle<uv_process_t>>();
  stderr_pipe_ = std::make_unique<UvHandle<uv_pipe_t>>();
  auto out = std::make_unique<Connection>();
  uv_pipe_init(host_.loop(), &out->get()->pipe, 0);
  out->initialized(this);
  uv_pipe_init(host_.loop(), stderr_pipe_->get(), 0);
  stderr_pipe_->initialized(this);

  std::vector<char*> argv;
  for (auto& arg : config_.command) argv.push_back(arg.data());
  argv.push_back(nullptr);
  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
  stdio[1].data.stream = out->stream();
  stdio[2].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
  stdio[2].data.stream = stderr_pipe_->stream();
  uv_process_options_t options{};
  options.file = argv[0];
  options.args = argv.data();
  options.stdio = stdio;
  options.stdio_count = 3;
  options.exit_cb = on_exit;
  int rc = uv_spawn(host_.loop(), process_->get(), &options);
  if (rc < 0) {
    // uv_spawn initializes the handle even when it fails: it must be
    // closed. There is no child to stop: its pid is 0, and killing pid 0
    // would signal the daemon's whole process group.
    process_->initialized(this);
    exited_ = true;
    ++counters_.start_failures;
    log::error("feed {}: cannot run {}: {}", name(), config_.command[0], uv_error_text(rc));
    out->close();
    stderr_pipe_->close();
    if (config_.restart_on_exit) {
      stdout_done_ = true;
      schedule_restart();
    }
    return false;
  }
  process_->initialized(this);
  started_ms_ = host_.now();
  set_connected(true);
  log::info("feed {}: started {} (pid {})", name(), config_.command[0], process_->get()->pid);

  stderr_lines_ = std::make_unique<StderrLines>(StderrLines{config_.name});
  stderr_buffer_.reset(new char[4096]);
  uv_read_start(
      stderr_pipe_->stream(),
      [](uv_handle_t* h, size_t, uv_buf_t* buf) {
        auto* self = static_cast<ExecFeed*>(h->data);
        *buf = uv_buf_init(self->stderr_buffer_.get(), 4096);
      },
      [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
        auto* self = static_cast<ExecFeed*>(s->data);
        if (self == nullptr) return;
        if (n > 0) {
          self->stderr_lines_->framer.push(std::string_view(buf->base, static_cast<size_t>(n)),
                                           *self->stderr_lines_);
        } else if (n < 0) {
          self->stderr_lines_->framer.finish(*self->stderr_lines_);
          self->stderr_pipe_->close();
        }
      });
  attach(std::move(out));
  return true;
}

void ExecFeed::on_exit(uv_process_t* process, int64_t status, int signal) {
  auto* self = static_cast<ExecFeed*>(process->data);
  if (self == nullptr) return;
  self->exited_ = true;
  if (self->closed()) {  // stopped by close_transport(): reaped now
    self->process_->close();
    self->kill_timer_.close();
    return;
  }
  if (signal) {
    log::warn("feed {}: process killed by signal {}", self->name(), signal);
  } else if (status != 0) {
    log::warn("feed {}: process exited with status {}", self->name(), status);
  } else {
    log::info("feed {}: process exited", self->name());
  }
  self->maybe_end();
}

void ExecFeed::connection_ended(int) {
  // Standard output closed: a cut last line counts as a line, as with files.
  stdout_done_ = true;
  maybe_end();
}

void ExecFeed::maybe_end() {
  if (!exited_ || !stdout_done_) return;
  if (config_.restart_on_exit && !closed()) {
    schedule_restart();
  } else {
    end_feed();
  }
}

void ExecFeed::schedule_restart() {
  set_connected(false);
  process_->close();
  if (stderr_pipe_) stderr_pipe_->close();
  const uint64_t now = host_.now();
  // A run that lasted is a fresh start; quick exits back off further.
  if (now - started_ms_ >= steady_run_ms) backoff_ms_ = first_backoff_ms;
  ++restarts_;
  restart_log_.log(now, LogLevel::warn, {"feed", name()}, "restarts",
                   "feed {}: {} ended; starting it again in {} ms (restart {})", name(),
                   config_.command[0], backoff_ms_, restarts_);
  uv_timer_start(
      restart_timer_.get(),
      [](uv_timer_t* timer) {
        auto* self = static_cast<ExecFeed*>(timer->data);
        if (self == nullptr || self->closed()) return;
        self->spawn();
      },
      backoff_ms_, 0);
  backoff_ms_ = std::min(backoff_ms_ * 2, max_backoff_ms);
}

void ExecFeed::close_transport() {
  restart_timer_.close();
  if (stderr_pipe_) stderr_pipe_->close();
  if (!process_ || !process_->open() || exited_) {
    if (process_) process_->close();
    return;
  }
  uv_process_kill(process_->get(), SIGTERM);
  if (uv_timer_init(host_.loop(), kill_timer_.get()) == 0) {
    kill_timer_.initialized(this);
    uv_timer_start(
        kill_timer_.get(),
        [](uv_timer_t* timer) {
          auto* self = static_cast<ExecFeed*>(timer->data);
          if (self == nullptr || self->exited_) return;
          log::warn("feed {}: process ignored SIGTERM; killing it", self->name());
          uv_process_kill(self->process_->get(), SIGKILL);
        },
        kill_grace_ms, 0);
  }
}

}  // namespace chronomerge
