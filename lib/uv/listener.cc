#include "uv/listener.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include <fmt/format.h>

#include "uv/socket_address.h"
#include "uv/uv_error.h"

namespace chronomerge {

namespace {
// One descriptor per process, held so that a Listener out of descriptors
// can release it for a moment to accept (and close) what is waiting. Loop
// thread only, like every Listener.
int reserved_fd = -1;

void reserve_fd() {
  if (reserved_fd < 0) reserved_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
}

bool is_live_unix_socket(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  path.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
  bool live = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return live;
}
}  // namespace

// The socket file's mode and group (set_socket_access()); 0 or -errno.
int Listener::apply_access() {
  if (!access_.group.empty()) {
    const std::optional<gid_t> gid = group_id(access_.group);
    if (!gid) return -ENOENT;  // reported as "no such group" by the caller's log
    if (::chown(unix_path_.c_str(), static_cast<uid_t>(-1), *gid) != 0) return -errno;
  }
  if (access_.mode && ::chmod(unix_path_.c_str(), static_cast<mode_t>(*access_.mode)) != 0) {
    return -errno;
  }
  return 0;
}

int Listener::listen(uv_loop_t* loop, const HostPort* tcp, const std::string& unix_path,
                     AcceptCallback on_accept, ErrorCallback on_error, int backlog) {
  loop_ = loop;
  tcp_ = tcp != nullptr;
  on_accept_ = std::move(on_accept);
  on_error_ = std::move(on_error);
  reserve_fd();
  sockaddr_storage addr{};
  socklen_t length = 0;
  if (tcp) {
    int rc = to_sockaddr(*tcp, addr);
    if (rc < 0) return rc;
    length = addr.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  } else {
    auto* un = reinterpret_cast<sockaddr_un*>(&addr);
    un->sun_family = AF_UNIX;
    if (unix_path.size() >= sizeof(un->sun_path)) return UV_ENAMETOOLONG;
    unix_path.copy(un->sun_path, sizeof(un->sun_path) - 1);
    length = sizeof(sockaddr_un);
  }
  fd_ = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return -errno;
  int rc = 0;
  if (tcp) {
    // Both as uv_tcp_bind does: a restarted daemon rebinds while old
    // connections linger in TIME_WAIT, and "[::]" takes IPv4 too.
    int on = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (addr.ss_family == AF_INET6) {
      int off = 0;
      ::setsockopt(fd_, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
    }
  } else if (!is_live_unix_socket(unix_path)) {
    // A socket file from a crashed run would make bind fail with
    // EADDRINUSE; remove it unless someone is really listening there.
    ::unlink(unix_path.c_str());
  }
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), length) != 0) {
    rc = -errno;
    close();
    return rc;
  }
  if (!tcp) {
    unix_path_ = unix_path;  // ours now: removed on close
    if (int error = apply_access(); error != 0) {
      close();
      return error;
    }
  }
  if (::listen(fd_, backlog) != 0) {
    rc = -errno;
    close();
    return rc;
  }
  if (tls_context_) {
    tls_ = std::make_unique<TlsAcceptor>(
        loop, tls_context_, tls_name_,
        [this](uv_os_sock_t plaintext, const std::string& address, const TlsPeer& peer) {
          on_accept_(plaintext, AcceptedPeer{address, peer});
        },
        [this](bool on) {
          tls_held_ = on;
          if (on) {
            if (poll_.open()) uv_poll_stop(poll_.get());
          } else {
            watch();
          }
        });
  }
  rc = uv_poll_init_socket(loop, poll_.get(), fd_);
  if (rc == 0) {
    poll_.initialized(this);
    rc = uv_poll_start(poll_.get(), UV_READABLE, on_readable);
  }
  if (rc == 0) {
    rc = uv_timer_init(loop, retry_.get());
    if (rc == 0) retry_.initialized(this);
  }
  if (rc < 0) close();
  return rc;
}

void Listener::use_tls(std::shared_ptr<const TlsContext> context, std::string name) {
  tls_context_ = std::move(context);
  tls_name_ = std::move(name);
}

void Listener::set_tls_context(std::shared_ptr<const TlsContext> context) {
  tls_context_ = context;
  if (tls_) tls_->set_context(std::move(context));
}

bool Listener::configure_tls(const std::optional<TlsConfig>& config, const std::string& name) {
  if (!config) return true;
  auto context = load_tls_context(*config, TlsContext::Role::server, name);
  if (!context) return false;
  use_tls(std::move(context), name);
  return true;
}

void Listener::reload_tls(const std::optional<TlsConfig>& config) {
  if (!config || !tls_) return;
  if (auto context = load_tls_context(*config, TlsContext::Role::server, tls_name_)) {
    set_tls_context(std::move(context));
  }
}

void Listener::close() {
  if (tls_) tls_->stop();
  if (fd_ < 0) {
    closed_ = true;
    return;
  }
  closed_ = true;
  // uv_close() stops polling at once: the descriptor may be closed next.
  poll_.close();
  retry_.close();
  ::close(fd_);
  fd_ = -1;
  if (!unix_path_.empty()) ::unlink(unix_path_.c_str());  // as libuv does for pipes
}

