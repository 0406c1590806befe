// End to end: merge trees. Tier-1 daemons each merge a contiguous range of
// the feeds; a root merges their outputs in that order, over TCP. With the
// tier-1 outputs writing heartbeats (and the root reading them), the root
// never waits on a quiet shard, and its output is byte-identical to one
// daemon merging every feed.
#include <signal.h>

#include <doctest/doctest.h>

#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

using namespace chronomerge::e2e;
using nlohmann::json;

namespace {

constexpr Millis read_timeout = sanitized ? 120s : 40s;
constexpr int64_t end_of_time = 4'000'000'000'000;  // the producers' last heartbeat

json heartbeats() {
  return {{"field", "hb"}, {"interval_ms", 50}};
}

// A tier-1 daemon: tcp-listen feeds "f<i>" for `feeds`, one block output
// that writes heartbeats.
json tier1_config(const std::vector<int>& feeds) {
  json config = {{"feeds", json::array()}, {"outputs", {tcp_output("out")}}};
  for (int i : feeds) {
    json feed = tcp_feed("f" + std::to_string(i));
    feed["heartbeat_field"] = "hb";
    feed["idle_timeout_ms"] = 600'000;  // the merge never stops waiting: nothing is late
    config["feeds"].push_back(feed);
  }
  config["outputs"][0]["heartbeats"] = heartbeats();
  with_metrics(config);
  return config;
}

// Sorted feeds with ties inside and across them.
std::vector<std::vector<std::string>> random_feeds(std::mt19937& rng, int count) {
  std::vector<std::vector<std::string>> feeds(count);
  for (int f = 0; f < count; ++f) {
    int64_t key = 1'700'000'000'000;
    const int n = 50 + static_cast<int>(rng() % 100);
    for (int i = 0; i < n; ++i) {
      key += rng() % 3;  // 0: a tie within the feed
      feeds[f].push_back(json{{"time", key}, {"f", f}, {"i", i}}.dump());
    }
  }
  return feeds;
}

}  // namespace

TEST_CASE("a merge tree over TCP is byte-identical to one flat merge") {
  for (const uint32_t seed : {1u, 2u, 3u}) {
    for (const int shards : {2, 3}) {
      INFO("seed ", seed, ", ", shards, " tier-1 daemons");
      std::mt19937 rng(seed);
      constexpr int feed_count = 6;
      const auto feeds = random_feeds(rng, feed_count);
      size_t total = 0;
      for (const auto& feed : feeds) total += feed.size();

      // The reference: one chronomerge over every feed, in order.
      const std::string flat = flat_merge(feeds);

      // Tier 1: contiguous ranges of the feeds.
      std::vector<std::unique_ptr<TempDir>> dirs;
      std::vector<std::unique_ptr<Daemon>> tier1;
      std::vector<std::vector<int>> ranges(shards);
      for (int f = 0; f < feed_count; ++f) ranges[f * shards / feed_count].push_back(f);
      for (int s = 0; s < shards; ++s) {
        dirs.push_back(std::make_unique<TempDir>());
        tier1.push_back(std::make_unique<Daemon>(*dirs.back(), tier1_config(ranges[s])));
      }
      // The root: the tier-1 outputs in tier order.
      TempDir root_dir;
      const std::string merged = root_dir / "merged.ndjson";
      json root = {{"feeds", json::array()},
                   {"outputs", {{{"name", "file"}, {"type", "file"}, {"path", merged}}}}};
      for (int s = 0; s < shards; ++s) {
        root["feeds"].push_back({{"name", "t" + std::to_string(s)},
                                 {"type", "tcp-connect"},
                                 {"connect", loopback(tier1[s]->output_port("out"))},
                                 {"heartbeat_field", "hb"},
                                 {"idle_timeout_ms", 600'000}});
      }
      with_metrics(root);
      Daemon root_daemon(root_dir, root);
      const uint16_t root_port = root_daemon.metrics_port();
      for (auto& daemon : tier1) {
        REQUIRE(wait_sample(
                    daemon->metrics_port(), "chronomerge_output_sink_clients{output=\"out\"}",
                    [](double v) { return v == 1; }, read_timeout) == 1);
      }

      // The producers: every record, then a heartbeat that ends the feed's time.
      std::vector<Socket> producers;
      for (int s = 0; s < shards; ++s) {
        for (int f : ranges[s]) {
          Socket producer = connect_tcp(tier1[s]->feed_port("f" + std::to_string(f)));
          std::string data = lines_of(feeds[f]);
          data += json{{"time", end_of_time}, {"hb", true}}.dump() + "\n";
          REQUIRE(write_all(producer, data));
          producers.push_back(std::move(producer));
        }
      }
      CHECK(wait_sample(
                root_port, "chronomerge_records_out_total",
                [&](double v) { return v >= static_cast<double>(total); }, read_timeout) == total);
      for (int s = 0; s < shards; ++s) {
        CHECK(scrape(root_port,
                     "chronomerge_feed_late_total{feed=\"t" + std::to_string(s) + "\"}") == 0);
      }
      CHECK(root_daemon.stop().code == 0);
      CHECK(read_file(merged) == flat);
    }
  }
}

TEST_CASE("a quiet tier-1 daemon keeps the root moving through heartbeats") {
  // Tier 1: one vehicle that sends no records, only heartbeats of its own.
  TempDir tier1_dir;
  json tier1 = tier1_config({0});
  Daemon shard(tier1_dir, tier1);
  // The root: that shard and a busy simulated bus, keys in epoch ms.
  TempDir root_dir;
  json root = {{"feeds",
                {{{"name", "shard"},
                  {"type", "tcp-connect"},
                  {"connect", loopback(shard.output_port("out"))},
                  {"heartbeat_field", "hb"},
                  {"idle_timeout_ms", 1000}},
                 {{"name", "bus"}, {"type", "simulate"}, {"rate", 100}}}},
               {"outputs", {{{"name", "file"}, {"type", "file"}, {"path", root_dir / "out"}}}}};
  with_metrics(root);
  Daemon root_daemon(root_dir, root);
  const uint16_t port = root_daemon.metrics_port();
  REQUIRE(wait_sample(
              shard.metrics_port(), "chronomerge_output_sink_clients{output=\"out\"}",
              [](double v) { return v == 1; }, read_timeout) == 1);

  Socket vehicle = connect_tcp(shard.feed_port("f0"));
  double worst_lag = 0;
  const auto start = Clock::now();
  while (Clock::now() - start < 4s) {
    const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
    REQUIRE(write_all(vehicle, json{{"time", now_ms}, {"hb", true}}.dump() + "\n"));
    if (Clock::now() - start > 1s) {
      const auto lag = scrape(port, "chronomerge_frontier_lag_seconds");
      REQUIRE(lag);
      worst_lag = std::max(worst_lag, *lag);
      CHECK(scrape(port, "chronomerge_feed_idle{feed=\"shard\"}") == 0);
    }
    std::this_thread::sleep_for(100ms);
  }
  INFO("worst frontier lag at the root: ", worst_lag, " s");
  CHECK(worst_lag < 0.05 + 1.0);  // the heartbeat interval + 1 s
  CHECK(root_daemon.log_count("feed shard: idle") == 0);
  CHECK(root_daemon.stop().code == 0);
}
