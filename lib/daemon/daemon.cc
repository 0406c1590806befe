#include "daemon/daemon.h"

#include <uv.h>

#include <memory>

#include "daemon/one_shot.h"
#include "daemon/pipeline.h"
#include "log/log.h"
#include "uv/uv_handle.h"

namespace chronomerge {
namespace {

class Daemon {
 public:
  Daemon(uv_loop_t* loop, Config config) : loop_(loop), config_(std::move(config)) {}

  bool start() {
    for (int signum : {SIGINT, SIGTERM}) {
      auto& handle = signals_.emplace_back(std::make_unique<UvHandle<uv_signal_t>>());
      uv_signal_init(loop_, handle->get());
      handle->initialized(this);
      uv_signal_start(
          handle->get(),
          [](uv_signal_t* h, int sig) {
            if (auto* self = static_cast<Daemon*>(h->data)) self->stop(sig);
          },
          signum);
    }
    pipeline_ = std::make_unique<Pipeline>(loop_, config_, true);
    pipeline_->on_finished([this] {
      log::info("all feeds ended and outputs flushed; exiting");
      shutdown();
    });
    if (!pipeline_->start()) {
      shutdown();
      return false;
    }
    log::info("running: {} feeds, {} outputs", config_.feeds.size(), config_.outputs.size());
    return true;
  }

  void stop(int sig) {
    if (draining_) {
      log::warn("second {} during drain: stopping now", strsignal(sig));
      shutdown();
      return;
    }
    draining_ = true;
    log::info("{}: draining (up to {} ms)", strsignal(sig), config_.drain_timeout_ms);
    uv_timer_init(loop_, drain_timer_.get());
    drain_timer_.initialized(this);
    uv_timer_start(
        drain_timer_.get(),
        [](uv_timer_t* t) {
          auto* self = static_cast<Daemon*>(t->data);
          log::warn("drain timeout: closing with data still queued");
          self->timed_out_ = true;
          self->shutdown();
        },
        config_.drain_timeout_ms, 0);
    pipeline_->drain();
  }

  void shutdown() {
    if (pipeline_) pipeline_->close();
    for (auto& s : signals_) s->close();
    drain_timer_.close();
  }

  bool timed_out() const { return timed_out_; }

 private:
  uv_loop_t* loop_;
  Config config_;
  std::unique_ptr<Pipeline> pipeline_;
  std::vector<std::unique_ptr<UvHandle<uv_signal_t>>> signals_;
  UvHandle<uv_timer_t> drain_timer_;
  bool draining_ = false;
  bool timed_out_ = false;
};

}  // namespace

int run_daemon(const DaemonOptions& options) {
  ConfigResult result = options.config_path.empty() ? parse_config(demo_config_text())
                                                    : load_config(options.config_path);
  if (!result.problems.empty()) {
    log::error("{}: invalid configuration:\n{}",
               options.config_path.empty() ? "demo" : options.config_path,
               format_problems(result.problems));
    return exit_error;
  }
  Config config = std::move(*result.config);
  log::set_level(options.log_level.value_or(config.log_level));

  uv_loop_t loop;
  uv_loop_init(&loop);
  int status = exit_ok;
  {
    Daemon daemon(&loop, std::move(config));
    if (!daemon.start()) status = exit_error;
    uv_run(&loop, UV_RUN_DEFAULT);
    daemon.shutdown();
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  if (uv_loop_close(&loop) != 0) log::error("internal: handles left open at exit");
  return status;
}

}  // namespace chronomerge
