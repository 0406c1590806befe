#include "uv/socket_address.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/core.h>

namespace chronomerge {

namespace {
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

int to_sockaddr(const HostPort& address, sockaddr_storage& out) {
  out = {};
  if (address.host.find(':') != std::string::npos) {
    return uv_ip6_addr(address.host.c_str(), address.port, reinterpret_cast<sockaddr_in6*>(&out));
  }
  return uv_ip4_addr(address.host.c_str(), address.port, reinterpret_cast<sockaddr_in*>(&out));
}

std::string format_sockaddr(const sockaddr_storage& address) {
  char host[64] = {};
  if (address.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&address);
    uv_ip6_name(a, host, sizeof(host));
    return fmt::format("[{}]:{}", host, ntohs(a->sin6_port));
  }
  const auto* a = reinterpret_cast<const sockaddr_in*>(&address);
  uv_ip4_name(a, host, sizeof(host));
  return fmt::format("{}:{}", host, ntohs(a->sin_port));
}

int listen_on(uv_loop_t* loop, UvHandle<AnyStream>& server, const HostPort* tcp,
              const std::string& unix_path, uv_connection_cb on_connection, void* owner,
              int backlog) {
  int rc;
  if (tcp) {
    rc = uv_tcp_init(loop, &server.get()->tcp);
    if (rc < 0) return rc;
    server.initialized(owner);
    sockaddr_storage addr;
    rc = to_sockaddr(*tcp, addr);
    if (rc < 0) return rc;
    rc = uv_tcp_bind(&server.get()->tcp, reinterpret_cast<sockaddr*>(&addr), 0);
  } else {
    rc = uv_pipe_init(loop, &server.get()->pipe, 0);
    if (rc < 0) return rc;
    server.initialized(owner);
    // A socket file from a crashed run would make bind fail with
    // EADDRINUSE; remove it unless someone is really listening there.
    if (!is_live_unix_socket(unix_path)) ::unlink(unix_path.c_str());
    rc = uv_pipe_bind(&server.get()->pipe, unix_path.c_str());
  }
  if (rc < 0) return rc;
  return uv_listen(server.stream(), backlog, on_connection);
}

std::string bound_address(const UvHandle<AnyStream>& server) {
  if (server.get()->handle.type != UV_TCP) return {};
  sockaddr_storage addr{};
  int len = sizeof(addr);
  if (uv_tcp_getsockname(&server.get()->tcp, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return {};
  }
  return format_sockaddr(addr);
}

std::unique_ptr<UvHandle<AnyStream>> accept_from(uv_stream_t* server, int& error) {
  auto client = std::make_unique<UvHandle<AnyStream>>();
  if (server->type == UV_TCP) {
    error = uv_tcp_init(server->loop, &client->get()->tcp);
  } else {
    error = uv_pipe_init(server->loop, &client->get()->pipe, 0);
  }
  if (error < 0) return nullptr;
  client->initialized(nullptr);
  error = uv_accept(server, client->stream());
  if (error < 0) return nullptr;  // the handle closes itself
  if (server->type == UV_TCP) uv_tcp_nodelay(&client->get()->tcp, 1);
  return client;
}

}  // namespace chronomerge
