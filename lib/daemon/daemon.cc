#include "daemon/daemon.h"

#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include <cstdio>
#include <memory>
#include <utility>

#include "daemon/one_shot.h"
#include "daemon/pipeline.h"
#include "kafka/kafka_metadata.h"
#include "log/log.h"
#include "metrics/http_server.h"
#include "metrics/metrics.h"
#include "metrics/status_page.h"
#include "net/service_notify.h"
#include "net/tls_context.h"
#include "record/simd_level.h"
#include "sinks/dead_letter.h"
#include "uv/uv_handle.h"
#include "uv/uv_request.h"

namespace chronomerge {
namespace {

// Config problems on one log line ("where: message; where: message"):
// one line per event, so journald keeps them with their level.
std::string one_line(const std::vector<ConfigProblem>& problems) {
  std::string text;
  for (const ConfigProblem& p : problems) {
    if (!text.empty()) text += "; ";
    text += p.where.empty() ? p.message : p.where + ": " + p.message;
  }
  return text;
}

// Where an output writes, for log lines.
std::string destination(const OutputConfig& output) {
  switch (output.type) {
    case OutputType::stdout_:
      return "standard output";
    case OutputType::file:
    case OutputType::unix_listen:
      return output.path;
    case OutputType::tcp_listen:
    case OutputType::http_listen:
      return to_string(output.address);
    case OutputType::kafka:
      return fmt::format("Kafka {} partition {} at {}", output.kafka->topic,
                         output.kafka->partition, output.kafka->brokers);
  }
  return "";
}

// After the shutdown every handle is closed and the loop runs out at once,
// unless a write is stuck in libuv's thread pool (a FIFO nobody reads, a
// hung network file system): its request keeps the loop alive for ever and
// nothing can cancel it. Past this grace the process exits without it.
constexpr uint64_t exit_grace_ms = 500;

// How long listing a topic's partitions ("partitions": "all") may take.
constexpr uint64_t kafka_metadata_timeout_ms = 10000;

// A reload whose kafka feeds read "all" partitions: the topics are listed
// on the thread pool (a metadata request blocks), then the reload goes on.
struct PartitionListing {
  Config config;
  std::string error;
  bool ok = false;
  void run() { ok = resolve_kafka_partitions(config, kafka_metadata_timeout_ms, error); }
};

class Daemon {
 public:
  Daemon(uv_loop_t* loop, Config config, std::string config_path)
      : loop_(loop),
        config_(std::move(config)),
        config_path_(std::move(config_path)),
        start_time_(unix_time_seconds()) {}

  bool start() {
    for (int signum : {SIGINT, SIGTERM, SIGHUP, SIGUSR1}) {
      auto& handle = signals_.emplace_back(std::make_unique<UvHandle<uv_signal_t>>());
      uv_signal_init(loop_, handle->get());
      handle->initialized(this);
      uv_signal_start(
          handle->get(),
          [](uv_signal_t* h, int sig) {
            auto* self = static_cast<Daemon*>(h->data);
            if (self == nullptr) return;
            if (sig == SIGHUP) {
              self->request_reload();
            } else if (sig == SIGUSR1) {
              log::info("SIGUSR1: reopening output files");
              self->pipeline_->reopen_files();
            } else {
              self->stop(sig);
            }
          },
          signum);
    }
    uv_timer_init(loop_, reload_timer_.get());
    reload_timer_.initialized(this);
    pipeline_ = std::make_unique<Pipeline>(loop_, config_, true);
    pipeline_->on_finished([this] {
      if (pipeline_->no_feed_opened()) {
        // Nothing was ever read: a supervisor (Restart=on-failure) should
        // try again rather than take this for a finished job.
        log::error("no feed could be opened; exiting with status {}", int{exit_error});
        exit_status_ = exit_error;
      } else {
        log::info("all feeds ended and outputs flushed; exiting");
      }
      shutdown();
    });
    if (!pipeline_->start()) {
      exit_status_ = exit_error;
      shutdown();
      return false;
    }
    // Bound before READY=1, like every other listener. Its address is read
    // once: a reload that changes it takes effect on restart.
    if (config_.metrics) {
      metrics_ = std::make_unique<HttpServer>(
          loop_, config_.metrics->address,
          [this](std::string_view, std::string_view path) { return serve(path); });
      std::shared_ptr<TlsContext> tls;
      if (config_.metrics->tls) {
        tls = load_tls_context(*config_.metrics->tls, TlsContext::Role::server, "metrics");
        if (tls) metrics_->use_tls(tls);
      }
      metrics_->require_tokens(config_.metrics->tokens_sha256);
      if ((config_.metrics->tls && !tls) || !metrics_->start()) {
        exit_status_ = exit_error;
        shutdown();
        return false;
      }
    }
    log::info("running: {} feeds, {} outputs; JSON validation: {}", config_.feeds.size(),
              config_.outputs.size(), to_string(default_simd_level()));
    // Every listener is bound by now: tell systemd (Type=notify).
    notify_ready();
    start_watchdog();
    return true;
  }

