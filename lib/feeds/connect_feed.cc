#include "feeds/connect_feed.h"

#include <algorithm>

#include <unistd.h>

#include "log/log.h"
#include "uv/listener.h"
#include "uv/socket_address.h"
#include "uv/uv_error.h"

namespace chronomerge {

ConnectFeed::ConnectFeed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes)
    : StreamFeed(host, id, std::move(config), max_line_bytes),
      connect_([this](std::unique_ptr<Connection>& connection, ssize_t status) {
        if (status < 0) {
          failed(static_cast<int>(status));
        } else {
          connected(std::move(connection));
        }
      }),
      jitter_(static_cast<unsigned>(uv_hrtime())) {}

std::string ConnectFeed::target() const {
  return config_.type == FeedType::tcp_connect ? to_string(config_.address) : config_.path;
}

bool ConnectFeed::start() {
  if (config_.tls) {
    tls_ = load_tls_context(*config_.tls, TlsContext::Role::client, "feed " + name());
    if (!tls_) return false;
    tls_counters_.certificate_expiry = tls_->expires_at();
  }
  uv_timer_init(host_.loop(), retry_timer_.get());
  retry_timer_.initialized(this);
  connect();
  return true;
}

// The next connections use the new material; the open one, whose server
// was verified already, stays.
void ConnectFeed::reload_tls() {
  if (!config_.tls) return;
  if (auto context = load_tls_context(*config_.tls, TlsContext::Role::client, "feed " + name())) {
    tls_ = std::move(context);
    tls_counters_.certificate_expiry = tls_->expires_at();
  }
}

// The connect request carries the handle it connects: if the feed closes
// meanwhile, closing the handle cancels the connect and the request frees
// the handle when it completes.
void ConnectFeed::connect() {
  if (closed()) return;
  bridge_.reset();  // the previous TLS connection, done by now
  ++attempts_;
  auto connection = std::make_unique<Connection>();
  AnyStream* stream = connection->get();
  int rc;
  if (config_.type == FeedType::tcp_connect) {
    rc = uv_tcp_init(host_.loop(), &stream->tcp);
    if (rc == 0) {
      connection->initialized(nullptr);
      sockaddr_storage addr;
      rc = to_sockaddr(config_.address, addr);
      if (rc == 0) {
        rc = connect_.start(std::move(connection), [&](uv_connect_t* req, uv_connect_cb callback) {
          return uv_tcp_connect(req, &stream->tcp, reinterpret_cast<sockaddr*>(&addr), callback);
        });
      }
    }
  } else {
    rc = uv_pipe_init(host_.loop(), &stream->pipe, 0);
    if (rc == 0) {
      connection->initialized(nullptr);
      rc = connect_.start(std::move(connection), [&](uv_connect_t* req, uv_connect_cb callback) {
        uv_pipe_connect(req, &stream->pipe, config_.path.c_str(), callback);
        return 0;  // errors come through the callback
      });
    }
  }
  if (rc < 0) failed(rc);  // the connection, if any, closes here
}

void ConnectFeed::connected(std::unique_ptr<Connection> connection) {
  log::info("feed {}: connected to {}{}", name(), target(),
            attempts_ > 1 ? fmt::format(" after {} attempts", attempts_) : "");
  attempts_ = 0;
  backoff_ms_ = min_backoff_ms;
  failing_logged_ = false;
  if (config_.type == FeedType::tcp_connect) uv_tcp_nodelay(&connection->get()->tcp, 1);
  if (tls_) {
    start_tls(std::move(connection));
    return;
  }
  attach(std::move(connection));
}

// The bridge takes its own descriptor of the socket: the handle that
// connected it is closed, the socket stays open through the copy.
void ConnectFeed::start_tls(std::unique_ptr<Connection> connection) {
  uv_os_fd_t fd = -1;
  const int copy = uv_fileno(connection->base(), &fd) == 0 ? ::dup(fd) : -1;
  connection->close();
  if (copy < 0) {
    failed(UV_EMFILE);
    return;
  }
  ++tls_counters_.in_flight;
  bridge_ = std::make_unique<TlsBridge>(
      host_.loop(), tls_,
      [this](uv_os_sock_t plaintext, const TlsPeer& peer) {
        --tls_counters_.in_flight;
        ++tls_counters_.connections;
        int error = 0;
        auto stream = open_accepted(host_.loop(), plaintext, error);
        if (!stream) {
          failed(error);
          return;
        }
        log::info("feed {}: {} with {} to {}", name(), peer.version, peer.cipher, target());
        if (!closed()) attach(std::move(stream));
      },
      [this](TlsFailure failure, const std::string& detail) {
        --tls_counters_.in_flight;
        ++tls_counters_.refused[static_cast<size_t>(failure)];
        log::warn("feed {}: TLS with {} failed ({}): {}; retrying with backoff", name(), target(),
                  to_string(failure), detail);
        failing_logged_ = true;
        schedule_retry();
      });
  if (bridge_->start(copy, config_.address.host) < 0) {
    --tls_counters_.in_flight;
    failed(UV_ECONNABORTED);
  }
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
  // A handshake in progress is given up; an established TLS connection
  // is the one being drained.
  if (bridge_ && bridge_->handshaking()) bridge_.reset();
  if (connect_.pending()) {
    // Closing the handle cancels the connect; the request frees the rest.
    connect_.payload()->close();
    connect_.detach();
  }
}

}  // namespace chronomerge
