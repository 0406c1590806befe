#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "log/log.h"

using namespace chronomerge;

namespace {

// 2026-11-30T05:06:07.089Z
constexpr int64_t when = 1'796'015'167'089;

struct StyleScope {
  explicit StyleScope(log::Style style) { log::set_style(style); }
  ~StyleScope() { log::set_style({}); }
};

}  // namespace

TEST_CASE("log line styles") {
  SUBCASE("plain, as a command-line tool writes") {
    CHECK(log::format_line(LogLevel::warn, "feed a: late", when) ==
          "chronomerge warn: feed a: late");
  }
  SUBCASE("with an RFC 3339 timestamp elsewhere than the journal") {
    StyleScope scope({LogFormat::text, false, true});
    CHECK(log::format_line(LogLevel::info, "running", when) ==
          "2026-11-30T05:06:07.089Z chronomerge info: running");
  }
  SUBCASE("with the syslog priority, and no timestamp, for the journal") {
    StyleScope scope({LogFormat::text, true, true});
    CHECK(log::format_line(LogLevel::error, "x", when) == "<3>chronomerge error: x");
    CHECK(log::format_line(LogLevel::warn, "x", when) == "<4>chronomerge warn: x");
    CHECK(log::format_line(LogLevel::info, "x", when) == "<6>chronomerge info: x");
    CHECK(log::format_line(LogLevel::debug, "x", when) == "<7>chronomerge debug: x");
  }
  SUBCASE("as one JSON object, with what the message is about as fields") {
    StyleScope scope({LogFormat::json, false, true});
    const auto line = nlohmann::json::parse(
        log::format_line(LogLevel::warn, "feed buses/bus-7: late record \"x\"\t", when));
    CHECK(line["time"] == "2026-11-30T05:06:07.089Z");
    CHECK(line["level"] == "warn");
    CHECK(line["message"] == "feed buses/bus-7: late record \"x\"\t");
    CHECK(line["feed"] == "buses/bus-7");
    CHECK(line["member"] == "bus-7");
    const auto client = nlohmann::json::parse(log::format_line(
        LogLevel::info, "output out: client #12 127.0.0.1:4000 connected (1 now)", when));
    CHECK(client["output"] == "out");
    CHECK(client["client"] == 12);
    const auto plain = nlohmann::json::parse(log::format_line(LogLevel::info, "running", when));
    CHECK_FALSE(plain.contains("feed"));
  }
}
