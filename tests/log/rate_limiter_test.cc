// The log's RateLimiter: the first events of a window are written, the rest
// counted into one summary line.
#include <fcntl.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "log/log.h"

namespace cmlog = chronomerge::log;
using chronomerge::LogLevel;

namespace {

// Everything written to standard error (where the log goes) while alive.
class CapturedStderr {
 public:
  CapturedStderr() {
    std::fflush(stderr);
    char path[] = "/tmp/chronomerge-stderr-XXXXXX";
    int fd = ::mkstemp(path);
    REQUIRE(fd >= 0);
    path_ = path;
    saved_ = ::dup(2);
    ::dup2(fd, 2);
    ::close(fd);
  }
  ~CapturedStderr() {
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    ::unlink(path_.c_str());
  }
  CapturedStderr(const CapturedStderr&) = delete;
  CapturedStderr& operator=(const CapturedStderr&) = delete;

  // The lines written so far.
  std::vector<std::string> lines() {
    std::fflush(stderr);
    std::ifstream in(path_);
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  }

 private:
  std::string path_;
  int saved_ = -1;
};

size_t count_containing(const std::vector<std::string>& lines, std::string_view needle) {
  size_t n = 0;
  for (const std::string& line : lines) n += line.find(needle) != std::string::npos;
  return n;
}

const cmlog::Source feed_a{"feed", "a"};

}  // namespace

TEST_CASE("RateLimiter logs the first events of a window, then one summary with the count") {
  CapturedStderr captured;

  SUBCASE("the first `burst` events are written, the rest counted until the window is over") {
    cmlog::RateLimiter limiter(3, 1000);
    int written = 0;
    for (uint64_t t = 0; t < 10; ++t) {
      written += limiter.log(t, LogLevel::warn, feed_a, "producer refusals", "refused #{}", t);
    }
    CHECK(written == 3);
    CHECK(limiter.suppressed_total() == 7);
    CHECK(limiter.summary_due() == 1000);
    limiter.flush(999);  // too early: nothing
    CHECK(count_containing(captured.lines(), "more") == 0);
    limiter.flush(1000);
    std::vector<std::string> lines = captured.lines();
    REQUIRE(lines.size() == 4);
    CHECK(lines[0] == "chronomerge warn: refused #0");
    CHECK(lines[3] == "chronomerge warn: feed a: 7 more producer refusals in the last 1 s");
    CHECK(limiter.summary_due() == std::nullopt);
    // A new window: written again.
    CHECK(limiter.log(1500, LogLevel::warn, feed_a, "producer refusals", "refused again"));
  }

  SUBCASE("the next event after the window writes the summary before its own line") {
    cmlog::RateLimiter limiter(1, 10000);
    for (int i = 0; i < 1235; ++i) {
      limiter.log(5, LogLevel::warn, feed_a, "producer refusals", "refused");
    }
    limiter.log(20000, LogLevel::warn, feed_a, "producer refusals", "refused later");
    std::vector<std::string> lines = captured.lines();
    REQUIRE(lines.size() == 3);
    CHECK(lines[1] == "chronomerge warn: feed a: 1,234 more producer refusals in the last 10 s");
    CHECK(lines[2] == "chronomerge warn: refused later");
  }

  SUBCASE("one summary names every kind counted, each source, at the most severe level") {
    cmlog::RateLimiter limiter(0, 1000);
    limiter.log(0, LogLevel::info, feed_a, "producer connects", "connected");
    limiter.log(0, LogLevel::info, feed_a, "producer connects", "connected");
    limiter.log(1, LogLevel::warn, feed_a, "producer refusals", "refused");
    limiter.flush(1000);
    limiter.log(2000, LogLevel::info, {"feed", "a"}, "idle/active transitions", "idle");
    limiter.log(2001, LogLevel::info, {"feed", "b"}, "idle/active transitions", "idle");
    limiter.log(2002, LogLevel::info, {"output", "c"}, "client connects", "connected");
    limiter.flush(3000);
    std::vector<std::string> lines = captured.lines();
    REQUIRE(lines.size() == 2);
    CHECK(lines[0] ==
          "chronomerge warn: feed a: 2 more producer connects, 1 more producer refusals in the "
          "last 1 s");
    CHECK(lines[1] ==
          "chronomerge info: 2 more idle/active transitions (several feeds), 1 more client "
          "connects (output c) in the last 1 s");
  }

  SUBCASE("a limiter that goes or is replaced writes what it still counted") {
    {
      cmlog::RateLimiter limiter(0, 10000);
      limiter.log(100, LogLevel::warn, feed_a, "malformed lines", "skipped");
      limiter.log(2600, LogLevel::warn, feed_a, "malformed lines", "skipped");
      cmlog::RateLimiter moved = std::move(limiter);  // the summary goes with it, once
    }
    cmlog::RateLimiter replaced(0, 10000);
    replaced.log(0, LogLevel::warn, feed_a, "late records", "late");
    replaced = cmlog::RateLimiter();
    std::vector<std::string> lines = captured.lines();
    REQUIRE(lines.size() == 2);
    CHECK(lines[0] == "chronomerge warn: feed a: 2 more malformed lines in the last 3 s");
    CHECK(lines[1] == "chronomerge warn: feed a: 1 more late records in the last 1 s");
  }

  SUBCASE("events at a level the log does not show are neither written nor counted") {
    cmlog::set_level(LogLevel::warn);
    cmlog::RateLimiter limiter(1, 1000);
    CHECK_FALSE(limiter.log(0, LogLevel::info, feed_a, "producer connects", "connected"));
    CHECK(limiter.log(0, LogLevel::warn, feed_a, "producer refusals", "refused"));
    cmlog::set_level(LogLevel::info);
    CHECK(limiter.suppressed_total() == 0);
    CHECK(captured.lines().size() == 1);
  }

  CHECK(cmlog::group_digits(0) == "0");
  CHECK(cmlog::group_digits(999) == "999");
  CHECK(cmlog::group_digits(1000) == "1,000");
  CHECK(cmlog::group_digits(1234567) == "1,234,567");
}
