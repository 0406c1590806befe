// render_metrics on Pipelines run on a real loop: the numbers in the text are
// what was fed, the text is valid exposition format (checked by promtool
// when it is installed), and label values are escaped.
#include "metrics/metrics.h"

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <uv.h>

#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>

#include "daemon/pipeline.h"
#include "io/loop_support.h"
#include "record/simd_level.h"

using namespace chronomerge;
using namespace chronomerge::testing;
namespace fs = std::filesystem;

namespace {

// Runs a pipeline over finite inputs to its end, then renders its metrics.
std::string run_and_render(uv_loop_t* loop, const Config& config, double wall_clock,
                           const MetricsExtras& extras = {}) {
  Pipeline pipeline(loop, config, false);
  CHECK(run_to_end(loop, pipeline));
  return render_metrics(pipeline.metrics_snapshot(), extras, wall_clock);
}

// The value of one series ("name{labels}"), if the text has it.
std::optional<std::string> value_of(const std::string& text, const std::string& series) {
  std::optional<std::string> found;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      REQUIRE_MESSAGE(!found, "duplicate series " << series);
      found = line.substr(series.size() + 1);
    }
  }
  return found;
}

size_t count_lines_starting(const std::string& text, const std::string& prefix) {
  size_t n = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) n += line.rfind(prefix, 0) == 0;
  return n;
}

const char* const promtool = "/usr/bin/promtool";

// `promtool check metrics` on the text, when promtool is installed: it
// parses the exposition and lints names, types and help.
void check_with_promtool(const TempDir& dir, const std::string& text) {
  if (!fs::exists(promtool)) {
    MESSAGE("promtool not installed: exposition not checked by promtool");
    return;
  }
  std::string path = dir.file("metrics.txt", text);
  std::string command = std::string(promtool) + " check metrics < '" + path + "' 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  char buffer[512];
  while (size_t n = fread(buffer, 1, sizeof(buffer), pipe)) output.append(buffer, n);
  int status = pclose(pipe);
  INFO("promtool said: " << output);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

}  // namespace

TEST_CASE("escape_label_value escapes backslash, double quote and newline only") {
  CHECK(escape_label_value("") == "");
  CHECK(escape_label_value("plain-name_1.2") == "plain-name_1.2");
  CHECK(escape_label_value("a\\b") == "a\\\\b");
  CHECK(escape_label_value("say \"hi\"") == "say \\\"hi\\\"");
  CHECK(escape_label_value("two\nlines") == "two\\nlines");
  CHECK(escape_label_value("\\\"\n") == "\\\\\\\"\\n");
  CHECK(escape_label_value("tab\there, caf\xc3\xa9") == "tab\there, caf\xc3\xa9");
}

