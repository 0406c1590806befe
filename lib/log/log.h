// The one logging entry point: leveled lines on stderr, one per event.
//
// journald and Docker add timestamps, so lines carry only the level and the
// message. Loop thread only (the level and the rate limiters are unguarded).
#pragma once

#include <cstdint>
#include <string_view>

#include <fmt/core.h>

#include "config/config.h"

namespace chronomerge::log {

void set_level(LogLevel level);
LogLevel level();
bool enabled(LogLevel level);

void write(LogLevel level, std::string_view message);

template <typename... Args>
void error(fmt::format_string<Args...> format, Args&&... args) {
  write(LogLevel::error, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> format, Args&&... args) {
  if (enabled(LogLevel::warn))
    write(LogLevel::warn, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> format, Args&&... args) {
  if (enabled(LogLevel::info))
    write(LogLevel::info, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
void debug(fmt::format_string<Args...> format, Args&&... args) {
  if (enabled(LogLevel::debug))
    write(LogLevel::debug, fmt::format(format, std::forward<Args>(args)...));
}

// Allows at most `burst` events per `interval_ms`, then counts the rest and
// reports how many were suppressed when the next window opens. Used for
// per-record warnings so a flood of bad lines cannot flood the log.
class RateLimiter {
 public:
  explicit RateLimiter(uint32_t burst = 10, uint64_t interval_ms = 10000)
      : burst_(burst), interval_ms_(interval_ms) {}

  // True if the caller may log now. `suppressed` receives the number of
  // events dropped since the last allowed one (report it alongside).
  bool allow(uint64_t now_ms, uint64_t& suppressed);

 private:
  uint32_t burst_;
  uint64_t interval_ms_;
  uint64_t window_start_ = 0;
  uint32_t in_window_ = 0;
  uint64_t suppressed_ = 0;
  bool started_ = false;
};

// A short, printable excerpt of a line for log messages: at most `max`
// bytes, control bytes escaped, "..." when cut.
std::string excerpt(std::string_view line, size_t max = 80);

}  // namespace chronomerge::log
