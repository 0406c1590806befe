// End to end: Kafka partitions as feeds and a merged topic as an output,
// against librdkafka's mock cluster (chronomerge_kafka_mock, a process of
// its own) with kcat as an independent producer and consumer. The cases
// check the merged topic's bytes (a stable merge in partition order), the
// committed offsets, a partition whose leader is away holding the merge
// without records turning late, and a restart from committed offsets after
// injected faults losing nothing.
#include <signal.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "harness.h"
#include "kafka_mock.h"

using namespace chronomerge::e2e;
using nlohmann::json;

namespace {

constexpr Millis read_timeout = sanitized ? 120s : 40s;

// kcat, the independent client: produces `lines` to one partition.
void kcat_produce(const TempDir& dir, const KafkaMock& kafka, const std::string& topic,
                  int partition, const std::vector<std::string>& lines) {
  const std::string file = dir.write("produce.ndjson", lines_of(lines));
  const std::string command = "timeout 60 kcat -P -q -b " + kafka.bootstraps() + " -t " + topic +
                              " -p " + std::to_string(partition) + " -l " + file;
  REQUIRE(std::system(command.c_str()) == 0);
}

// kcat reads `count` messages of partition 0 of `topic` from the start.
std::vector<std::string> kcat_consume(const TempDir& dir, const KafkaMock& kafka,
                                      const std::string& topic, size_t count) {
  const std::string file = dir / "consumed.ndjson";
  const std::string command = "timeout 60 kcat -C -q -b " + kafka.bootstraps() + " -t " + topic +
                              " -p 0 -o beginning -e -c " + std::to_string(count) + " > " + file;
  CHECK(std::system(command.c_str()) == 0);
  return split_lines(read_file(file));
}

json kafka_feed(const KafkaMock& kafka, const std::string& topic, int partitions,
                const std::string& group) {
  json list = json::array();
  for (int p = 0; p < partitions; ++p) list.push_back(p);
  return {{"name", "k"},           {"type", "kafka"},    {"brokers", kafka.bootstraps()},
          {"topic", topic},        {"partitions", list}, {"group", group},
          {"idle_timeout_ms", 300}};
}

json kafka_output(const KafkaMock& kafka, const std::string& topic) {
  return {{"name", "merged"}, {"type", "kafka"}, {"brokers", kafka.bootstraps()}, {"topic", topic}};
}

// {"time": key, "p": partition, "i": index in the partition}
std::string message(int64_t key, int partition, int index) {
  return json{{"time", key}, {"p", partition}, {"i", index}}.dump();
}

// A stable merge of the partitions in partition order.
std::vector<std::string> stable_merge(const std::vector<std::vector<std::string>>& partitions) {
  std::vector<std::pair<int64_t, std::string>> all;
  for (const auto& lines : partitions) {
    for (const std::string& line : lines) all.emplace_back(json::parse(line)["time"], line);
  }
  std::stable_sort(all.begin(), all.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> merged;
  for (auto& [key, line] : all) merged.push_back(std::move(line));
  return merged;
}

double delivered(uint16_t port, size_t at_least) {
  return wait_sample(
             port, "chronomerge_kafka_output_delivered_total{output=\"merged\"}",
             [&](double v) { return v >= static_cast<double>(at_least); }, read_timeout)
      .value_or(0);
}

}  // namespace

TEST_CASE("kafka: eight partitions merge into one topic, byte for byte, offsets committed") {
  TempDir dir;
  KafkaMock kafka({"in:8", "out:1"});
  constexpr int per_partition = 250;
  std::vector<std::vector<std::string>> partitions(8);
  for (int p = 0; p < 8; ++p) {
    // Sorted per partition, with ties across partitions (and within one).
    for (int i = 0; i < per_partition; ++i) {
      partitions[p].push_back(message(i / 2 + (p % 3 == 0 ? 0 : i % 3), p, i));
    }
    std::stable_sort(partitions[p].begin(), partitions[p].end(), [](const auto& a, const auto& b) {
      return json::parse(a)["time"] < json::parse(b)["time"];
    });
    kcat_produce(dir, kafka, "in", p, partitions[p]);
  }
  const std::vector<std::string> expected = stable_merge(partitions);

  json config = {{"feeds", {kafka_feed(kafka, "in", 8, "g1")}},
                 {"outputs", {kafka_output(kafka, "out")}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t port = daemon.metrics_port();
  CHECK(delivered(port, expected.size()) == expected.size());
  CHECK(kcat_consume(dir, kafka, "out", expected.size()) == expected);
  // Each partition read to its end went idle (the last records needed
  // that); none stalls the merge.
  for (int p = 0; p < 8; ++p) {
    const std::string feed = "k/" + std::to_string(p);
    CHECK(scrape(port, "chronomerge_kafka_partition_at_end{feed=\"" + feed + "\"}") == 1);
    CHECK(wait_sample(port, "chronomerge_feed_idle{feed=\"" + feed + "\"}",
                      [](double v) { return v == 1; }) == 1);
  }

  // What was written is committed: every offset of every partition.
  CHECK(daemon.stop().code == 0);
  CHECK(kafka.committed("g1", "in", 8) == std::vector<int64_t>(8, per_partition));
}

TEST_CASE("kafka: a partition whose leader is away holds the merge, then nothing is late") {
  TempDir dir;
  KafkaMock kafka({"in:2"});
  REQUIRE(kafka.command("leader in 0 1") == "ok");
  REQUIRE(kafka.command("leader in 1 3") == "ok");
  std::vector<std::vector<std::string>> partitions(2);
  for (int i = 0; i < 100; ++i) {
    partitions[0].push_back(message(2 * i, 0, i));
    partitions[1].push_back(message(2 * i + 1, 1, i));
  }
  kcat_produce(dir, kafka, "in", 0, partitions[0]);
  kcat_produce(dir, kafka, "in", 1, partitions[1]);
  REQUIRE(kafka.command("down 3") == "ok");

  const std::string out = dir / "merged.ndjson";
  // Durable before committed: each write is followed by fdatasync().
  json config = {
      {"feeds", {kafka_feed(kafka, "in", 2, "g2")}},
      {"outputs", {{{"name", "file"}, {"type", "file"}, {"path", out}, {"sync", true}}}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t port = daemon.metrics_port();
  // Partition 0 is read to its end; partition 1 cannot be fetched and,
  // though empty far longer than idle_timeout_ms, is waiting, not idle.
  CHECK(wait_sample(
            port, "chronomerge_kafka_partition_at_end{feed=\"k/0\"}",
            [](double v) { return v == 1; }, read_timeout) == 1);
  CHECK_FALSE(daemon.wait_log("feed k/1: idle", 1500ms));
  CHECK(scrape(port, "chronomerge_records_out_total") == 0);

  REQUIRE(kafka.command("up 3") == "ok");
  CHECK(wait_sample(
            port, "chronomerge_records_out_total", [](double v) { return v == 200; },
            read_timeout) == 200);
  CHECK(scrape(port, "chronomerge_feed_late_total{feed=\"k/0\"}") == 0);
  CHECK(scrape(port, "chronomerge_feed_late_total{feed=\"k/1\"}") == 0);
  CHECK(daemon.stop().code == 0);
  CHECK(split_lines(read_file(out)) == stable_merge(partitions));
}

TEST_CASE("kafka: after faults and a crash, a restart from committed offsets loses nothing") {
  TempDir dir;
  KafkaMock kafka({"in:4", "out:1"});
  constexpr int partitions = 4;
  std::vector<int> produced(partitions, 0);
  // Batches of 100 records per partition, keys rising across batches.
  auto produce_batch = [&] {
    for (int p = 0; p < partitions; ++p) {
      std::vector<std::string> lines;
      for (int n = 0; n < 100; ++n, ++produced[p]) {
        lines.push_back(message(produced[p] * 10 + p, p, produced[p]));
      }
      kcat_produce(dir, kafka, "in", p, lines);
    }
  };
  json config = {{"feeds", {kafka_feed(kafka, "in", partitions, "g3")}},
                 {"outputs", {kafka_output(kafka, "out")}}};
  with_metrics(config);

  std::vector<int64_t> committed_before_crash;
  {
    produce_batch();
    Daemon daemon(dir, config);
    const uint16_t port = daemon.metrics_port();
    CHECK(delivered(port, 400) == 400);
    // Faults: fetches fail, a leader moves, produce requests fail and are
    // retried by the idempotent producer.
    REQUIRE(kafka.command("errors 1 4 6") == "ok");  // Fetch: NOT_LEADER_FOR_PARTITION
    REQUIRE(kafka.command("leader in 2 2") == "ok");
    REQUIRE(kafka.command("errors 0 3 7") == "ok");  // Produce: REQUEST_TIMED_OUT
    produce_batch();
    CHECK(delivered(port, 800) == 800);
    // Committed up to where the records were written, then a crash.
    for (int p = 0; p < partitions; ++p) {
      const std::string sample =
          "chronomerge_kafka_partition_committed_offset{feed=\"k/" + std::to_string(p) + "\"}";
      CHECK(wait_sample(
                port, sample, [](double v) { return v == 200; }, read_timeout) == 200);
    }
    committed_before_crash = kafka.committed("g3", "in", partitions);
    daemon.signal(SIGKILL);
    daemon.wait(read_timeout);
  }
  CHECK(committed_before_crash == std::vector<int64_t>(partitions, 200));

  produce_batch();
  TempDir restart_dir;  // a daemon of its own: its log, its notify socket
  Daemon daemon(restart_dir, config);
  const uint16_t port = daemon.metrics_port();
  CHECK(delivered(port, 400) >= 400);
  CHECK(daemon.stop().code == 0);
  CHECK(kafka.committed("g3", "in", partitions) == std::vector<int64_t>(partitions, 300));

  // Every message is in the merged topic; any seen twice comes after the
  // last commit before the crash.
  const std::vector<std::string> merged = kcat_consume(dir, kafka, "out", 800 + 400);
  std::map<std::pair<int, int>, int> seen;
  for (const std::string& line : merged) {
    const json record = json::parse(line);
    ++seen[{record["p"].get<int>(), record["i"].get<int>()}];
  }
  for (int p = 0; p < partitions; ++p) {
    for (int i = 0; i < produced[p]; ++i) {
      INFO("partition ", p, " message ", i);
      CHECK(seen[{p, i}] >= 1);
      if (seen[{p, i}] > 1) CHECK(i >= committed_before_crash[p]);
    }
  }
}

TEST_CASE(
    "kafka: a slow block client keeps the daemon's memory flat; the topic holds the backlog") {
  TempDir dir;
  constexpr int partitions = 8;
  constexpr int per_partition = 30'000;  // the mock keeps a few MB per partition
  KafkaMock kafka({"in:" + std::to_string(partitions)});
  json feed = kafka_feed(kafka, "in", partitions, "g4");
  feed["idle_timeout_ms"] = 600'000;  // no partition goes idle while the backlog is produced
  json config = {{"retention_bytes", 64 << 10},
                 {"feed_high_water_mark", 64 << 10},
                 {"feed_low_water_mark", 16 << 10},
                 {"output_high_water_mark", 256 << 10},
                 {"feeds", {feed}},
                 {"outputs", {tcp_output("out")}}};
  config["outputs"][0]["slow_client"] = "block";
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t port = daemon.metrics_port();
  // The client is there before the records, with a small receive buffer,
  // and takes nothing yet.
  Socket client = connect_tcp(daemon.output_port("out"), 5s, 16 << 10);
  REQUIRE(wait_sample(port, "chronomerge_output_sink_clients{output=\"out\"}",
                      [](double v) { return v == 1; }) == 1);

  // About 30 MB, every partition at once, as buses would.
  const std::string padding(90, 'x');
  std::string command = "(";
  for (int p = 0; p < partitions; ++p) {
    std::string lines;
    for (int i = 0; i < per_partition; ++i) {
      lines += json{{"time", i * partitions + p}, {"p", p}, {"i", i}, {"pad", padding}}.dump();
      lines += '\n';
    }
    const std::string file = dir.write("p" + std::to_string(p) + ".ndjson", lines);
    command += "timeout 60 kcat -P -q -b " + kafka.bootstraps() + " -t in -p " + std::to_string(p) +
               " -l " + file + " & ";
  }
  command += "wait)";
  REQUIRE(std::system(command.c_str()) == 0);

  // The merge stops at the client; every partition stops at its queue.
  for (int p = 0; p < partitions; ++p) {
    const std::string sample = "chronomerge_feed_paused{feed=\"k/" + std::to_string(p) + "\"}";
    CHECK(wait_sample(
              port, sample, [](double v) { return v == 1; }, read_timeout) == 1);
  }
  double lag = 0;
  for (const auto& [sample, value] : scrape_all(port)) {
    if (starts_with(sample, "chronomerge_kafka_partition_lag_messages")) lag += value;
  }
  INFO("messages left in the topic: ", lag);
  CHECK(lag > partitions * per_partition / 2);  // most of it waits in the topic
  if (!sanitized) {
    const Memory memory = daemon.memory();
    INFO("daemon RSS ", memory.rss_kib, " KiB, peak ", memory.hwm_kib, " KiB");
    CHECK(memory.hwm_kib < 48 * 1024);
  }

  // The client reads: everything arrives, in order (the last record of
  // each partition once the drain ends the feeds).
  const size_t total = partitions * per_partition;
  Collector collector(std::move(client), read_timeout * 2);
  CHECK(wait_sample(
            port, "chronomerge_records_out_total",
            [&](double v) { return v >= total - partitions; },
            read_timeout * 2) >= total - partitions);
  daemon.signal(SIGTERM);
  const std::vector<std::string> lines = split_lines(collector.finish().data);
  CHECK(daemon.wait(read_timeout).code == 0);
  REQUIRE(lines.size() == total);
  for (size_t i = 0; i < lines.size(); i += 997) {
    CHECK(json::parse(lines[i])["time"] == static_cast<int64_t>(i));
  }
  CHECK(json::parse(lines.back())["time"] == static_cast<int64_t>(total - 1));
}

TEST_CASE("kafka: \"all\" partitions are listed at start and again on reload") {
  TempDir dir;
  KafkaMock kafka({"in:3"});
  std::vector<std::vector<std::string>> partitions(3);
  for (int p = 0; p < 3; ++p) {
    for (int i = 0; i < 50; ++i) partitions[p].push_back(message(i * 3 + p, p, i));
    kcat_produce(dir, kafka, "in", p, partitions[p]);
  }
  const std::string out = dir / "merged.ndjson";
  json feed = kafka_feed(kafka, "in", 1, "g5");
  feed["partitions"] = "all";
  json config = {{"feeds", {feed}},
                 {"outputs", {{{"name", "file"}, {"type", "file"}, {"path", out}}}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t port = daemon.metrics_port();
  CHECK(wait_sample(
            port, "chronomerge_records_out_total", [](double v) { return v == 150; },
            read_timeout) == 150);
  CHECK(scrape(port, "chronomerge_kafka_partition_next_offset{feed=\"k/2\"}") == 50);

  // The same file again: listed on the thread pool, nothing changes.
  daemon.signal(SIGHUP);
  CHECK(daemon.wait_log("reloaded", read_timeout));
  // Brokers that do not answer: the reload is rejected, the merge goes on.
  feed["brokers"] = "127.0.0.1:1";
  dir.write("config.json", json{{"feeds", {feed}},
                                {"outputs", {{{"name", "file"}, {"type", "file"}, {"path", out}}}},
                                {"metrics", config["metrics"]}}
                               .dump());
  daemon.signal(SIGHUP);
  CHECK(daemon.wait_log("cannot list the partitions of in at 127.0.0.1:1", read_timeout));
  CHECK(scrape(port, "chronomerge_reloads_total{result=\"failure\"}") == 1);
  CHECK(daemon.stop().code == 0);
  CHECK(split_lines(read_file(out)) == stable_merge(partitions));
}

TEST_CASE("kafka: a merge tree through topics is byte-identical to one flat merge") {
  constexpr int shards = 3;
  KafkaMock kafka({"tier:" + std::to_string(shards)});
  std::mt19937 rng(7);
  constexpr int feed_count = 6;
  std::vector<std::vector<std::string>> feeds(feed_count);
  size_t total = 0;
  for (int f = 0; f < feed_count; ++f) {
    int64_t key = 1'700'000'000'000;
    for (int i = 0; i < 60 + static_cast<int>(rng() % 60); ++i) {
      key += rng() % 3;
      feeds[f].push_back(message(key, f, i));
    }
    total += feeds[f].size();
  }
  const std::string flat = flat_merge(feeds);

  // Tier 1: two feeds each, into partition s of the topic "tier", with
  // heartbeats; the producers end each feed's time with a heartbeat.
  std::vector<std::unique_ptr<TempDir>> dirs;
  std::vector<std::unique_ptr<Daemon>> tier1;
  for (int s = 0; s < shards; ++s) {
    json config = {{"feeds", json::array()}, {"outputs", {kafka_output(kafka, "tier")}}};
    for (int f : {2 * s, 2 * s + 1}) {
      json feed = tcp_feed("f" + std::to_string(f));
      feed["heartbeat_field"] = "hb";
      feed["idle_timeout_ms"] = 600'000;
      config["feeds"].push_back(feed);
    }
    config["outputs"][0]["partition"] = s;
    config["outputs"][0]["heartbeats"] = {{"field", "hb"}, {"interval_ms", 50}};
    dirs.push_back(std::make_unique<TempDir>());
    tier1.push_back(std::make_unique<Daemon>(*dirs.back(), config));
  }
  std::vector<Socket> producers;
  for (int s = 0; s < shards; ++s) {
    for (int f : {2 * s, 2 * s + 1}) {
      Socket producer = connect_tcp(tier1[s]->feed_port("f" + std::to_string(f)));
      REQUIRE(write_all(
          producer,
          lines_of(feeds[f]) + json{{"time", 4'000'000'000'000}, {"hb", true}}.dump() + "\n"));
      producers.push_back(std::move(producer));
    }
  }
  // The root reads the partitions in tier order.
  TempDir root_dir;
  const std::string merged = root_dir / "merged.ndjson";
  json feed = kafka_feed(kafka, "tier", shards, "root");
  feed["heartbeat_field"] = "hb";
  json root = {{"feeds", {feed}},
               {"outputs", {{{"name", "file"}, {"type", "file"}, {"path", merged}}}}};
  with_metrics(root);
  Daemon root_daemon(root_dir, root);
  const uint16_t port = root_daemon.metrics_port();
  CHECK(wait_sample(
            port, "chronomerge_records_out_total",
            [&](double v) { return v >= static_cast<double>(total); }, read_timeout) == total);
  for (int s = 0; s < shards; ++s) {
    CHECK(scrape(port, "chronomerge_feed_late_total{feed=\"k/" + std::to_string(s) + "\"}") == 0);
  }
  CHECK(root_daemon.stop().code == 0);
  CHECK(read_file(merged) == flat);
}
