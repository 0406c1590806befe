#include "log/log.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iterator>
#include <string>
#include <utility>

#include "record/json_string.h"

namespace chronomerge {

std::string_view to_string(LogLevel level) {
  switch (level) {
    case LogLevel::error:
      return "error";
    case LogLevel::warn:
      return "warn";
    case LogLevel::info:
      return "info";
    case LogLevel::debug:
      return "debug";
  }
  return "?";
}

}  // namespace chronomerge

namespace chronomerge::log {
namespace {
LogLevel current_level = LogLevel::info;
Style current_style;

// syslog priorities: err, warning, info, debug.
int priority_of(LogLevel level) {
  switch (level) {
    case LogLevel::error:
      return 3;
    case LogLevel::warn:
      return 4;
    case LogLevel::info:
      return 6;
    case LogLevel::debug:
      return 7;
  }
  return 6;
}

std::string rfc3339_ms(int64_t unix_ms) {
  const std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", utc.tm_year + 1900,
                     utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                     unix_ms % 1000);
}

// What a message is about, from how messages start: "feed NAME: ...",
// "output NAME: ...", a fleet member "feed FLEET/MEMBER: ...", a client
// "... client #N ...".
void append_context(std::string& out, std::string_view message) {
  for (std::string_view kind : {std::string_view("feed"), std::string_view("output")}) {
    if (message.size() <= kind.size() + 1 || message.substr(0, kind.size()) != kind ||
        message[kind.size()] != ' ') {
      continue;
    }
    const std::string_view rest = message.substr(kind.size() + 1);
    const size_t colon = rest.find(": ");
    if (colon == std::string_view::npos ||
        rest.substr(0, colon).find(' ') != std::string_view::npos) {
      continue;
    }
    const std::string_view name = rest.substr(0, colon);
    out += ",\"";
    out += kind;
    out += "\":";
    append_json_string(out, name);
    if (kind == "feed" && name.find('/') != std::string_view::npos) {
      out += ",\"member\":";
      append_json_string(out, name.substr(name.find('/') + 1));
    }
    break;
  }
  const size_t client = message.find("client #");
  if (client != std::string_view::npos) {
    size_t end = client + 8;
    while (end < message.size() && message[end] >= '0' && message[end] <= '9') ++end;
    if (end > client + 8) {
      out += ",\"client\":";
      out += message.substr(client + 8, end - client - 8);
    }
  }
}

// "feed in", or "metrics" for a source without a name.
std::string label_of(Source source) {
  if (source.name.empty()) return std::string(source.kind);
  return fmt::format("{} {}", source.kind, source.name);
}

// Whether `label` is label_of(source), without building that string.
bool same_source(const std::string& label, Source source) {
  std::string_view text = label;
  if (source.name.empty()) return text == source.kind;
  return text.size() == source.kind.size() + 1 + source.name.size() &&
         text.substr(0, source.kind.size()) == source.kind && text[source.kind.size()] == ' ' &&
         text.substr(source.kind.size() + 1) == source.name;
}
}  // namespace

void set_level(LogLevel level) {
  current_level = level;
}
LogLevel level() {
  return current_level;
}
bool enabled(LogLevel level) {
  return static_cast<int>(level) <= static_cast<int>(current_level);
}

void set_style(Style style) {
  current_style = style;
}
Style style() {
  return current_style;
}

bool stderr_is_journal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (stream == nullptr) return false;
  unsigned long long device = 0, inode = 0;
  if (std::sscanf(stream, "%llu:%llu", &device, &inode) != 2) return false;
  struct stat about {};
  if (::fstat(2, &about) != 0) return false;
  return about.st_dev == device && about.st_ino == inode;
}

std::string format_line(LogLevel level, std::string_view message, int64_t unix_ms) {
  std::string line;
  if (current_style.journal) line = fmt::format("<{}>", priority_of(level));
  if (current_style.format == LogFormat::json) {
    line += "{\"time\":\"";
    line += rfc3339_ms(unix_ms);
    line += "\",\"level\":\"";
    line += to_string(level);
    line += "\",\"message\":";
    append_json_string(line, message);
    append_context(line, message);
    line += '}';
    return line;
  }
  if (current_style.timestamps && !current_style.journal) {
    line += rfc3339_ms(unix_ms);
    line += ' ';
  }
  // fmt::format, not format_to: the fuzz targets (clang) link this file
  // against Debian's libfmt (GCC), whose vformat_to<char> instantiation
  // clang mangles differently.
  line += fmt::format("chronomerge {}: {}", to_string(level), message);
  return line;
}

