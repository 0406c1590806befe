#include "net/host_port.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

namespace chronomerge {

std::optional<HostPort> parse_host_port(std::string_view text) {
  std::string host;
  std::string_view port;
  if (text.starts_with('[')) {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return std::nullopt;
    }
    host = std::string(text.substr(1, close - 1));
    port = text.substr(close + 2);
    in6_addr address;
    if (inet_pton(AF_INET6, host.c_str(), &address) != 1) return std::nullopt;
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = std::string(text.substr(0, colon));
    port = text.substr(colon + 1);
    if (host == "localhost") {
      // Resolved here, once, so the io layer binds and connects with plain
      // uv_ip4_addr(); "localhost" means the IPv4 loopback on every system
      // this daemon targets.
      host = "127.0.0.1";
    }
    in_addr address;
    if (inet_pton(AF_INET, host.c_str(), &address) != 1) return std::nullopt;
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  unsigned value = 0;
  std::from_chars(port.data(), port.data() + port.size(), value);
  if (value > 65535) return std::nullopt;
  return HostPort{std::move(host), static_cast<uint16_t>(value)};
}

std::string to_string(const HostPort& address) {
  if (address.host.find(':') != std::string::npos) {
    return fmt::format("[{}]:{}", address.host, address.port);
  }
  return fmt::format("{}:{}", address.host, address.port);
}

}  // namespace chronomerge