std::string Listener::bound_address() const {
  if (!tcp_ || fd_ < 0) return {};
  sockaddr_storage addr{};
  socklen_t length = sizeof(addr);
  if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &length) != 0) return {};
  return format_sockaddr(addr);
}

// A listening socket reports no errors of its own; a failure shows in
// accept().
void Listener::on_readable(uv_poll_t* handle, int, int) {
  if (auto* self = static_cast<Listener*>(handle->data)) self->accept_ready();
}

void Listener::accept_ready() {
  for (int i = 0; i < accepts_per_turn && !closed_ && !held_ && !tls_held_; ++i) {
    int socket = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (socket >= 0) {
      // A reserve lost to a race while shedding is taken back as soon as
      // descriptors are free again.
      if (reserved_fd < 0) reserve_fd();
      if (tls_) {
        tls_->accept(socket, peer_address(socket));
      } else {
        on_accept_(socket, AcceptedPeer{peer_address(socket), std::nullopt});  // may close this
      }
      continue;
    }
    int error = errno;
    switch (error) {
      case EAGAIN:
#if EWOULDBLOCK != EAGAIN
      case EWOULDBLOCK:
#endif
        return;
      case EINTR:
        continue;
      case EMFILE:
      case ENFILE: {
        uint64_t shed_count = shed();
        if (shed_count == 0) pause();  // nothing to release: let them wait
        fail(-error, shed_count);
        return;
      }
      case ENOBUFS:
      case ENOMEM:
        pause();
        fail(-error, 0);  // the connection waits
        return;
      default:
        // A connection that failed while it waited (ECONNABORTED, and the
        // network errors Linux passes on from accept()): it is gone; the
        // next one may be fine.
        fail(-error, 1);
        continue;
    }
  }
}

uint64_t Listener::shed() {
  if (reserved_fd < 0) return 0;
  ::close(reserved_fd);
  reserved_fd = -1;
  uint64_t count = 0;
  while (true) {
    int socket = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (socket < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      break;
    }
    ::close(socket);
    ++count;
  }
  reserve_fd();
  return count;
}

void Listener::pause() {
  if (!poll_.open() || !retry_.open()) return;
  uv_poll_stop(poll_.get());
  uv_timer_start(
      retry_.get(),
      [](uv_timer_t* timer) {
        if (auto* self = static_cast<Listener*>(timer->data)) self->watch();
      },
      retry_ms, 0);
}

void Listener::hold(bool on) {
  if (held_ == on) return;
  held_ = on;
  if (on) {
    if (poll_.open()) uv_poll_stop(poll_.get());
  } else {
    watch();
  }
}

void Listener::watch() {
  if (closed_ || held_ || tls_held_ || !poll_.open()) return;
  if (retry_.open() && uv_is_active(retry_.base())) return;  // paused: the timer comes back
  uv_poll_start(poll_.get(), UV_READABLE, on_readable);
}

void Listener::fail(int error, uint64_t connections) {
  if (connections > 0) errors_[uv_error_name(error)] += connections;
  if (on_error_) on_error_(error, connections);
}

std::string accept_loss_text(uint64_t connections) {
  if (connections == 0) return " (the connections wait)";
  if (connections == 1) return {};
  return fmt::format(" ({} connections closed at once)", connections);
}

bool is_tcp_socket(uv_os_sock_t socket) {
  sockaddr_storage local{};
  socklen_t length = sizeof(local);
  return ::getsockname(socket, reinterpret_cast<sockaddr*>(&local), &length) == 0 &&
         (local.ss_family == AF_INET || local.ss_family == AF_INET6);
}

std::unique_ptr<UvHandle<AnyStream>> open_accepted(uv_loop_t* loop, uv_os_sock_t socket,
                                                   int& error) {
  const bool tcp = is_tcp_socket(socket);
  auto client = std::make_unique<UvHandle<AnyStream>>();
  error =
      tcp ? uv_tcp_init(loop, &client->get()->tcp) : uv_pipe_init(loop, &client->get()->pipe, 0);
  if (error < 0) {
    ::close(socket);
    return nullptr;
  }
  client->initialized(nullptr);
  error =
      tcp ? uv_tcp_open(&client->get()->tcp, socket) : uv_pipe_open(&client->get()->pipe, socket);
  if (error < 0) {
    ::close(socket);
    return nullptr;  // the handle closes itself
  }
  if (tcp) uv_tcp_nodelay(&client->get()->tcp, 1);
  return client;
}

std::string peer_address(uv_os_sock_t socket) {
  sockaddr_storage addr{};
  socklen_t length = sizeof(addr);
  if (::getpeername(socket, reinterpret_cast<sockaddr*>(&addr), &length) != 0) return {};
  if (addr.ss_family != AF_INET && addr.ss_family != AF_INET6) return {};
  return format_sockaddr(addr);
}

}  // namespace chronomerge