  // WatchdogSec=: ping at half the interval from the loop, so a wedged
  // loop is restarted by systemd.
  void start_watchdog() {
    const auto watchdog = service_watchdog_interval();
    if (!watchdog) return;
    uv_timer_init(loop_, watchdog_timer_.get());
    watchdog_timer_.initialized(this);
    const uint64_t interval = std::max<uint64_t>(1, watchdog->count() / 2000);
    uv_timer_start(
        watchdog_timer_.get(),
        [](uv_timer_t* t) { static_cast<Daemon*>(t->data)->notify("WATCHDOG=1"); }, 0, interval);
  }

  void stop(int sig) {
    if (draining_) {
      log::warn("second {} during drain: stopping now", strsignal(sig));
      shutdown();
      return;
    }
    draining_ = true;
    log::info("{}: draining (up to {} ms)", strsignal(sig), config_.drain_timeout_ms);
    notify("STOPPING=1\nSTATUS=draining");
    uv_timer_init(loop_, drain_timer_.get());
    drain_timer_.initialized(this);
    uv_timer_start(
        drain_timer_.get(),
        [](uv_timer_t* t) {
          // The stop that was asked for still happens, and exits 0 like
          // any requested stop; what could not be written is reported.
          auto* self = static_cast<Daemon*>(t->data);
          self->log_drain_timeout();
          self->shutdown();
        },
        config_.drain_timeout_ms, 0);
    pipeline_->drain();
  }

  // One line naming everything the drain could not write: each sink that
  // still holds bytes, the dead-letter file, and what the feeds queued
  // that was never merged (an output holding the merge).
  void log_drain_timeout() {
    std::string held;
    auto add = [&held](const std::string& what) {
      held += held.empty() ? "" : "; ";
      held += what;
    };
    for (const auto& sink : pipeline_->sinks()) {
      SinkCounters c = sink->counters();
      if (c.queue_bytes == 0) continue;
      add(fmt::format("output {} ({}) still holds {} bytes{}", sink->name(),
                      destination(sink->config()), c.queue_bytes,
                      c.failing ? ", failing to write" : ""));
    }
    if (const DeadLetter* deadletter = pipeline_->deadletter()) {
      DeadLetter::Counters c = deadletter->counters();
      if (c.queue_bytes > 0) {
        add(fmt::format("dead-letter file {} still holds {} bytes{}", deadletter->path(),
                        c.queue_bytes, c.failing ? ", failing to write" : ""));
      }
    }
    size_t unmerged = 0;
    for (const auto& feed : pipeline_->feeds()) {
      if (feed) unmerged += pipeline_->merger().queue_bytes(feed->id());
    }
    if (unmerged > 0) add(fmt::format("feeds still hold {} bytes not merged", unmerged));
    log::warn("drain timeout after {} ms: {}; exiting", config_.drain_timeout_ms,
              held.empty() ? std::string("nothing left to write") : held);
  }

  // The pipeline's metrics and the metrics port's own TLS.
  MetricsSnapshot snapshot() const {
    MetricsSnapshot s = pipeline_->metrics_snapshot();
    if (const TlsCounters* tls = metrics_ ? metrics_->tls_counters() : nullptr) {
      s.tls.emplace_back("metrics", *tls);
    }
    return s;
  }

  // GET /metrics and GET /healthz, on the loop thread.
  HttpServer::Response serve(std::string_view path) {
    if (path == "/metrics") {
      MetricsExtras extras{reloads_ok_, reloads_failed_, notify_failures_total_, draining_,
                           start_time_};
      return {200, std::string(metrics_content_type),
              render_metrics(snapshot(), extras, unix_time_seconds())};
    }
    if (path == "/fleet") {
      return {200, "application/json", pipeline_->fleet_json()};
    }
    if (path == "/") {
      return {200, "text/html; charset=utf-8", std::string(status_page_html())};
    }
    if (path == "/status") {
      return {200, "application/json",
              render_status_json(snapshot(), unix_time_seconds(), config_.metrics->tail)};
    }
    if (path == "/tail" && config_.metrics->tail) {
      return {200, "application/json", pipeline_->tail_json(50)};
    }
    if (path == "/healthz") {
      if (draining_) return {503, "text/plain; charset=utf-8", "draining\n"};
      return {200, "text/plain; charset=utf-8", "ok\n"};
    }
    return {404, "text/plain; charset=utf-8", "not found\n"};
  }

