// End to end: nothing accepted is lost. Reloads that change a feed, a
// drain under load, a producer with a wrong clock and reload churn, each
// checked against the real binary by counting every record.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "harness.h"

using namespace chronomerge::e2e;
using nlohmann::json;

namespace {

double sample(const std::map<std::string, double>& m, const std::string& name) {
  auto it = m.find(name);
  return it == m.end() ? -1 : it->second;
}

// Waits for the daemon's count of successful reloads. Reads the notify
// datagrams too (RELOADING=1, READY=1 per reload): like systemd, a test
// must keep the notify socket from filling up, or the daemon blocks in
// its notification.
bool reloads_done(Daemon& daemon, uint16_t metrics, double count) {
  daemon.notified("READY=1");
  return wait_metrics(
      metrics,
      [&](const auto& m) {
        return sample(m, "chronomerge_reloads_total{result=\"success\"}") >= count;
      },
      10s);
}

// `count` sorted records of one producer, keys 1000 + i * step.
std::string producer_text(const std::string& name, int count, int step = 1) {
  std::string text;
  for (int i = 0; i < count; ++i) text += record(1000 + int64_t{i} * step, name, i) + "\n";
  return text;
}

int64_t epoch_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Three tcp-listen feeds with a producer each, one TCP client, metrics.
struct ThreeProducers {
  ThreeProducers(const std::vector<std::string>& names, json globals) : config(std::move(globals)) {
    for (const std::string& name : names) config["feeds"].push_back(tcp_feed(name));
    config["outputs"] = {tcp_output("clients")};
    with_metrics(config);
    daemon = std::make_unique<Daemon>(dir, config);
    metrics = daemon->metrics_port();
    for (const std::string& name : names) ports.push_back(daemon->feed_port(name));
    const uint16_t out_port = daemon->output_port("clients");
    client = std::make_unique<Collector>(connect_tcp(out_port), 30s);
    REQUIRE(daemon->wait_log("connected (1 now)"));
    for (uint16_t port : ports) producers.push_back(connect_tcp(port));
  }
  void send(size_t producer, const std::string& line) {
    REQUIRE(write_all(producers[producer], line + "\n"));
  }
  TempDir dir;
  json config;
  std::vector<uint16_t> ports;
  uint16_t metrics = 0;
  std::unique_ptr<Daemon> daemon;
  std::unique_ptr<Collector> client;
  std::vector<Socket> producers;
};

// A config where `feed` (with a 4 KiB queue) cannot drain: the merge waits
// for a silent feed, so what its producer writes past the queue stays in
// the kernel's socket buffers.
json held_back(json feed) {
  feed["high_water_mark"] = 4096;
  feed["low_water_mark"] = 1024;
  return {{"idle_timeout_ms", 600000},
          {"drain_timeout_ms", 5000},
          {"feeds", {feed, tcp_feed("silent")}},
          {"outputs", {tcp_output("clients")}}};
}

bool paused(uint16_t metrics, const std::string& feed) {
  return wait_metrics(metrics, [&](const auto& m) {
    return sample(m, "chronomerge_feed_paused{feed=\"" + feed + "\"}") == 1;
  });
}

}  // namespace

TEST_CASE("a reload that changes a feed's tuning keeps its connection and every record") {
  constexpr int per_producer = 30000;
  TempDir dir;
  const std::vector<std::string> names = {"a", "b", "c"};
  json config = {{"feed_high_water_mark", 65536},
                 {"feed_low_water_mark", 16384},
                 {"feeds", {tcp_feed("a"), tcp_feed("b"), tcp_feed("c")}},
                 {"outputs", {tcp_output("clients")}}};
  config["feeds"][1]["idle_timeout_ms"] = 5000;
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const std::vector<uint16_t> ports = {daemon.feed_port("a"), daemon.feed_port("b"),
                                       daemon.feed_port("c")};
  const uint16_t out_port = daemon.output_port("clients");
  INFO("daemon log (tail):\n" << daemon.log_tail());
  Collector first(connect_tcp(out_port), 60s);
  Collector second(connect_tcp(out_port), 60s);
  REQUIRE(daemon.wait_log("connected (2 now)"));

  std::vector<std::string> texts;
  for (const std::string& name : names) texts.push_back(producer_text(name, per_producer));
  std::vector<Socket> producers;
  for (uint16_t port : ports) producers.push_back(connect_tcp(port));
  std::vector<bool> written(3, false);
  {
    std::vector<std::unique_ptr<Background>> writers;
    for (size_t i = 0; i < 3; ++i) {
      writers.push_back(std::make_unique<Background>(
          [&, i] { written[i] = write_all(producers[i], texts[i], 60s); }));
    }
    // Twenty reloads toggle b's idle timeout while the records flow.
    for (int round = 0; round < 20; ++round) {
      config["feeds"][1]["idle_timeout_ms"] = round % 2 == 0 ? 5001 : 5000;
      dir.write("config.json", config.dump(2));
      daemon.signal(SIGHUP);
      REQUIRE(reloads_done(daemon, metrics, round + 1));
    }
  }
  CHECK(written == std::vector<bool>(3, true));
  for (Socket& p : producers) p.close();
  CHECK(daemon.log_count("feed b: settings changed, applied in place") >= 1);
  CHECK(daemon.log_count("restarting") == 0);
  // Every producer's records, in one stable merge, at both clients.
  const std::string expected = stable_merge(texts);
  REQUIRE(first.wait_bytes(expected.size(), 30s));
  REQUIRE(second.wait_bytes(expected.size(), 30s));
  CHECK(sample(scrape_all(metrics), "chronomerge_feed_connections_total{feed=\"b\"}") == 1);
  CHECK(daemon.stop().code == 0);
  CHECK(first.finish().data == expected);
  CHECK(second.finish().data == expected);
}

