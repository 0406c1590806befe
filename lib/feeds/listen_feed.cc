#include "feeds/listen_feed.h"

#include "log/log.h"
#include "uv/socket_address.h"
#include "uv/uv_error.h"

namespace chronomerge {

bool ListenFeed::start() {
  bool tcp = config_.type == FeedType::tcp_listen;
  int rc = listen_on(host_.loop(), server_, tcp ? &config_.address : nullptr, config_.path,
                     on_connection, this);
  address_ = tcp ? bound_address(server_) : config_.path;
  if (rc < 0) {
    log::error("feed {}: cannot listen on {}: {}", name(),
               tcp ? to_string(config_.address) : config_.path, uv_error_text(rc));
    return false;
  }
  log::info("feed {}: listening on {}", name(), address_);
  return true;
}

void ListenFeed::on_connection(uv_stream_t* server, int status) {
  auto* self = static_cast<ListenFeed*>(server->data);
  if (self == nullptr) return;
  if (status < 0) {
    log::warn("feed {}: accept failed: {}", self->name(), uv_error_text(status));
    return;
  }
  int error = 0;
  auto connection = accept_from(server, error);
  if (!connection) {
    // EMFILE and friends: refuse this one, keep serving.
    log::warn("feed {}: cannot accept a producer: {}", self->name(), uv_error_text(error));
    return;
  }
  if (self->attached()) {
    ++self->refused_;
    log::warn("feed {}: refused a second producer connection (one at a time)", self->name());
    connection->close();
    return;
  }
  log::info("feed {}: producer connected", self->name());
  self->attach(std::move(connection));
}

void ListenFeed::connection_ended(int status) {
  // EOF or error: either way the producer is gone; wait for the next one.
  connection_lost();
  log::info("feed {}: producer disconnected{}", name(),
            status == UV_EOF ? "" : " (" + uv_error_text(status) + ")");
}

void ListenFeed::close_transport() {
  server_.close();
}

}  // namespace chronomerge
