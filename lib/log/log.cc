#include "log/log.h"

#include <cstdio>
#include <string>

namespace chronomerge::log {
namespace {
LogLevel current_level = LogLevel::info;
}

void set_level(LogLevel level) {
  current_level = level;
}
LogLevel level() {
  return current_level;
}
bool enabled(LogLevel level) {
  return static_cast<int>(level) <= static_cast<int>(current_level);
}

void write(LogLevel level, std::string_view message) {
  if (!enabled(level)) return;
  std::string line = fmt::format("chronomerge {}: {}\n", to_string(level), message);
  // One fwrite per line keeps lines whole when several processes share stderr.
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

bool RateLimiter::allow(uint64_t now_ms, uint64_t& suppressed) {
  if (!started_ || now_ms - window_start_ >= interval_ms_) {
    started_ = true;
    window_start_ = now_ms;
    in_window_ = 0;
  }
  if (in_window_ < burst_) {
    ++in_window_;
    suppressed = suppressed_;
    suppressed_ = 0;
    return true;
  }
  ++suppressed_;
  suppressed = 0;
  return false;
}

std::string excerpt(std::string_view line, size_t max) {
  std::string out;
  size_t n = line.size() < max ? line.size() : max;
  out.reserve(n + 8);
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(line[i]);
    if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  if (line.size() > max) out += fmt::format("... ({} bytes)", line.size());
  return out;
}

}  // namespace chronomerge::log