// A feed whose queue is full (the merge waits for a silent feed) leaves
// the rest of what its producer wrote in the kernel's socket buffers.
TEST_CASE("what the kernel holds for a feed is merged, not dropped") {
  constexpr int records = 3000;  // ~100 KB: a 4 KiB queue, the rest in the kernel
  TempDir dir;
  json config = held_back(tcp_feed("bus"));
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t feed_port = daemon.feed_port("bus");
  const uint16_t out_port = daemon.output_port("clients");
  INFO("daemon log (tail):\n" << daemon.log_tail());
  Collector client(connect_tcp(out_port), 30s);
  REQUIRE(daemon.wait_log("connected (1 now)"));
  const std::string text = producer_text("bus", records);
  Socket producer = connect_tcp(feed_port);
  REQUIRE(write_all(producer, text, 10s));  // complete: in the kernel's buffers
  REQUIRE(paused(metrics, "bus"));
  const double read_so_far =
      sample(scrape_all(metrics), "chronomerge_feed_records_total{feed=\"bus\"}");
  CHECK(read_so_far < records);  // the test needs bytes left in the kernel

  SUBCASE("on SIGTERM") {
    daemon.signal(SIGTERM);
    ExitStatus status = daemon.wait(10s);
    CHECK(status.code == 0);
    const ReadResult& got = client.finish();
    CHECK(got.eof);
    CHECK(got.data == text);
  }
  SUBCASE("on a reload that changes the feed's transport") {
    // The silent feed goes (so the merge flows) and the feed moves to a
    // Unix socket: the old connection is read to its end first.
    const std::string new_path = dir / "bus.sock";
    config["feeds"] = {{{"name", "bus"}, {"type", "unix-listen"}, {"path", new_path}}};
    dir.write("config.json", config.dump(2));
    daemon.signal(SIGHUP);
    REQUIRE(reloads_done(daemon, metrics, 1));
    CHECK(daemon.wait_log("feed bus: changed, restarting"));
    REQUIRE(client.wait_bytes(text.size(), 10s));
    auto m = scrape_all(metrics);
    CHECK(sample(m, "chronomerge_feed_discarded_bytes_total{feed=\"bus\"}") == 0);
    CHECK(sample(m, "chronomerge_feed_records_total{feed=\"bus\"}") == records);
    // The new transport works.
    REQUIRE(daemon.wait_log("feed bus: listening on " + new_path));
    Socket next = connect_unix(new_path);
    const std::string more = record(1000000, "bus", records) + "\n";
    REQUIRE(write_all(next, more));
    REQUIRE(client.wait_bytes(text.size() + more.size(), 10s));
    CHECK(daemon.stop().code == 0);
    CHECK(client.finish().data == text + more);
  }
}