  // SIGHUPs are collected and applied from a zero-delay timer: any number
  // arriving before (or while) a reload runs fold into one more reload.
  void request_reload() {
    if (draining_) return;
    if (listing_.pending()) {
      reload_again_ = true;  // folded into one more reload after this one
      return;
    }
    if (uv_is_active(reload_timer_.base())) return;
    uv_timer_start(
        reload_timer_.get(),
        [](uv_timer_t* t) {
          if (auto* self = static_cast<Daemon*>(t->data)) self->reload();
        },
        0, 0);
  }

  void reload() {
    if (config_path_.empty()) {
      log::warn("SIGHUP: the built-in demo configuration cannot be reloaded");
      return;
    }
    notify("RELOADING=1\nSTATUS=reloading");
    ConfigResult result = load_config(config_path_);
    check_tls_files(result);
    if (result.problems.empty() && has_unresolved_kafka_feeds(*result.config)) {
      auto listing = std::make_unique<PartitionListing>();
      listing->config = std::move(*result.config);
      const int rc = listing_.queue_work<&PartitionListing::run>(loop_, std::move(listing));
      if (rc == 0) return;  // apply_reload() follows
      log::error("reload of {}: cannot list Kafka partitions: {}", config_path_, uv_strerror(rc));
      ++reloads_failed_;
      finish_reload();
      return;
    }
    apply_reload(std::move(result));
  }

  void listed(PartitionListing& listing) {
    ConfigResult result;
    if (listing.ok) {
      result.config = std::move(listing.config);
    } else {
      result.problems.push_back({"/feeds", listing.error});
    }
    apply_reload(std::move(result));
    if (std::exchange(reload_again_, false)) request_reload();
  }

  void apply_reload(ConfigResult result) {
    std::string error;
    if (!result.problems.empty()) {
      ++reloads_failed_;
      log::error("reload of {} rejected, the running configuration stays: {}", config_path_,
                 one_line(result.problems));
    } else if (!metrics_reloadable(result.config->metrics)) {
      ++reloads_failed_;
      log::error(
          "reload of {} rejected: metrics (on or off), metrics.listen and whether metrics has "
          "tls take effect only on restart",
          config_path_);
    } else if (!pipeline_->reload(*result.config, error)) {
      ++reloads_failed_;
      config_ = pipeline_->config();  // whatever part of it was applied
      log::error("reload of {} failed: {}", config_path_, error);
    } else {
      ++reloads_ok_;
      config_ = std::move(*result.config);
      // The metrics port's certificate, CA and CRL are read again too, and
      // its token list applies to the next request.
      if (metrics_ && config_.metrics && config_.metrics->tls) {
        if (auto tls =
                load_tls_context(*config_.metrics->tls, TlsContext::Role::server, "metrics")) {
          metrics_->reload_tls(std::move(tls));
        }
        metrics_->require_tokens(config_.metrics->tokens_sha256);
      }
      log::info("reloaded {}: {} feeds, {} outputs", config_path_, config_.feeds.size(),
                config_.outputs.size());
    }
    finish_reload();
  }

  void finish_reload() { notify_ready(); }

  // Tells the service manager (Type=notify) a change of state; a failure
  // is logged, rate-limited (the watchdog notifies every few seconds).
  void notify(std::string_view state) {
    const std::string error = notify_service_manager(state);
    if (!error.empty()) {
      ++notify_failures_total_;
      notify_failures_.log(uv_now(loop_), LogLevel::warn, {"systemd", ""}, "failed notifications",
                           "systemd: could not notify {}: {}", state.substr(0, state.find('\n')),
                           error);
    }
  }
  void notify_ready() {
    notify(fmt::format("READY=1\nSTATUS=merging {} feeds into {} outputs", config_.feeds.size(),
                       config_.outputs.size()));
  }

  // The metrics listener stays as it is across a reload: its address and
  // whether it speaks TLS cannot change; its TLS files and tokens can.
  bool metrics_reloadable(const std::optional<MetricsConfig>& next) const {
    if (next.has_value() != config_.metrics.has_value()) return false;
    return !next || (next->address == config_.metrics->address &&
                     next->tls.has_value() == config_.metrics->tls.has_value());
  }

