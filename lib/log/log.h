// The one logging entry point: leveled lines on stderr, one per event.
//
// journald and Docker add timestamps, so lines carry only the level and the
// message. Loop thread only (the level and the rate limiters are unguarded).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/core.h>

#include "log/log_level.h"

namespace chronomerge::log {

void set_level(LogLevel level);
LogLevel level();

// How lines look; the default (plain text, no timestamp) is the one-shot
// command's, like any command-line tool. The daemon sets it at start:
// - `journal`: standard error is the systemd journal: each line starts
//   with its syslog priority ("<3>" error ... "<7>" debug), which journald
//   takes as the entry's priority (`journalctl -p warning`); journald adds
//   the time.
// - `timestamps`: each line starts with the time, RFC 3339 in UTC with
//   milliseconds (elsewhere: a terminal, a file, Docker's log).
// - `format` json: {"time", "level", "message", and "feed", "member",
//   "output", "client" when the message is about one}, one per line.
struct Style {
  LogFormat format = LogFormat::text;
  bool journal = false;
  bool timestamps = false;
};
void set_style(Style style);
Style style();
// Whether standard error is the journal: JOURNAL_STREAM ("device:inode",
// set by systemd) names the very file standard error is (the variable is
// inherited by children whose stderr may be elsewhere).
bool stderr_is_journal();
// The line write() would write for `message` at `level` at `unix_ms`,
// without the newline (tests).
std::string format_line(LogLevel level, std::string_view message, int64_t unix_ms);
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

// Where a rate-limited event comes from, for its summary line: {"feed",
// "in"} gives "feed in: 12 more ...", {"metrics", ""} "metrics: ...".
// Views: only read during the call.
struct Source {
  std::string_view kind;
  std::string_view name;
};

// RateLimiter: the one way to log an event that can come by the thousand (a
// refused producer or client, a disconnect, an idle/active transition, a
// malformed or late line). In every window of `interval_ms` the first
// `burst` events are logged in full; the rest are only counted, and one
// summary line per window says how many were not logged, by kind:
//
//   chronomerge warn: feed in: 1,234 more producer refusals in the last 10 s
//
// The summary is written when the window is over: at the next event after
// it, when the owner calls flush() (from a timer armed for summary_due()),
// or when the limiter is destroyed or replaced (the time then says how long
// the counted events spanned). The counters in the metrics are the complete
// record; the log stays readable under a flood.
//
// Pure: the caller passes the loop time. Movable (a moved-from limiter has
// nothing pending); not copyable, so a summary is written once.
class RateLimiter {
 public:
  explicit RateLimiter(uint32_t burst = 10, uint64_t interval_ms = 10000)
      : burst_(burst), interval_ms_(interval_ms) {}
  ~RateLimiter();
  RateLimiter(RateLimiter&& other) noexcept;
  // Writes this limiter's pending summary first.
  RateLimiter& operator=(RateLimiter&& other) noexcept;
  RateLimiter(const RateLimiter&) = delete;
  RateLimiter& operator=(const RateLimiter&) = delete;

  // Logs one event of kind `what` (a plural noun: "producer refusals") at
  // `level`, formatted only if it is written. Events at a level the log
  // does not show are neither written nor counted. True if written.
  template <typename... Args>
  bool log(uint64_t now_ms, LogLevel level, Source source, std::string_view what,
           fmt::format_string<Args...> format, Args&&... args) {
    if (!enabled(level) || !admit(now_ms, level, source, what)) return false;
    write(level, fmt::format(format, std::forward<Args>(args)...));
    return true;
  }
  // The decision of log() without the writing: true if the caller may
  // write its line now, false if the event was counted for the summary.
  bool admit(uint64_t now_ms, LogLevel level, Source source, std::string_view what);
  // Writes the summary of a window that is over, if events were counted
  // in it. Any time is fine: too early does nothing.
  void flush(uint64_t now_ms);
  // The loop time at which flush() will write a summary; nullopt while
  // nothing is counted.
  std::optional<uint64_t> summary_due() const;
  // Events counted and not logged since construction (summaries written
  // or not).
  uint64_t suppressed_total() const { return suppressed_total_; }

  // The older interface, for warnings whose caller writes its own count:
  // true if the caller may log now; `suppressed` receives the number of
  // events refused since the last allowed one (report it alongside).
  // Shares the window with log(); such events get no summary line.
  bool allow(uint64_t now_ms, uint64_t& suppressed);

 private:
  struct Counted {
    std::string what;
    std::string source;  // "feed in"; empty once several sources counted
    bool several = false;
    LogLevel level;
    uint64_t count = 0;
  };
  // Starts a new window at `now_ms` if the current one is over (writing
  // its summary first).
  void roll(uint64_t now_ms);
  void write_summary(uint64_t end_ms);

  uint32_t burst_;
  uint64_t interval_ms_;
  uint64_t window_start_ = 0;
  uint32_t in_window_ = 0;
  uint64_t suppressed_ = 0;  // allow(): refused since the last allowed
  bool started_ = false;
  std::vector<Counted> counted_;  // this window's events not logged
  uint64_t last_counted_ms_ = 0;
  uint64_t suppressed_total_ = 0;
};

// 1234567 as "1,234,567", for counts in log lines.
std::string group_digits(uint64_t value);

// A short, printable excerpt of a line for log messages: at most `max`
// bytes, control bytes escaped, "..." when cut.
std::string excerpt(std::string_view line, size_t max = 80);

}  // namespace chronomerge::log
