#include "uv/socket_address.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <fmt/core.h>

namespace chronomerge {

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

}  // namespace chronomerge
