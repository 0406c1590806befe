#include "feeds/listen_feed.h"

#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>

#include "uv/uv_error.h"

namespace chronomerge {

namespace {

constexpr std::string_view refusals = "producer refusals";
constexpr std::string_view accept_failures = "accept failures";
constexpr std::string_view connections = "producer connects and disconnects";

// Whether the peer of `socket` has closed its side (a FIN is queued behind
// what is still unread), without reading anything.
bool peer_hung_up(uv_os_sock_t socket) {
  pollfd p{socket, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP)) != 0;
}

// Bytes the kernel holds for `socket`, not yet read.
size_t pending_bytes(uv_os_sock_t socket) {
  int bytes = 0;
  if (::ioctl(socket, FIONREAD, &bytes) != 0 || bytes < 0) return 0;
  return static_cast<size_t>(bytes);
}

std::string from(const std::string& peer) {
  return peer.empty() ? std::string() : " from " + peer;
}

}  // namespace

bool ListenFeed::start() {
  bool tcp = config_.type == FeedType::tcp_listen;
  if (!listener_.configure_tls(config_.tls, "feed " + name())) return false;
  listener_.set_socket_access(config_.socket);
  int rc = listener_.listen(
      host_.loop(), tcp ? &config_.address : nullptr, config_.path,
      [this](uv_os_sock_t socket, const AcceptedPeer& peer) { accepted(socket, peer.address); },
      [this](int error, uint64_t count) { accept_failed(error, count); });
  address_ = tcp ? listener_.bound_address() : config_.path;
  if (rc < 0) {
    log::error("feed {}: cannot listen on {}: {}", name(),
               tcp ? to_string(config_.address) : config_.path, uv_error_text(rc));
    return false;
  }
  if (uv_timer_init(host_.loop(), summary_timer_.get()) == 0) {
    summary_timer_.initialized(this);
    // A summary is not worth keeping the loop alive for.
    uv_unref(summary_timer_.base());
  }
  log::info("feed {}: listening on {}", name(), address_);
  return true;
}

void ListenFeed::reload_tls() {
  listener_.reload_tls(config_.tls);
}

void ListenFeed::accepted(uv_os_sock_t socket, const std::string& peer) {
  if (attached()) {
    refuse(socket, peer);
    return;
  }
  int error = 0;
  auto connection = open_accepted(host_.loop(), socket, error);
  if (!connection) {
    listener_.count_error(error);
    refusal_log_.log(host_.now(), LogLevel::warn, {"feed", name()}, accept_failures,
                     "feed {}: cannot accept a producer{}: {}", name(), from(peer),
                     uv_error_text(error));
    schedule_summary();
    return;
  }
  producer_socket_ = socket;
  connection_log_.log(host_.now(), LogLevel::info, {"feed", name()}, connections,
                      "feed {}: producer connected{}", name(), from(peer));
  schedule_summary();
  attach(std::move(connection));
}

// Closing a socket with bytes unread resets the connection: the producer's
// next write fails instead of vanishing. What it had already sent is
// counted, not read: a refused producer is not merged at all.
void ListenFeed::refuse(uv_os_sock_t socket, const std::string& peer) {
  const size_t unread = pending_bytes(socket);
  ::close(socket);
  ++counters_.refused;
  counters_.refused_bytes += unread;
  const std::string sent = unread > 0
                               ? fmt::format("{} bytes it had sent discarded unread", unread)
                               : std::string("refused before reading; nothing had arrived yet");
  // The same producer reconnecting too early looks like a second producer
  // to the kernel; what the attached connection is doing tells them apart.
  const bool paused = this->paused();
  if (paused || peer_hung_up(producer_socket_)) {
    refusal_log_.log(host_.now(), LogLevel::warn, {"feed", name()}, refusals,
                     "feed {}: refused a producer connection{}: previous connection still open "
                     "({}); a producer must wait until the daemon has read its previous "
                     "connection to the end and closed it, then retry ({})",
                     name(), from(peer),
                     paused ? "paused by backpressure" : "closed by its producer, not yet read",
                     sent);
  } else {
    refusal_log_.log(host_.now(), LogLevel::warn, {"feed", name()}, refusals,
                     "feed {}: refused a second producer connection{} (one at a time; {})", name(),
                     from(peer), sent);
  }
  schedule_summary();
}

void ListenFeed::accept_failed(int error, uint64_t count) {
  refusal_log_.log(host_.now(), LogLevel::warn, {"feed", name()}, accept_failures,
                   "feed {}: cannot accept producers: {}{}", name(), uv_error_text(error),
                   accept_loss_text(count));
  schedule_summary();
}

void ListenFeed::connection_ended(int status) {
  // EOF or error: either way the producer is gone; wait for the next one.
  connection_lost();
  producer_socket_ = -1;
  connection_log_.log(host_.now(), LogLevel::info, {"feed", name()}, connections,
                      "feed {}: producer disconnected{}", name(),
                      status == UV_EOF ? "" : " (" + uv_error_text(status) + ")");
  schedule_summary();
}

void ListenFeed::close_transport() {
  listener_.close();
  summary_timer_.close();
}

void ListenFeed::schedule_summary() {
  std::optional<uint64_t> due = refusal_log_.summary_due();
  if (std::optional<uint64_t> other = connection_log_.summary_due()) {
    due = due ? std::min(*due, *other) : other;
  }
  if (!due || !summary_timer_.open()) return;
  const uint64_t now = host_.now();
  uv_timer_start(
      summary_timer_.get(),
      [](uv_timer_t* timer) {
        auto* self = static_cast<ListenFeed*>(timer->data);
        if (self == nullptr) return;
        self->refusal_log_.flush(self->host_.now());
        self->connection_log_.flush(self->host_.now());
        self->schedule_summary();
      },
      *due > now ? *due - now : 0, 0);
}

}  // namespace chronomerge