TEST_CASE("a producer with a wrong clock stalls nobody") {
  // Two feeds send in order at ~500 records/s each; the third sends in
  // order for a while, then one record per 200 ms that is 60 s old.
  constexpr int idle_ms = 1000;
  ThreeProducers run({"a", "b", "clock"}, {{"idle_timeout_ms", idle_ms}});
  Daemon& daemon = *run.daemon;
  const uint16_t metrics = run.metrics;
  INFO("daemon log (tail):\n" << daemon.log_tail());
  const auto start = Clock::now();
  std::optional<Clock::time_point> first_late;
  std::optional<Clock::time_point> reported_idle;
  double worst_lag = 0;
  int seq = 0;
  auto last_late = Clock::now() - 1s;
  while (Clock::now() - start < 4s) {
    const int64_t now = epoch_ms();
    run.send(0, record(now, "a", seq));
    run.send(1, record(now, "b", seq));
    if (Clock::now() - start < 1s) {
      run.send(2, record(now, "clock", seq));
    } else if (Clock::now() - last_late >= 200ms) {
      run.send(2, record(now - 60000, "clock", seq));
      last_late = Clock::now();
      if (!first_late) first_late = last_late;
    }
    ++seq;
    if (!reported_idle && daemon.log_count("feed clock: idle") > 0) reported_idle = Clock::now();
    if (first_late && Clock::now() - *first_late > 2500ms && seq % 50 == 0) {
      // Past the idle timeout the frontier keeps up with the others.
      auto m = scrape_all(metrics);
      worst_lag = std::max(worst_lag, sample(m, "chronomerge_frontier_lag_seconds"));
    }
    ::poll(nullptr, 0, 2);
  }
  REQUIRE(first_late);
  REQUIRE(reported_idle);
  CHECK(*reported_idle - *first_late < Millis(idle_ms + 1000));
  CHECK(worst_lag < (idle_ms + 1000) / 1000.0);
  auto m = scrape_all(metrics);
  CHECK(sample(m, "chronomerge_feed_late_total{feed=\"clock\"}") >= 10);
  CHECK(daemon.stop().code == 0);
}

TEST_CASE("reload churn frees what removed feeds held (RSS)") {
  TempDir dir;
  json base = {{"feeds", {{{"name", "sim"}, {"type", "simulate"}, {"rate", 50}}}},
               {"outputs", {tcp_output("clients")}}};
  with_metrics(base);
  Daemon daemon(dir, base);
  const uint16_t metrics = daemon.metrics_port();
  INFO("daemon log (tail):\n" << daemon.log_tail());
  json with_feed = base;
  with_feed["feeds"].push_back(tcp_feed("churn"));
  int reloads = 0;
  auto reload = [&](const json& config) {
    dir.write("config.json", config.dump(2));
    daemon.signal(SIGHUP);
    REQUIRE(reloads_done(daemon, metrics, ++reloads));
  };
  // Warm up: allocator pools, the first metrics scrape.
  for (int i = 0; i < 20; ++i) reload(i % 2 == 0 ? with_feed : base);
  const uint64_t rss_start = daemon.memory().rss_kib;

  SUBCASE("a removed feed's half-line buffer is released") {
    // Each time, a producer leaves 512 KiB without a newline in the
    // feed's framer, then the feed is removed.
    const std::string partial = "{\"time\":1,\"pad\":\"" + std::string(512 << 10, 'x');
    for (int round = 0; round < 30; ++round) {
      reload(with_feed);
      // Each time on a new port: the one it listened on last.
      Socket producer = connect_tcp(daemon.feed_port("churn", 11 + round));
      REQUIRE(write_all(producer, partial));
      INFO("round " << round);
      bool read = wait_metrics(metrics, [&](const auto& m) {
        return sample(m, "chronomerge_feed_bytes_total{feed=\"churn\"}") ==
               static_cast<double>(partial.size());
      });
      INFO(http_get(metrics, "/metrics"));
      REQUIRE(read);
      reload(base);
      // Drained, freed, and no longer configured: gone from the metrics.
      REQUIRE(wait_metrics(metrics, [&](const auto& m) {
        return sample(m, "chronomerge_feed_bytes_total{feed=\"churn\"}") == -1;
      }));
    }
    const uint64_t rss_end = daemon.memory().rss_kib;
    INFO("RSS " << rss_start << " KiB -> " << rss_end << " KiB");
    CHECK(rss_end < rss_start + 4096);
  }
  SUBCASE("2,000 reloads that add and remove a feed") {
    for (int round = 0; round < 1000; ++round) {
      reload(with_feed);
      reload(base);
    }
    const uint64_t rss_end = daemon.memory().rss_kib;
    INFO("RSS " << rss_start << " KiB -> " << rss_end << " KiB");
    CHECK(rss_end < rss_start + 2048);
  }
  CHECK(daemon.stop().code == 0);
}

TEST_CASE("a tcp-connect feed drains to its upstream's end and does not reconnect") {
  constexpr int records = 3000;
  TempDir dir;
  Socket upstream = listen_tcp();
  json config = held_back(
      {{"name", "up"}, {"type", "tcp-connect"}, {"connect", loopback(port_of(upstream))}});
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t out_port = daemon.output_port("clients");
  INFO("daemon log (tail):\n" << daemon.log_tail());
  Collector client(connect_tcp(out_port), 30s);
  REQUIRE(daemon.wait_log("connected (1 now)"));
  Socket conn = accept_tcp(upstream);
  const std::string text = producer_text("up", records);
  REQUIRE(write_all(conn, text, 10s));
  REQUIRE(paused(metrics, "up"));
  // The upstream is done: its end of stream waits behind the data.
  conn.close();
  daemon.signal(SIGTERM);
  ExitStatus status = daemon.wait(10s);
  CHECK(status.code == 0);
  CHECK(status.signal == 0);
  CHECK(client.finish().data == text);
  CHECK(daemon.log_count("reconnecting") <= 1);
}