void write(LogLevel level, std::string_view message) {
  if (!enabled(level)) return;
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  std::string line = format_line(level, message, now);
  line += '\n';
  // One fwrite per line keeps lines whole when several processes share stderr.
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

RateLimiter::~RateLimiter() {
  if (!counted_.empty()) write_summary(last_counted_ms_);
}

RateLimiter::RateLimiter(RateLimiter&& other) noexcept
    : burst_(other.burst_),
      interval_ms_(other.interval_ms_),
      window_start_(other.window_start_),
      in_window_(other.in_window_),
      suppressed_(other.suppressed_),
      started_(other.started_),
      counted_(std::move(other.counted_)),
      last_counted_ms_(other.last_counted_ms_),
      suppressed_total_(other.suppressed_total_) {
  other.counted_.clear();
}

RateLimiter& RateLimiter::operator=(RateLimiter&& other) noexcept {
  if (this == &other) return *this;
  if (!counted_.empty()) write_summary(last_counted_ms_);
  burst_ = other.burst_;
  interval_ms_ = other.interval_ms_;
  window_start_ = other.window_start_;
  in_window_ = other.in_window_;
  suppressed_ = other.suppressed_;
  started_ = other.started_;
  counted_ = std::move(other.counted_);
  other.counted_.clear();
  last_counted_ms_ = other.last_counted_ms_;
  suppressed_total_ = other.suppressed_total_;
  return *this;
}

void RateLimiter::roll(uint64_t now_ms) {
  if (started_ && now_ms - window_start_ < interval_ms_) return;
  if (!counted_.empty()) write_summary(window_start_ + interval_ms_);
  started_ = true;
  window_start_ = now_ms;
  in_window_ = 0;
}

bool RateLimiter::allow(uint64_t now_ms, uint64_t& suppressed) {
  roll(now_ms);
  if (in_window_ < burst_) {
    ++in_window_;
    suppressed = suppressed_;
    suppressed_ = 0;
    return true;
  }
  ++suppressed_;
  ++suppressed_total_;
  suppressed = 0;
  return false;
}

bool RateLimiter::admit(uint64_t now_ms, LogLevel level, Source source, std::string_view what) {
  roll(now_ms);
  if (in_window_ < burst_) {
    ++in_window_;
    return true;
  }
  ++suppressed_total_;
  last_counted_ms_ = now_ms;
  auto it = std::find_if(counted_.begin(), counted_.end(),
                         [&](const Counted& c) { return c.what == what; });
  if (it == counted_.end()) {
    counted_.push_back(Counted{std::string(what), label_of(source), false, level, 0});
    it = std::prev(counted_.end());
  } else if (!it->several && !same_source(it->source, source)) {
    it->several = true;
    it->source = std::string(source.kind);
  }
  if (static_cast<int>(level) < static_cast<int>(it->level)) it->level = level;
  ++it->count;
  return false;
}

void RateLimiter::flush(uint64_t now_ms) {
  if (!counted_.empty() && now_ms - window_start_ >= interval_ms_) {
    write_summary(window_start_ + interval_ms_);
  }
}

std::optional<uint64_t> RateLimiter::summary_due() const {
  if (counted_.empty()) return std::nullopt;
  return window_start_ + interval_ms_;
}

// "feed in: 1,234 more producer refusals, 3 more accept errors in the last
// 10 s", or, when the events of a kind came from several sources, "1,234
// more idle/active transitions (several feeds) in the last 10 s".
void RateLimiter::write_summary(uint64_t end_ms) {
  std::vector<Counted> counted = std::move(counted_);
  counted_.clear();
  bool one_source = std::all_of(counted.begin(), counted.end(), [&](const Counted& c) {
    return !c.several && c.source == counted.front().source;
  });
  LogLevel level = LogLevel::debug;
  std::string text = one_source ? counted.front().source + ": " : std::string();
  for (size_t i = 0; i < counted.size(); ++i) {
    const Counted& c = counted[i];
    if (i > 0) text += ", ";
    text += fmt::format("{} more {}", group_digits(c.count), c.what);
    if (!one_source) {
      text += c.several ? fmt::format(" (several {}s)", c.source) : fmt::format(" ({})", c.source);
    }
    if (static_cast<int>(c.level) < static_cast<int>(level)) level = c.level;
  }
  uint64_t span_ms = end_ms > window_start_ ? end_ms - window_start_ : 0;
  text += fmt::format(" in the last {} s", std::max<uint64_t>(1, (span_ms + 999) / 1000));
  write(level, text);
}

std::string group_digits(uint64_t value) {
  std::string digits = fmt::format("{}", value);
  std::string out;
  out.reserve(digits.size() + digits.size() / 3);
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
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
