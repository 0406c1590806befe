// HostPort: a socket address as the configuration writes it.
//
// Plain data and text, no sockets: the configuration parses it, the io
// layer (uv/socket_address.h) turns it into a sockaddr.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace chronomerge {

// "host:port" or "[v6]:port"; port 0 asks the kernel for a free one.
// `host` is an IPv4 or IPv6 literal without brackets, ready for
// uv_ip4_addr()/uv_ip6_addr(): parse_host_port() turns "localhost" into
// "127.0.0.1" and accepts no other names.
struct HostPort {
  std::string host;
  uint16_t port = 0;
  friend bool operator==(const HostPort&, const HostPort&) = default;
};
std::optional<HostPort> parse_host_port(std::string_view text);
// "127.0.0.1:7070", "[::1]:7070".
std::string to_string(const HostPort& address);

}  // namespace chronomerge
