// End to end: the status page at / on the metrics port, in a real browser.
// Headless Chromium (Debian's `chromium`) loads the page against a daemon
// fed by the simulator and dumps the DOM its script built: a feed's record
// count rises between two loads and agrees with /metrics, and a record
// carrying HTML shows in the live tail as text, never as markup. Skipped,
// with a message, where Chromium is not installed (CI installs it).
#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <regex>
#include <string>

#include "harness.h"

using namespace chronomerge::e2e;
using nlohmann::json;

namespace {

bool have_chromium() {
  return std::system("command -v chromium > /dev/null 2>&1") == 0;
}

// The DOM after the page's script ran for a few seconds of virtual time.
std::string load_page(const TempDir& dir, uint16_t port) {
  const std::string out = dir / "dom.html";
  const std::string command =
      "timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage "
      "--user-data-dir=" +
      (dir / "chromium") + " --virtual-time-budget=2500 --dump-dom http://" + loopback(port) +
      "/ > " + out + " 2> " + (dir / "chromium.log");
  CHECK(std::system(command.c_str()) == 0);
  return read_file(out);
}

// The records count in the row of `feed`.
std::optional<long> records_of(const std::string& dom, const std::string& feed) {
  const std::regex row("id=\"feed-" + feed + "\">.*?<td class=\"records\">([0-9]+)</td>");
  std::smatch match;
  if (!std::regex_search(dom, match, row)) return std::nullopt;
  return std::stol(match[1]);
}

}  // namespace

TEST_CASE("the status page, in a real browser") {
  if (!have_chromium()) {
    MESSAGE("chromium is not installed (Debian's chromium package): the status page is not tested");
    return;
  }
  TempDir dir;
  json config = {{"key_unit", "ms"},
                 {"feeds", {{{"name", "bus"}, {"type", "simulate"}, {"rate", 5}}, tcp_feed("in")}},
                 {"outputs", {{{"name", "out"}, {"type", "file"}, {"path", dir / "out"}}}},
                 {"metrics", {{"listen", loopback(0)}, {"tail", true}}}};
  config["feeds"][1]["idle_timeout_ms"] = 200;
  Daemon daemon(dir, config);
  const uint16_t port = daemon.metrics_port();
  // A record with markup in it, as a producer might send.
  Socket producer = connect_tcp(daemon.feed_port("in"));
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  REQUIRE(write_all(
      producer, json{{"time", now_ms}, {"note", "<img src=x onerror=alert(1)>"}}.dump() + "\n"));
  REQUIRE(wait_sample(
              port, "chronomerge_feed_records_out_total{feed=\"in\"}",
              [](double v) { return v == 1; }, 20s) == 1);

  const std::string first = load_page(dir, port);
  const auto scraped = scrape(port, "chronomerge_feed_records_total{feed=\"bus\"}");
  const std::string second = load_page(dir, port);
  INFO("first page:\n", first);
  const auto count1 = records_of(first, "bus");
  const auto count2 = records_of(second, "bus");
  REQUIRE(count1);
  REQUIRE(count2);
  REQUIRE(scraped);
  CHECK(*count1 > 0);
  CHECK(*count1 <= *scraped);  // the page showed what the metrics counted, then
  CHECK(*count2 > *count1);    // and the count rose with the simulator
  // The markup is text in the tail, not an element. The tail holds the
  // newest 50 records, ten seconds of the simulator's: the first load, right
  // after the record was merged, has it, while a slow second start of the
  // browser may not.
  CHECK(first.find("&lt;img src=x onerror=alert(1)&gt;") != std::string::npos);
  CHECK(first.find("<img") == std::string::npos);
  CHECK(second.find("<img") == std::string::npos);
  CHECK(daemon.stop().code == 0);
}