TEST_CASE("a live feed far behind the others is named, and max_lag lets it go") {
  // a and b send at the wall clock; slow sends in order, but 60 s behind.
  ThreeProducers run({"a", "b", "slow"}, {{"idle_timeout_ms", 500}});
  Daemon& daemon = *run.daemon;
  const uint16_t metrics = run.metrics;
  INFO("daemon log (tail):\n" << daemon.log_tail());
  int64_t key = epoch_ms();
  int seq = 0;
  // Sends for `duration`: a and b every 2 ms, slow every 100 ms.
  auto send = [&](Millis duration) {
    const auto until = Clock::now() + duration;
    while (Clock::now() < until) {
      key += 2;
      ++seq;
      run.send(0, record(key, "a", seq));
      run.send(1, record(key, "b", seq));
      if (seq % 50 == 0) run.send(2, record(key - 60000, "slow", seq));
      ::poll(nullptr, 0, 2);
    }
  };
  send(1500ms);
  // It holds the merge: a metric names it, and one log line says so.
  auto m = scrape_all(metrics);
  CHECK(sample(m, "chronomerge_feed_holding_seconds{feed=\"slow\"}") > 0.5);
  CHECK(daemon.log_count("feed slow: has held the merge") == 1);
  CHECK(daemon.log_count("feed slow: idle") == 0);  // it is not quiet

  // max_lag by reload: a tuning change, applied in place.
  run.config["max_lag"] = 5000;
  run.dir.write("config.json", run.config.dump(2));
  daemon.signal(SIGHUP);
  REQUIRE(reloads_done(daemon, run.metrics, 1));
  send(1000ms);
  CHECK(daemon.log_count("feed slow: more than max_lag behind") >= 1);
  m = scrape_all(metrics);
  CHECK(sample(m, "chronomerge_frontier_lag_seconds") < 30);  // a and b set the pace
  CHECK(sample(m, "chronomerge_feed_late_total{feed=\"slow\"}") >= 1);
  CHECK(sample(m, "chronomerge_feed_late_total{feed=\"a\"}") == 0);
  CHECK(sample(m, "chronomerge_feed_connections_total{feed=\"slow\"}") == 1);
  CHECK(daemon.stop().code == 0);
}

TEST_CASE("an output removed by a reload counts what it had not written") {
  // A file output on a FIFO whose reader never reads holds the merge with
  // a full queue; a reload removes it.
  TempDir dir;
  const std::string fifo = dir / "stuck";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  REQUIRE(reader >= 0);
  json config = {
      {"output_high_water_mark", 65536},
      {"feed_high_water_mark", 65536},
      {"feed_low_water_mark", 16384},
      {"feeds", {tcp_feed("bus")}},
      {"outputs", {tcp_output("clients"), {{"name", "stuck"}, {"type", "file"}, {"path", fifo}}}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t feed_port = daemon.feed_port("bus");
  const uint16_t out_port = daemon.output_port("clients");
  INFO("daemon log (tail):\n" << daemon.log_tail());
  Collector client(connect_tcp(out_port), 30s);
  REQUIRE(daemon.wait_log("connected (1 now)"));
  constexpr int records = 20000;  // ~700 KB: more than the FIFO and the queue take
  const std::string text = producer_text("bus", records);
  Socket producer = connect_tcp(feed_port);
  Background writer([&] { write_all(producer, text, 20s); });
  // Held: the feed is paused, and the stuck output has records it cannot
  // write (a feed may pause on what it has in flight before anything
  // reached the outputs).
  REQUIRE(wait_metrics(metrics, [](const auto& m) {
    return sample(m, "chronomerge_feed_paused{feed=\"bus\"}") == 1 &&
           sample(m, "chronomerge_output_sink_queue_bytes{output=\"stuck\"}") > 0;
  }));
  config["outputs"] = {tcp_output("clients")};  // as it was: kept
  dir.write("config.json", config.dump(2));
  daemon.signal(SIGHUP);
  REQUIRE(reloads_done(daemon, metrics, 1));
  CHECK(daemon.wait_log("output stuck: closed by a reload with"));
  CHECK(sample(scrape_all(metrics), "chronomerge_output_discarded_bytes_total") > 0);
  writer.join();
  // The client, never slow, gets everything once the stuck output is gone.
  REQUIRE(client.wait_bytes(text.size(), 20s));
  CHECK(daemon.stop().code == 0);
  CHECK(client.finish().data == text);
  ::close(reader);
}