  void shutdown() {
    listing_.detach();  // a reload still listing partitions is dropped
    if (pipeline_) pipeline_->close();
    if (metrics_) metrics_->close();
    for (auto& s : signals_) s->close();
    drain_timer_.close();
    watchdog_timer_.close();
    reload_timer_.close();
    arm_exit_deadline();
  }

  // Bounds the shutdown (see exit_grace_ms). The timer does not keep the
  // loop alive by itself: when the loop runs out in time, run_daemon
  // closes it with disarm_exit_deadline() and the loop closes cleanly.
  void arm_exit_deadline() {
    if (exit_timer_armed_) return;
    exit_timer_armed_ = true;
    uv_timer_init(loop_, exit_timer_.get());
    exit_timer_.initialized(this);
    uv_timer_start(
        exit_timer_.get(),
        [](uv_timer_t* t) {
          auto* self = static_cast<Daemon*>(t->data);
          log::warn(
              "a write is still stuck in the thread pool {} ms after the shutdown; exiting "
              "without waiting for it",
              exit_grace_ms);
          std::fflush(stderr);
          // The loop cannot be closed with the request in flight, and the
          // thread cannot be stopped: leave without running destructors.
          ::_exit(self ? self->exit_status_ : exit_ok);
        },
        exit_grace_ms, 0);
    uv_unref(exit_timer_.base());
  }
  void disarm_exit_deadline() { exit_timer_.close(); }

  int exit_status() const { return exit_status_; }

 private:
  uv_loop_t* loop_;
  Config config_;
  std::string config_path_;
  std::unique_ptr<Pipeline> pipeline_;
  double start_time_;
  std::unique_ptr<HttpServer> metrics_;
  UvHandle<uv_timer_t> reload_timer_;
  using Listing = UvRequest<uv_work_t, std::unique_ptr<PartitionListing>>;
  Listing listing_{
      [this](std::unique_ptr<PartitionListing>& listing, ssize_t) { listed(*listing); }};
  bool reload_again_ = false;  // a SIGHUP came while partitions were listed
  uint64_t reloads_ok_ = 0;
  uint64_t reloads_failed_ = 0;
  std::vector<std::unique_ptr<UvHandle<uv_signal_t>>> signals_;
  UvHandle<uv_timer_t> drain_timer_;
  UvHandle<uv_timer_t> watchdog_timer_;
  log::RateLimiter notify_failures_;
  uint64_t notify_failures_total_ = 0;
  UvHandle<uv_timer_t> exit_timer_;
  bool exit_timer_armed_ = false;
  int exit_status_ = exit_ok;
  bool draining_ = false;
};

}  // namespace

// Thousands of feeds and clients are normal: use every descriptor the
// hard limit allows.
void raise_open_files_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return;
  rlim_t before = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) == 0) {
    log::debug("open files limit raised from {} to {}", before, limit.rlim_cur);
  }
}

int run_daemon(const DaemonOptions& options) {
  ConfigResult result = options.config_path.empty() ? parse_config(demo_config_text())
                                                    : load_config(options.config_path);
  check_tls_files(result);
  if (!result.problems.empty()) {
    log::error("{}: invalid configuration: {}",
               options.config_path.empty() ? "demo" : options.config_path,
               one_line(result.problems));
    return exit_error;
  }
  Config config = std::move(*result.config);
  log::set_level(options.log_level.value_or(config.log_level));
  // A service's lines: the journal's priorities, or timestamps elsewhere.
  log::set_style({options.log_format.value_or(config.log_format), log::stderr_is_journal(), true});
  // Kafka feeds that read "all" partitions: listed once, before anything
  // runs (nothing waits on the loop yet); on reload, on the thread pool.
  if (has_unresolved_kafka_feeds(config)) {
    std::string error;
    if (!resolve_kafka_partitions(config, kafka_metadata_timeout_ms, error)) {
      log::error("{}: {}", options.config_path.empty() ? "demo" : options.config_path, error);
      return exit_error;
    }
  }
  raise_open_files_limit();

  uv_loop_t loop;
  uv_loop_init(&loop);
  int status = exit_ok;
  {
    Daemon daemon(&loop, std::move(config), options.config_path);
    daemon.start();
    uv_run(&loop, UV_RUN_DEFAULT);
    daemon.shutdown();
    uv_run(&loop, UV_RUN_DEFAULT);
    // Ran out in time: nothing was stuck.
    daemon.disarm_exit_deadline();
    uv_run(&loop, UV_RUN_DEFAULT);
    status = daemon.exit_status();
  }
  if (uv_loop_close(&loop) != 0) log::error("internal: handles left open at exit");
  return status;
}

}  // namespace chronomerge
