#include "net/service_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

namespace chronomerge {

namespace {

// Parses all of `text` as a positive decimal number.
template <typename T>
std::optional<T> parse_positive(const char* text) {
  if (text == nullptr) return std::nullopt;
  const char* end = text + std::strlen(text);
  T value{};
  auto [ptr, ec] = std::from_chars(text, end, value);
  if (ec != std::errc() || ptr != end || value <= 0) return std::nullopt;
  return value;
}

}  // namespace

std::string notify_service_manager(std::string_view socket_name, std::string_view state) {
  if (socket_name.empty()) return {};
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  // A path, or an abstract name after '@' (its first byte is then '\0').
  if (socket_name.size() >= sizeof(address.sun_path) ||
      (socket_name[0] != '/' && socket_name[0] != '@')) {
    return fmt::format("NOTIFY_SOCKET '{}' is not a socket path or an abstract name", socket_name);
  }
  socket_name.copy(address.sun_path, socket_name.size());
  if (socket_name[0] == '@') address.sun_path[0] = '\0';
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_name.size());

  const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fmt::format("notify socket {}: socket(): {}", socket_name, strerror(errno));
  std::string error;
  ssize_t sent;
  do {
    sent = sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                  reinterpret_cast<const sockaddr*>(&address), length);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) {
    error = fmt::format("notify socket {}: {}", socket_name, strerror(errno));
  } else if (static_cast<size_t>(sent) != state.size()) {
    error = fmt::format("notify socket {}: sent {} of {} bytes", socket_name, sent, state.size());
  }
  close(fd);
  return error;
}

std::string notify_service_manager(std::string_view state) {
  const char* name = std::getenv("NOTIFY_SOCKET");
  return notify_service_manager(name ? name : "", state);
}

std::optional<std::chrono::microseconds> service_watchdog_interval(const char* usec,
                                                                   const char* pid, pid_t self) {
  const auto interval = parse_positive<uint64_t>(usec);
  if (!interval) return std::nullopt;
  if (pid != nullptr && parse_positive<pid_t>(pid) != self) return std::nullopt;
  constexpr uint64_t longest = std::chrono::microseconds::max().count();
  return std::chrono::microseconds(std::min(*interval, longest));
}

std::optional<std::chrono::microseconds> service_watchdog_interval() {
  return service_watchdog_interval(std::getenv("WATCHDOG_USEC"), std::getenv("WATCHDOG_PID"),
                                   getpid());
}

}  // namespace chronomerge