TEST_CASE("render_metrics") {
  TempDir dir;
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  const std::string out = (dir.path / "out").string();

  SUBCASE("counts what one file feed delivered, and passes promtool") {
    // 3 good lines, 1 malformed, 1 late (2 after 3); sorted otherwise.
    const std::string input = "{\"time\":1}\n{\"time\":3}\nnot json\n{\"time\":2}\n{\"time\":5}\n";
    Config config;
    config.feeds.push_back(file_feed("f1", dir.file("in", input)));
    config.outputs.push_back(file_output(out));
    MetricsExtras extras;
    extras.reloads_ok = 2;
    extras.reloads_failed = 1;
    extras.notify_failures = 3;
    extras.draining = true;
    extras.start_time_seconds = 1714564800.25;
    std::string text = run_and_render(&loop, config, 1714564900, extras);
    INFO(text);

    auto feed = [](const std::string& name) { return name + "{feed=\"f1\"}"; };
    CHECK(value_of(text, feed("chronomerge_feed_records_total")) == "4");
    CHECK(value_of(text, feed("chronomerge_feed_records_out_total")) == "3");
    CHECK(value_of(text, feed("chronomerge_feed_bytes_total")) == std::to_string(input.size()));
    CHECK(value_of(text, "chronomerge_feed_malformed_total{feed=\"f1\",reason=\"not_json\"}") ==
          "1");
    for (const char* reason :
         {"not_object", "missing_key", "wrong_key_type", "key_overflow", "too_long", "too_deep"}) {
      CAPTURE(reason);
      CHECK(value_of(text, std::string("chronomerge_feed_malformed_total{feed=\"f1\",reason=\"") +
                               reason + "\"}") == "0");
    }
    CHECK(value_of(text, feed("chronomerge_feed_late_total")) == "1");
    CHECK(value_of(text, feed("chronomerge_feed_heartbeats_total")) == "0");
    CHECK(value_of(text, feed("chronomerge_feed_queue_bytes")) == "0");
    CHECK(value_of(text, feed("chronomerge_feed_paused")) == "0");
    CHECK(value_of(text, feed("chronomerge_feed_pauses_total")) == "0");
    CHECK(value_of(text, feed("chronomerge_feed_idle")) == "0");
    CHECK(value_of(text, feed("chronomerge_feed_connected")) == "0");
    CHECK(value_of(text, feed("chronomerge_feed_connections_total")) == "1");
    CHECK(value_of(text, feed("chronomerge_feed_last_key")) == "5");
    CHECK(value_of(text, "chronomerge_feed_state{feed=\"f1\",state=\"ended\"}") == "1");
    CHECK(value_of(text, "chronomerge_feed_state{feed=\"f1\",state=\"ready\"}") == "0");

    // The late record is emitted (policy emit) but is not part of the
    // feed's in-order count.
    CHECK(value_of(text, "chronomerge_records_out_total") == "4");
    CHECK(value_of(text, "chronomerge_output_bytes_total") == "44");
    CHECK(value_of(text, "chronomerge_frontier") == "5");
    CHECK_FALSE(value_of(text, "chronomerge_frontier_lag_seconds"));  // 5 is not a time
    // One-shot: no retention, but the segment being filled stays.
    CHECK(value_of(text, "chronomerge_output_log_retained_bytes"));
    CHECK(value_of(text, "chronomerge_output_log_retained_records"));
    CHECK(value_of(text, "chronomerge_output_clients") == "0");

    CHECK(value_of(text, "chronomerge_output_sink_bytes_total{output=\"archive\"}") == "44");
    // A file has no clients: no client series.
    CHECK_FALSE(value_of(text, "chronomerge_output_sink_clients{output=\"archive\"}"));
    CHECK(value_of(text, "chronomerge_output_sink_queue_bytes{output=\"archive\"}") == "0");
    // A file has no clients to disconnect.
    CHECK_FALSE(value_of(
        text, "chronomerge_output_sink_disconnects_total{output=\"archive\",reason=\"too_slow\"}"));
    CHECK(value_of(text, "chronomerge_output_sink_pending_bytes{output=\"archive\"}") == "0");
    CHECK_FALSE(value_of(text, "chronomerge_output_sink_refused_total{output=\"archive\"}"));
    // The process, as Prometheus client libraries report it.
    for (const char* name :
         {"process_cpu_seconds_total", "process_resident_memory_bytes",
          "process_virtual_memory_bytes", "process_open_fds", "process_max_fds"}) {
      CAPTURE(name);
      REQUIRE(value_of(text, name));
      CHECK(std::stod(*value_of(text, name)) >= 0);
    }
    CHECK(std::stod(*value_of(text, "process_resident_memory_bytes")) > 1 << 20);
    CHECK(std::stod(*value_of(text, "process_open_fds")) >= 3);
    CHECK(value_of(text, "process_start_time_seconds") == "1714564800.25");

    CHECK(value_of(text, "chronomerge_reloads_total{result=\"success\"}") == "2");
    CHECK(value_of(text, "chronomerge_reloads_total{result=\"failure\"}") == "1");
    CHECK(value_of(text, "chronomerge_systemd_notify_failures_total") == "3");
    CHECK(value_of(text, "chronomerge_draining") == "1");
    CHECK(value_of(text, "chronomerge_start_time_seconds") == "1714564800.25");
    CHECK(value_of(text, std::string("chronomerge_build_info{version=\"") + CHRONOMERGE_VERSION +
                             "\",validation=\"" + std::string(to_string(default_simd_level())) +
                             "\"}") == "1");

    // Every family is introduced once, HELP before TYPE before samples.
    CHECK(count_lines_starting(text, "# HELP chronomerge_feed_records_total ") == 1);
    CHECK(text.find("# HELP chronomerge_feed_records_total ") <
          text.find("# TYPE chronomerge_feed_records_total counter\n"));
    CHECK(text.find("# TYPE chronomerge_feed_records_total counter\n") <
          text.find("chronomerge_feed_records_total{"));
    CHECK(text.find("# TYPE chronomerge_feed_queue_bytes gauge\n") != std::string::npos);
    CHECK(text.back() == '\n');

    check_with_promtool(dir, text);
  }

  SUBCASE("reports rfc3339 keys in seconds, with the frontier's lag behind the wall clock") {
    Config config;
    config.key_type = KeyType::rfc3339;
    config.feeds.push_back(file_feed("t", dir.file("in",
                                                   "{\"time\":\"2024-05-01T12:00:00Z\"}\n"
                                                   "{\"time\":\"2024-05-01T12:00:00.5Z\"}\n")));
    config.outputs.push_back(file_output(out));
    std::string text = run_and_render(&loop, config, 1714564810.5);
    INFO(text);
    CHECK(value_of(text, "chronomerge_frontier_timestamp_seconds") == "1714564800.5");
    CHECK(value_of(text, "chronomerge_feed_last_key_timestamp_seconds{feed=\"t\"}") ==
          "1714564800.5");
    CHECK(value_of(text, "chronomerge_frontier_lag_seconds") == "10");
    CHECK_FALSE(value_of(text, "chronomerge_frontier"));  // the raw gauge goes
    check_with_promtool(dir, text);
  }

  SUBCASE("reports integer keys with a key_unit as timestamps") {
    Config config;
    config.key_unit = KeyUnit::us;
    config.feeds.push_back(file_feed("us", dir.file("in", "{\"time\":1714564800500000}\n")));
    config.outputs.push_back(file_output(out));
    std::string text = run_and_render(&loop, config, 1714564810.5);
    INFO(text);
    CHECK(value_of(text, "chronomerge_frontier_timestamp_seconds") == "1714564800.5");
    CHECK(value_of(text, "chronomerge_feed_last_key_timestamp_seconds{feed=\"us\"}") ==
          "1714564800.5");
    CHECK(value_of(text, "chronomerge_frontier_lag_seconds") == "10");
    CHECK_FALSE(value_of(text, "chronomerge_feed_last_key{feed=\"us\"}"));
    check_with_promtool(dir, text);
  }

  SUBCASE("takes integer keys between 1e12 and 1e13 for epoch milliseconds") {
    Config config;
    config.feeds.push_back(file_feed("ms", dir.file("in", "{\"time\":1714564800500}\n")));
    config.outputs.push_back(file_output(out));
    std::string text = run_and_render(&loop, config, 1714564810.5);
    INFO(text);
    CHECK(value_of(text, "chronomerge_frontier") == "1714564800500");
    CHECK(value_of(text, "chronomerge_frontier_lag_seconds") == "10");
  }

  SUBCASE("reports no key values for string keys") {
    Config config;
    config.key_type = KeyType::string;
    config.feeds.push_back(file_feed("s", dir.file("in", "{\"time\":\"a\"}\n")));
    config.outputs.push_back(file_output(out));
    std::string text = run_and_render(&loop, config, 0);
    INFO(text);
    CHECK(text.find("chronomerge_frontier") == std::string::npos);
    CHECK(text.find("chronomerge_feed_last_key") == std::string::npos);
    CHECK(value_of(text, "chronomerge_records_out_total") == "1");
  }

  SUBCASE("escapes label values (config forbids such names; the Pipeline does not check)") {
    Config config;
    config.feeds.push_back(file_feed("odd\"name\\with\nnewline", dir.file("in", "{\"time\":1}\n")));
    config.outputs.push_back(file_output(out));
    std::string text = run_and_render(&loop, config, 0);
    INFO(text);
    CHECK(
        value_of(text, "chronomerge_feed_records_total{feed=\"odd\\\"name\\\\with\\nnewline\"}") ==
        "1");
    check_with_promtool(dir, text);
  }

  SUBCASE("reports a fleet as one set of series, whatever its number of members") {
    MetricsSnapshot snapshot;
    FleetSnapshot fleet;
    fleet.name = "buses";
    fleet.connected = 3;
    fleet.known = 4;
    fleet.joined = 5;
    fleet.refused = {{"max_members", 7}, {"duplicate", 1}};
    fleet.records_in = 1000;
    fleet.paused = 1;
    fleet.oldest_member_lag = 250;
    snapshot.fleets.push_back(fleet);
    std::string text = render_metrics(snapshot, {}, 0);
    INFO(text);
    CHECK(value_of(text, "chronomerge_fleet_members{fleet=\"buses\"}") == "3");
    CHECK(value_of(text, "chronomerge_fleet_members_known{fleet=\"buses\"}") == "4");
    CHECK(value_of(text, "chronomerge_fleet_members_joined_total{fleet=\"buses\"}") == "5");
    CHECK(
        value_of(text, "chronomerge_fleet_refused_total{fleet=\"buses\",reason=\"max_members\"}") ==
        "7");
    CHECK(value_of(text, "chronomerge_fleet_records_total{fleet=\"buses\"}") == "1000");
    CHECK(value_of(text, "chronomerge_fleet_members_paused{fleet=\"buses\"}") == "1");
    CHECK(value_of(text, "chronomerge_fleet_oldest_member_lag{fleet=\"buses\"}") == "250");
    check_with_promtool(dir, text);
  }

  SUBCASE("a feed restarted by reload is one series whose counters add up; a dropped one goes") {
    Config config;
    config.idle_timeout_ms = 50;
    config.feeds.push_back(simulate_feed("keep", 1));
    config.feeds.push_back(simulate_feed("drop", 2));
    config.feeds.push_back(simulate_feed("change", 3));
    config.outputs.push_back(file_output(out));
    Config next = config;
    next.feeds.erase(next.feeds.begin() + 1);
    next.feeds[1].rate = 1000;
    std::string text;
    uint64_t change_records = 0;
    {
      Pipeline pipeline(&loop, config, true);
      REQUIRE(pipeline.start());
      after(&loop, 50, [&] {
        std::string error;
        CHECK(pipeline.reload(next, error));
      });
      when(
          &loop, [&] { return pipeline.retired_feeds().count("change") == 1; },
          [&] {
            for (const auto& feed : pipeline.feeds()) {
              if (feed && feed->name() == "change") {
                change_records += pipeline.merger().stats(feed->id()).records_in;
              }
            }
            // The restarted instance was freed; its counts live on.
            auto retired = pipeline.retired_feeds().find("change");
            if (retired != pipeline.retired_feeds().end()) {
              change_records += retired->second.stats.records_in;
            }
            text = render_metrics(pipeline.metrics_snapshot(), {}, unix_time_seconds());
            pipeline.close();
          },
          "the restarted feed to retire");
      uv_run(&loop, UV_RUN_DEFAULT);
    }
    INFO(text);
    CHECK(value_of(text, "chronomerge_feed_records_total{feed=\"change\"}") ==
          std::to_string(change_records));
    CHECK(count_lines_starting(text, "chronomerge_feed_records_total{feed=\"change\"}") == 1);
    CHECK(count_lines_starting(text, "chronomerge_feed_records_total{") == 2);
    CHECK(text.find("feed=\"drop\"") == std::string::npos);
    check_with_promtool(dir, text);
  }

  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}
