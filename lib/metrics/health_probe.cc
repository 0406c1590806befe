#include "metrics/health_probe.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include <fmt/format.h>

namespace chronomerge {

namespace {

using Clock = std::chrono::steady_clock;

// Milliseconds left until `deadline`, at least 0.
int remaining(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

bool wait_for(int fd, short events, Clock::time_point deadline) {
  pollfd p{fd, events, 0};
  return ::poll(&p, 1, remaining(deadline)) == 1;
}

struct Url {
  std::string host;
  std::string port;
  std::string path;
};

bool parse_url(std::string_view url, Url& out, std::string& error) {
  constexpr std::string_view scheme = "http://";
  if (url.substr(0, scheme.size()) != scheme) {
    error = "expected a URL such as http://127.0.0.1:9464/healthz (plain http)";
    return false;
  }
  url.remove_prefix(scheme.size());
  const size_t slash = url.find('/');
  std::string_view authority = url.substr(0, slash);
  out.path = slash == std::string_view::npos ? "/healthz" : std::string(url.substr(slash));
  size_t colon = authority.rfind(':');
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      error = "unclosed '[' in the address";
      return false;
    }
    out.host = std::string(authority.substr(1, close - 1));
    colon = close + 1 < authority.size() && authority[close + 1] == ':' ? close + 1
                                                                        : std::string_view::npos;
  } else {
    out.host = std::string(authority.substr(0, colon));
  }
  if (colon == std::string_view::npos || colon + 1 >= authority.size()) {
    error = "the URL needs a port (http://HOST:PORT/...)";
    return false;
  }
  out.port = std::string(authority.substr(colon + 1));
  if (out.host.empty()) {
    error = "the URL needs a host";
    return false;
  }
  return true;
}

}  // namespace

bool probe_health(std::string_view url, uint64_t timeout_ms, std::string& error) {
  Url target;
  if (!parse_url(url, target, error)) return false;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(target.host.c_str(), target.port.c_str(), &hints, &found); rc != 0) {
    error = fmt::format("{}: {}", target.host, gai_strerror(rc));
    return false;
  }
  int fd = -1;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
    int so_error = errno;
    if (so_error == EINPROGRESS && wait_for(fd, POLLOUT, deadline)) {
      socklen_t len = sizeof so_error;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
      if (so_error == 0) break;
    }
    error = fmt::format("cannot connect to {}:{}: {}", target.host, target.port,
                        so_error == EINPROGRESS ? "timed out" : std::strerror(so_error));
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(found);
  if (fd < 0) return false;
  const std::string request =
      fmt::format("GET {} HTTP/1.0\r\nHost: {}\r\n\r\n", target.path, target.host);
  size_t sent = 0;
  while (sent < request.size()) {
    if (!wait_for(fd, POLLOUT, deadline)) break;
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  std::string answer;
  char buffer[512];
  while (answer.find("\r\n") == std::string::npos && answer.size() < 4096) {
    if (!wait_for(fd, POLLIN, deadline)) break;
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) break;
    answer.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  const std::string status = answer.substr(0, answer.find("\r\n"));
  if (sent < request.size() || status.empty()) {
    error = fmt::format("no answer from {} within {} ms", url, timeout_ms);
    return false;
  }
  // "HTTP/1.1 200 OK"
  if (status.size() >= 12 && status.compare(0, 5, "HTTP/") == 0 &&
      status.compare(8, 4, " 200") == 0) {
    return true;
  }
  error = fmt::format("{} answered \"{}\"", url, status);
  return false;
}

}  // namespace chronomerge
