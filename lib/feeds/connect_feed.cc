#include "feeds/connect_feed.h"

#include <algorithm>

#include "log/log.h"
#include "uv/socket_address.h"
#include "uv/uv_error.h"

namespace chronomerge {

// A connect request and the handle it connects. It outlives the feed if
// the feed closes meanwhile: the callback then just frees everything.
struct ConnectFeed::Attempt {
  uv_connect_t req;
  ConnectFeed* feed;
  std::unique_ptr<UvHandle<AnyStream>> connection;
};

ConnectFeed::ConnectFeed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes)
    : StreamFeed(host, id, std::move(config), max_line_bytes),
      jitter_(static_cast<unsigned>(uv_hrtime())) {}

std::string ConnectFeed::target() const {
  return config_.type == FeedType::tcp_connect ? to_string(config_.address) : config_.path;
}

bool ConnectFeed::start() {
  uv_timer_init(host_.loop(), retry_timer_.get());
  retry_timer_.initialized(this);
  connect();
  return true;
}

void ConnectFeed::connect() {
  if (closed()) return;
  ++attempts_;
  auto* attempt = new Attempt{{}, this, std::make_unique<UvHandle<AnyStream>>()};
  attempt->req.data = attempt;
  AnyStream* stream = attempt->connection->get();
  int rc;
  auto on_connect = [](uv_connect_t* req, int status) {
    std::unique_ptr<Attempt> attempt(static_cast<Attempt*>(req->data));
    ConnectFeed* self = attempt->feed;
    if (self == nullptr) return;  // the connection handle closes with it
    self->attempt_ = nullptr;
    if (status < 0) {
      self->failed(status);
    } else {
      self->connected(std::move(attempt->connection));
    }
  };
  if (config_.type == FeedType::tcp_connect) {
    rc = uv_tcp_init(host_.loop(), &stream->tcp);
    if (rc == 0) {
      attempt->connection->initialized(nullptr);
      sockaddr_storage addr;
      rc = to_sockaddr(config_.address, addr);
      if (rc == 0) {
        rc = uv_tcp_connect(&attempt->req, &stream->tcp, reinterpret_cast<sockaddr*>(&addr),
                            on_connect);
      }
    }
  } else {
    rc = uv_pipe_init(host_.loop(), &stream->pipe, 0);
    if (rc == 0) {
      attempt->connection->initialized(nullptr);
      uv_pipe_connect(&attempt->req, &stream->pipe, config_.path.c_str(), on_connect);
    }
  }
  if (rc < 0) {
    delete attempt;
    failed(rc);
    return;
  }
  attempt_ = attempt;
}

void ConnectFeed::connected(std::unique_ptr<Connection> connection) {
  log::info("feed {}: connected to {}{}", name(), target(),
            attempts_ > 1 ? fmt::format(" after {} attempts", attempts_) : "");
  attempts_ = 0;
  backoff_ms_ = min_backoff_ms;
  failing_logged_ = false;
  if (config_.type == FeedType::tcp_connect) uv_tcp_nodelay(&connection->get()->tcp, 1);
  attach(std::move(connection));
}

void ConnectFeed::failed(int status) {
  if (!failing_logged_) {
    log::warn("feed {}: cannot connect to {}: {}; retrying with backoff", name(), target(),
              uv_error_text(status));
    failing_logged_ = true;
  }
  schedule_retry();
}

void ConnectFeed::schedule_retry() {
  if (closed()) return;
  // Full backoff plus up to 50% jitter.
  uint64_t delay =
      backoff_ms_ + std::uniform_int_distribution<uint64_t>(0, backoff_ms_ / 2)(jitter_);
  backoff_ms_ = std::min(backoff_ms_ * 2, max_backoff_ms);
  uv_timer_start(
      retry_timer_.get(),
      [](uv_timer_t* timer) {
        if (auto* self = static_cast<ConnectFeed*>(timer->data)) self->connect();
      },
      delay, 0);
}

void ConnectFeed::connection_ended(int status) {
  connection_lost();
  log::warn("feed {}: upstream {} closed the connection{}; reconnecting", name(), target(),
            status == UV_EOF ? "" : " (" + uv_error_text(status) + ")");
  failing_logged_ = false;
  schedule_retry();
}

void ConnectFeed::close_transport() {
  retry_timer_.close();
  if (attempt_) {
    // Closing the handle cancels the connect; its callback frees the rest.
    attempt_->feed = nullptr;
    attempt_->connection->close();
  }
  attempt_ = nullptr;
}

}  // namespace chronomerge
