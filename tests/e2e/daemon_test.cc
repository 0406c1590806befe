// End to end: the built chronomerge binary as users run it. The daemon is
// started with a config file and systemd's notify protocol, fed by real
// TCP producers, read by real TCP clients, stopped with signals; the
// one-shot form and --check-config run as commands. Every case checks the
// bytes that come out (and, where it matters, counts and memory).
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

using namespace chronomerge::e2e;
using nlohmann::json;

namespace {

// What the dead-letter sink writes for a line.
std::string dead_letter(const std::string& feed, const std::string& reason,
                        const std::string& line) {
  return "{\"feed\":" + json(feed).dump() + ",\"reason\":" + json(reason).dump() +
         ",\"line\":" + json(line).dump() + "}";
}

}  // namespace

// --- 1. merging -------------------------------------------------------------

TEST_CASE("the daemon merges live TCP feeds into every client") {
  SUBCASE("two clients receive the same stable merge of three producers") {
    TempDir dir;
    json config = {{"idle_timeout_ms", 5000},
                   {"feeds", {tcp_feed("north"), tcp_feed("south"), tcp_feed("east")}},
                   {"outputs", {tcp_output("clients")}}};
    Daemon daemon(dir, config);
    const uint16_t feed_ports[3] = {daemon.feed_port("north"), daemon.feed_port("south"),
                                    daemon.feed_port("east")};
    const uint16_t out_port = daemon.output_port("clients");
    INFO("daemon log (tail):\n" << daemon.log_tail());

    Collector first(connect_tcp(out_port));
    Collector second(connect_tcp(out_port));
    REQUIRE(daemon.wait_log("connected (2 now)"));

    std::mt19937 rng(42);
    std::vector<std::string> feeds = {sorted_feed(rng, "north", 700),
                                      sorted_feed(rng, "south", 500),
                                      sorted_feed(rng, "east", 900)};
    const char* names[3] = {"north", "south", "east"};
    // The producers take turns sending 40 lines at a time, so the merge
    // runs while data arrives and keeps waiting for whichever feed ran dry.
    {
      std::vector<Socket> producers;
      std::vector<std::vector<std::string>> lines;
      for (int i = 0; i < 3; ++i) {
        producers.push_back(connect_tcp(feed_ports[i]));
        lines.push_back(split_lines(feeds[i]));
      }
      for (size_t at = 0; at < lines[2].size(); at += 40) {  // "east" is the longest
        for (int i = 0; i < 3; ++i) {
          std::string chunk;
          for (size_t k = at; k < std::min(at + 40, lines[i].size()); ++k) {
            chunk += lines[i][k] + "\n";
          }
          REQUIRE(write_all(producers[i], chunk));
        }
      }
    }
    // Every byte has been read once the daemon saw each producer's EOF;
    // SIGTERM then drains: what is queued is merged, clients are closed.
    for (const char* name : names) {
      REQUIRE(daemon.wait_log(std::string("feed ") + name + ": producer disconnected"));
    }
    // The merge is live: everything up to the last record of the feed that
    // runs dry first goes out at once; after it the merge waits for that
    // feed (5 s), which only the drain ends.
    std::string expected = stable_merge(feeds);
    size_t live_part = expected.size();
    for (const char* name : names) {
      size_t last = expected.rfind("\"feed\":\"" + std::string(name) + "\"");
      live_part = std::min(live_part, expected.find('\n', last) + 1);
    }
    CHECK(first.wait_bytes(live_part, 5s));
    CHECK(second.wait_bytes(live_part, 5s));
    ExitStatus status = daemon.stop();
    CHECK(status.code == 0);
    CHECK(daemon.notified("STOPPING=1"));

    const ReadResult& a = first.finish();
    const ReadResult& b = second.finish();
    CHECK(a.eof);
    CHECK(b.eof);
    CHECK(a.data.size() == expected.size());
    CHECK(a.data == expected);
    CHECK(b.data == expected);
  }
}

// --- 2. idle feeds and late records -----------------------------------------

TEST_CASE("a silent feed holds the merge only until idle_timeout_ms") {
  std::string policy;
  SUBCASE("then its late records are dropped under late: drop") {
    policy = "drop";
  }
  SUBCASE("then its late records go to the dead-letter file under late: deadletter") {
    policy = "deadletter";
  }
  SUBCASE("then its late records are emitted out of order under late: emit") {
    policy = "emit";
  }
  CAPTURE(policy);

  TempDir dir;
  json config = {{"idle_timeout_ms", 300},
                 {"late", policy},
                 {"deadletter", {{"path", dir / "dead.ndjson"}}},
                 {"feeds", {tcp_feed("active"), tcp_feed("silent")}},
                 {"outputs", {tcp_output("clients")}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t active_port = daemon.feed_port("active");
  const uint16_t silent_port = daemon.feed_port("silent");
  const uint16_t out_port = daemon.output_port("clients");
  INFO("daemon log (tail):\n" << daemon.log_tail());
  Socket client = connect_tcp(out_port);
  REQUIRE(daemon.wait_log("connected (1 now)"));
  Socket active = connect_tcp(active_port);
  Socket silent = connect_tcp(silent_port);

  // One record each, equal keys: config order breaks the tie.
  REQUIRE(write_all(active, record(1000, "active", 0) + "\n"));
  REQUIRE(write_all(silent, record(1000, "silent", 0) + "\n"));
  ReadResult start = read_lines(client, 2);
  REQUIRE(start.data == record(1000, "active", 0) + "\n" + record(1000, "silent", 0) + "\n");
  // Both feeds are empty from here on: waiting, with 300 ms to go.
  auto emptied = Clock::now();

  std::vector<std::string> batch;
  for (int i = 1; i <= 5; ++i) batch.push_back(record(2000 + i, "active", i));
  REQUIRE(write_all(active, lines_of(batch)));
  ReadResult held = read_lines(client, batch.size(), 3s);
  auto waited = std::chrono::duration_cast<Millis>(Clock::now() - emptied);
  CHECK(held.data == lines_of(batch));
  INFO("active records released after " << waited.count() << " ms");
  CHECK(waited >= 200ms);  // held while "silent" was waiting (300 ms, minus slack)
  CHECK(waited < 2000ms);  // and released once it went idle
  REQUIRE(daemon.wait_log("feed silent: idle"));
  CHECK(scrape(metrics, "chronomerge_feed_idle{feed=\"silent\"}") == 1);

  // The silent feed comes back with an older key, then a current one.
  std::string late = record(1500, "silent", 1);
  std::string current = record(3000, "silent", 2);
  REQUIRE(write_all(silent, late + "\n" + current + "\n"));
  ReadResult after = read_lines(client, policy == "emit" ? 2 : 1, 3s);
  if (policy == "emit") {
    CHECK(after.data == late + "\n" + current + "\n");
  } else {
    CHECK(after.data == current + "\n");
  }
  CHECK(daemon.wait_log("late record"));
  // Counted whatever the policy did with it.
  CHECK(scrape(metrics, "chronomerge_feed_late_total{feed=\"silent\"}") == 1);
  CHECK(scrape(metrics, "chronomerge_feed_late_total{feed=\"active\"}") == 0);

  CHECK(daemon.stop().code == 0);
  std::string dead = read_file(dir / "dead.ndjson");
  if (policy == "deadletter") {
    CHECK(dead == dead_letter("silent", "late", late) + "\n");
  } else {
    CHECK(dead == "");
  }
  // Nothing else reached the client.
  CHECK(read_to_eof(client, 5s).data == "");
}

// --- 3. backpressure --------------------------------------------------------

namespace {

// The records of producer `feed` (of `feeds`): sequence numbers 0, 1, ...
// with key 1000000 + seq, the same keys on every feed, so the merged
// stream is fully determined: seq 0 of feed 0, 1, 2, then seq 1, ...
struct SequenceFeed {
  static constexpr int64_t base = 1000000;
  static inline const std::string pad = std::string(150, 'x');

  static void append(std::string& out, int feed, int64_t seq) {
    char digits[24];
    out += "{\"time\":";
    out.append(digits, std::to_chars(digits, digits + sizeof(digits), base + seq).ptr);
    out += ",\"feed\":\"p";
    out += static_cast<char>('0' + feed);
    out += "\",\"seq\":";
    out.append(digits, std::to_chars(digits, digits + sizeof(digits), seq).ptr);
    out += ",\"pad\":\"";
    out += pad;
    out += "\"}\n";
  }
};

// Checks a merged stream piece by piece against the expected order.
class MergedStreamChecker {
 public:
  explicit MergedStreamChecker(int feeds) : feeds_(feeds) {}

  void take(std::string_view bytes) {
    while (!bytes.empty()) {
      size_t nl = bytes.find('\n');
      if (nl == std::string_view::npos) {
        carry_.append(bytes);
        return;
      }
      carry_.append(bytes.substr(0, nl + 1));
      bytes.remove_prefix(nl + 1);
      check_line();
      carry_.clear();
    }
  }

  uint64_t lines() const { return lines_; }
  uint64_t bytes() const { return bytes_; }
  bool in_order() const { return first_bad_ == UINT64_MAX; }
  uint64_t first_bad() const { return first_bad_; }
  const std::string& bad_line() const { return bad_line_; }
  bool clean_end() const { return carry_.empty(); }

 private:
  void check_line() {
    if (first_bad_ == UINT64_MAX) {
      expected_.clear();
      SequenceFeed::append(expected_, static_cast<int>(lines_ % feeds_),
                           static_cast<int64_t>(lines_ / feeds_));
      if (carry_ != expected_) {
        first_bad_ = lines_;
        bad_line_ = carry_.substr(0, 200);
      }
    }
    ++lines_;
    bytes_ += carry_.size();
  }

  int feeds_;
  std::string carry_;
  std::string expected_;
  uint64_t lines_ = 0;
  uint64_t bytes_ = 0;
  uint64_t first_bad_ = UINT64_MAX;
  std::string bad_line_;
};

}  // namespace

// "RSS" in the name: tests/run.sh leaves this case out of the sanitizer
// run, whose own memory would dominate the measurement.
TEST_CASE("backpressure from a trickling client pauses producers and bounds RSS") {
  constexpr int feeds = 3;
  // About 500 MB offered in total: records are 200 bytes.
  constexpr int64_t per_feed = 850000;
  constexpr uint64_t rss_limit_kib = 64 << 10;

  TempDir dir;
  json config = {// Nothing may go idle: a producer that falls behind must hold the
                 // merge, so the output is exactly ordered.
                 {"idle_timeout_ms", 600000},
                 // The smallest retained log: memory here is what the
                 // backpressure bounds, not what resuming clients keep.
                 {"retention_bytes", 1 << 20},
                 {"feeds", {tcp_feed("p0"), tcp_feed("p1"), tcp_feed("p2")}},
                 {"outputs", {tcp_output("clients")}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t ports[feeds] = {daemon.feed_port("p0"), daemon.feed_port("p1"),
                                 daemon.feed_port("p2")};
  const uint16_t out_port = daemon.output_port("clients");
  INFO("daemon log (tail):\n" << daemon.log_tail());

  Socket client = connect_tcp(out_port, 5s, /*rcvbuf=*/4096);
  REQUIRE(daemon.wait_log("connected (1 now)"));
  MergedStreamChecker checker(feeds);
  uint64_t peak_rss = 0;
  auto sample = [&] { peak_rss = std::max(peak_rss, daemon.memory().rss_kib); };

  std::vector<Socket> producers;
  std::vector<int64_t> next_seq(feeds, 0);
  std::vector<std::string> pending(feeds);  // bytes generated, not yet taken
  for (int i = 0; i < feeds; ++i) {
    producers.push_back(connect_tcp(ports[i]));
    producers.back().set_nonblocking(true);
  }
  auto refill = [&](int i) {
    if (!pending[i].empty() || next_seq[i] >= per_feed) return;
    for (int k = 0; k < 256 && next_seq[i] < per_feed; ++k) {
      SequenceFeed::append(pending[i], i, next_seq[i]++);
    }
  };

  // Phase 1: the client reads 1 KiB every 20 ms while the producers push
  // as fast as their sockets take it. The sockets must stop taking data
  // (EAGAIN) and stay full: the daemon stopped reading them.
  std::vector<bool> saw_eagain(feeds, false);
  uint64_t offered = 0;
  auto last_progress = Clock::now();
  auto phase_end = Clock::now() + 20s;
  while (Clock::now() < phase_end) {
    for (int i = 0; i < feeds; ++i) {
      while (true) {
        refill(i);
        if (pending[i].empty()) break;
        ssize_t n = try_write(producers[i], pending[i]);
        REQUIRE(n >= 0);
        if (n == 0) {
          saw_eagain[i] = true;
          break;
        }
        pending[i].erase(0, static_cast<size_t>(n));
        offered += static_cast<uint64_t>(n);
        last_progress = Clock::now();
      }
    }
    sample();
    bool all_blocked = std::all_of(saw_eagain.begin(), saw_eagain.end(), [](bool b) { return b; });
    if (all_blocked && Clock::now() - last_progress > 500ms) break;
    checker.take(read_some(client, 1024, 0ms).data);
    // Pace the trickle; wake early if a producer can write again.
    std::vector<pollfd> fds;
    for (auto& p : producers) fds.push_back({p.fd(), POLLOUT, 0});
    ::poll(fds.data(), fds.size(), 20);
  }
  std::string phase1 = "phase 1: " + std::to_string(offered >> 10) +
                       " KiB offered before the sockets filled, " +
                       std::to_string(checker.bytes()) + " bytes trickled to the client";
  INFO(phase1);
  for (int i = 0; i < feeds; ++i) CHECK(saw_eagain[i]);
  CHECK(Clock::now() - last_progress > 500ms);  // the producers stayed blocked
  // ...because the daemon paused every feed (and none counts as idle).
  for (int i = 0; i < feeds; ++i) {
    std::string feed = "{feed=\"p" + std::to_string(i) + "\"}";
    CHECK(scrape(metrics, "chronomerge_feed_paused" + feed) == 1);
    CHECK(scrape(metrics, "chronomerge_feed_idle" + feed) == 0);
  }
  // (`offered` is mostly what the kernel buffers on both sides of each
  // producer socket, which autotuning may grow to tens of MiB: it is not
  // the daemon's memory, so only RSS is checked.)
  sample();
  CHECK(peak_rss < rss_limit_kib);

  // Phase 2: the client reads freely; the producers write the rest
  // (blocking), then hang up.
  std::atomic<int> producers_done{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < feeds; ++i) {
    threads.emplace_back([&, i] {
      producers[i].set_nonblocking(false);
      bool ok = true;
      while (ok) {
        refill(i);
        if (pending[i].empty()) break;
        ok = write_all(producers[i], pending[i], 60s);
        pending[i].clear();
      }
      producers[i].close();
      if (ok) ++producers_done;
    });
  }
  auto deadline = Clock::now() + 120s;
  auto next_sample = Clock::now();
  while (Clock::now() < deadline) {
    checker.take(read_some(client, 1 << 20, 50ms).data);
    if (Clock::now() >= next_sample) {
      sample();
      next_sample = Clock::now() + 50ms;
    }
    if (producers_done == feeds && daemon.log_count("producer disconnected") == feeds) break;
  }
  for (auto& t : threads) t.join();
  REQUIRE(producers_done == feeds);
  Memory memory = daemon.memory();
  // The last records wait for a feed that hung up (it never goes idle
  // here); SIGTERM drains them, to a client that keeps reading.
  daemon.signal(SIGTERM);
  ReadResult rest = read_to_eof(client, 30s);
  checker.take(rest.data);
  ExitStatus status = daemon.wait(30s);

  INFO("phase 2: " << (checker.bytes() >> 20) << " MiB through; peak RSS sampled " << peak_rss
                   << " KiB, VmHWM " << memory.hwm_kib << " KiB");
  CHECK(status.code == 0);
  CHECK(rest.eof);
  CHECK(peak_rss < rss_limit_kib);
  CHECK(memory.hwm_kib < rss_limit_kib);
  INFO("first line out of order: #" << checker.first_bad() << ": " << checker.bad_line());
  CHECK(checker.in_order());
  CHECK(checker.clean_end());
  CHECK(checker.lines() == static_cast<uint64_t>(feeds * per_feed));
}

// --- 4. slow and frozen clients ---------------------------------------------

namespace {

// `count` records of about 100 bytes from one feed, keys 1, 2, ...
std::string bulk_feed(const std::string& feed, int count) {
  std::string out;
  out.reserve(static_cast<size_t>(count) * 100);
  const std::string pad(50, 'y');
  for (int i = 0; i < count; ++i) {
    out += "{\"time\":" + std::to_string(i + 1) + ",\"feed\":\"" + feed +
           "\",\"seq\":" + std::to_string(i) + ",\"pad\":\"" + pad + "\"}\n";
  }
  return out;
}

}  // namespace

TEST_CASE("slow clients are dropped by policy while fast ones get everything") {
  TempDir dir;
  json output = tcp_output("clients");
  std::string reason;
  json config = {{"feeds", {tcp_feed("bus")}}};
  // 20 MB: far more than any buffer on the frozen client's path.
  int records = 200000;
  SUBCASE("slow_client: disconnect drops a client more than max_buffer behind") {
    // The network default. Nothing holds the merge: the frozen client
    // falls behind at the producer's pace and is dropped once more than
    // max_buffer behind (by default it is bound by the retained window
    // alone). 40 MB go through, more than the frozen client's kernel
    // buffers take plus max_buffer.
    output.erase("slow_client");
    output["max_buffer"] = 16 << 20;
    config["retention_bytes"] = 32 << 20;
    records = 400000;
    reason = "too_slow";
  }
  SUBCASE("slow_client: block with stall_timeout_ms drops a frozen client, then the rest flows") {
    output["slow_client"] = "block";
    output["stall_timeout_ms"] = 500;
    reason = "stalled";
  }
  CAPTURE(output.dump());
  config["outputs"] = {output};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t feed_port = daemon.feed_port("bus");
  const uint16_t out_port = daemon.output_port("clients");
  INFO("daemon log (tail):\n" << daemon.log_tail());

  // The frozen client never reads and advertises a tiny window.
  Socket frozen = connect_tcp(out_port, 5s, /*rcvbuf=*/4096);
  REQUIRE(daemon.wait_log("connected (1 now)"));
  Collector fast(connect_tcp(out_port));
  REQUIRE(daemon.wait_log("connected (2 now)"));

  std::string data = bulk_feed("bus", records);
  bool sent = false;
  {
    Socket producer = connect_tcp(feed_port);
    // Paced by the fast client: never more than 4 MiB ahead of what it has
    // read, so however the machine schedules its reader it stays well
    // inside max_buffer, while the frozen client falls 40 MB behind.
    Background writer([&] {
      constexpr size_t chunk = 1 << 20;
      constexpr size_t lead = 4 << 20;
      sent = true;
      for (size_t at = 0; sent && at < data.size(); at += chunk) {
        if (at > lead) fast.wait_bytes(at - lead, 30s);
        sent = write_all(producer, std::string_view(data).substr(at, chunk), 30s);
      }
    });
    CHECK(daemon.wait_log("disconnected: " + reason, 10s));
    writer.join();
  }
  REQUIRE(sent);
  REQUIRE(daemon.wait_log("feed bus: producer disconnected", 10s));
  CHECK(fast.wait_bytes(data.size(), 10s));
  // Only the frozen client was dropped.
  CHECK(daemon.log_count("disconnected:") == 1);
  CHECK(scrape(metrics, "chronomerge_output_sink_disconnects_total{output=\"clients\",reason=\"" +
                            reason + "\"}") == 1);
  CHECK(scrape(metrics, "chronomerge_output_sink_clients{output=\"clients\"}") == 1);
  daemon.check_alive();
  CHECK(daemon.stop().code == 0);
  const ReadResult& got = fast.finish();
  CHECK(got.eof);
  CHECK(got.data.size() == data.size());
  CHECK(got.data == data);

  // The frozen client was cut off: what it can still read is a prefix of
  // the stream, and then the connection is over.
  ReadResult cut = read_to_eof(frozen, 10s);
  CHECK((cut.eof || cut.error));
  CHECK(cut.data.size() < data.size());
  CHECK(data.compare(0, cut.data.size(), cut.data) == 0);
}

TEST_CASE("stall_timeout_ms spares a client that reads slowly but steadily") {
  // One write to a client carries up to 1 MiB; this client takes several
  // seconds for that, far longer than the timeout, but never stops.
  TempDir dir;
  json output = tcp_output("clients");
  output["stall_timeout_ms"] = 300;
  json config = {{"feeds", {tcp_feed("bus")}}, {"outputs", {output}}};
  Daemon daemon(dir, config);
  const uint16_t feed_port = daemon.feed_port("bus");
  const uint16_t out_port = daemon.output_port("clients");
  INFO("daemon log (tail):\n" << daemon.log_tail());

  Socket slow = connect_tcp(out_port, 5s, /*rcvbuf=*/4096);
  REQUIRE(daemon.wait_log("connected (1 now)"));
  std::string data = bulk_feed("bus", 30000);  // 3 MB
  std::string got;
  Background reader([&] {
    // About 400 KB/s: 4 KiB, then a pause of 10 ms.
    while (got.size() < data.size()) {
      ReadResult part = read_some(slow, 4096, 5s);
      got += part.data;
      if (part.eof || part.error || part.data.empty()) return;
      std::this_thread::sleep_for(10ms);
    }
  });
  Socket producer = connect_tcp(feed_port);
  REQUIRE(write_all(producer, data, 30s));
  reader.join();
  CHECK(daemon.log_count("disconnected") == 0);
  CHECK(got.size() == data.size());
  CHECK(got == data);
  CHECK(daemon.stop().code == 0);
}

// --- 5. reconnecting upstream, client limit ---------------------------------

TEST_CASE("a tcp-connect feed rides out its upstream restarting") {
  SUBCASE("the records of both upstream sessions arrive, in order") {
    TempDir dir;
    Socket listener = listen_tcp();
    const uint16_t upstream_port = port_of(listener);
    // Held to the end, so that no other process takes the port while the
    // upstream is away.
    Socket held = hold_tcp(upstream_port);
    json config = {
        {"feeds",
         {{{"name", "upstream"}, {"type", "tcp-connect"}, {"connect", loopback(upstream_port)}}}},
        {"outputs", {tcp_output("clients")}}};
    with_metrics(config);
    Daemon daemon(dir, config);
    const uint16_t metrics = daemon.metrics_port();
    const uint16_t out_port = daemon.output_port("clients");
    INFO("daemon log (tail):\n" << daemon.log_tail());
    Collector client(connect_tcp(out_port));
    REQUIRE(daemon.wait_log("connected (1 now)"));

    std::vector<std::string> first, second;
    for (int i = 0; i < 100; ++i) first.push_back(record(i, "upstream", i));
    for (int i = 100; i < 200; ++i) second.push_back(record(i, "upstream", i));

    {
      Socket session = accept_tcp(listener);
      REQUIRE(write_all(session, lines_of(first)));
    }
    // The upstream goes away completely: the daemon's next attempts fail.
    listener.close();
    REQUIRE(daemon.wait_log("feed upstream: upstream " + loopback(upstream_port) +
                            " closed the connection"));
    REQUIRE(daemon.wait_log("feed upstream: cannot connect to"));
    REQUIRE(client.wait_bytes(lines_of(first).size(), 5s));

    // Back again: the daemon reconnects on its own (backoff from 100 ms).
    listener = listen_tcp(upstream_port);
    {
      Socket session = accept_tcp(listener, 10s);
      REQUIRE(write_all(session, lines_of(second)));
    }
    std::string expected = lines_of(first) + lines_of(second);
    REQUIRE(client.wait_bytes(expected.size(), 5s));
    CHECK(daemon.log_count("feed upstream: connected to") == 2);
    CHECK(scrape(metrics, "chronomerge_feed_connections_total{feed=\"upstream\"}") == 2);
    CHECK(daemon.stop().code == 0);
    const ReadResult& got = client.finish();
    CHECK(got.eof);
    CHECK(got.data == expected);
  }
}

TEST_CASE("max_clients refuses extra clients cleanly") {
  SUBCASE("with max_clients 1 a second client sees EOF at once and the first keeps receiving") {
    TempDir dir;
    json output = tcp_output("clients");
    output["max_clients"] = 1;
    json config = {{"feeds", {tcp_feed("bus")}}, {"outputs", {output}}};
    with_metrics(config);
    Daemon daemon(dir, config);
    const uint16_t metrics = daemon.metrics_port();
    const uint16_t feed_port = daemon.feed_port("bus");
    const uint16_t out_port = daemon.output_port("clients");
    INFO("daemon log (tail):\n" << daemon.log_tail());

    Socket first = connect_tcp(out_port);
    REQUIRE(daemon.wait_log("connected (1 now)"));
    Socket producer = connect_tcp(feed_port);
    REQUIRE(write_all(producer, record(1, "bus", 0) + "\n"));
    CHECK(read_lines(first, 1).data == record(1, "bus", 0) + "\n");

    Socket second = connect_tcp(out_port);
    ReadResult refused = read_to_eof(second, 2s);
    CHECK(refused.eof);
    CHECK_FALSE(refused.error);
    CHECK(refused.data == "");
    CHECK(daemon.wait_log("refused client"));
    CHECK(scrape(metrics, "chronomerge_output_sink_refused_total{output=\"clients\"}") == 1);
    CHECK(scrape(metrics, "chronomerge_output_sink_clients{output=\"clients\"}") == 1);

    REQUIRE(write_all(producer, record(2, "bus", 1) + "\n"));
    CHECK(read_lines(first, 1).data == record(2, "bus", 1) + "\n");
    CHECK(daemon.stop().code == 0);
    ReadResult rest = read_to_eof(first);
    CHECK(rest.eof);
    CHECK(rest.data == "");
  }
}

// --- 6. robustness ----------------------------------------------------------

TEST_CASE("misbehaving peers leave the daemon running and other streams intact") {
  TempDir dir;
  std::string dead_path = dir / "dead.ndjson";
  json config = {{"idle_timeout_ms", 200},
                 {"deadletter", {{"path", dead_path}}},
                 {"feeds", {tcp_feed("a"), tcp_feed("b")}},
                 {"outputs", {tcp_output("clients")}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t a_port = daemon.feed_port("a");
  const uint16_t b_port = daemon.feed_port("b");
  const uint16_t out_port = daemon.output_port("clients");
  auto malformed = [&](const std::string& reason) {
    return scrape(metrics,
                  "chronomerge_feed_malformed_total{feed=\"a\",reason=\"" + reason + "\"}");
  };
  INFO("daemon log (tail):\n" << daemon.log_tail());
  Socket client = connect_tcp(out_port);
  REQUIRE(daemon.wait_log("connected (1 now)"));

  // After each mishap: feed b still merges through to the client, the
  // daemon is alive, and it stops cleanly.
  auto other_stream_intact = [&](int64_t time) {
    Socket b = connect_tcp(b_port);
    REQUIRE(write_all(b, record(time, "b", 0) + "\n"));
    CHECK(read_lines(client, 1, 5s).data == record(time, "b", 0) + "\n");
    daemon.check_alive();
  };

  SUBCASE("a client vanishing mid-write (reset) is dropped; the others get everything") {
    std::string data = bulk_feed("a", 100000);  // 10 MB
    Socket vanishing = connect_tcp(out_port, 5s, /*rcvbuf=*/4096);
    REQUIRE(daemon.wait_log("connected (2 now)"));
    Collector other(std::move(client));
    Socket producer = connect_tcp(a_port);
    bool sent = false;
    Background writer([&] { sent = write_all(producer, data, 30s); });
    // Wait until the daemon is stuck on a write to the vanishing client:
    // the other client stops receiving (slow_client: block holds the
    // merge) well before the end of the data.
    auto deadline = Clock::now() + 10s;
    bool blocked = false;
    while (!blocked && Clock::now() < deadline) {
      blocked = !other.wait_bytes(other.bytes_so_far() + 1, 300ms);
    }
    REQUIRE(blocked);
    REQUIRE(other.bytes_so_far() < data.size());
    bool linger_reset = false;
    SUBCASE("with SO_LINGER 0") {
      linger_reset = true;
    }
    SUBCASE("with unread data in its receive buffer") {}
    if (linger_reset) {
      vanishing.reset();
    } else {
      vanishing.close();  // unread data: the kernel answers with a reset too
    }
    // A client that resets is gone by its own choice: info, not a warning.
    CHECK(daemon.wait_log("disconnected: peer_closed", 10s));
    REQUIRE(daemon.check_alive());
    writer.join();
    REQUIRE(sent);
    producer.close();
    CHECK(other.wait_bytes(data.size(), 10s));
    daemon.check_alive();
    CHECK(scrape(metrics,
                 "chronomerge_output_sink_disconnects_total{output=\"clients\",reason="
                 "\"peer_closed\"}") == 1);
    CHECK(daemon.stop().code == 0);
    const ReadResult& got = other.finish();
    CHECK(got.data.size() == data.size());
    CHECK(got.data == data);
  }

  SUBCASE("a producer killed mid-line: the cut line is discarded, never glued to the next") {
    // If the daemon glued the cut line to the next connection's first
    // line, {"time":3,"glued":"x"} would be a valid record.
    std::string first_session =
        record(1, "a", 0) + "\n" + record(2, "a", 1) + "\n" + "{\"time\":3,\"glued\":\"";
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      // Only async-signal-safe calls in the child of a threaded process.
      int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(a_port);
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) ::_exit(1);
      size_t done = 0;
      while (done < first_session.size()) {
        ssize_t n = ::write(fd, first_session.data() + done, first_session.size() - done);
        if (n <= 0) ::_exit(1);
        done += static_cast<size_t>(n);
      }
      ::kill(::getpid(), SIGKILL);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFSIGNALED(status));
    CHECK(read_lines(client, 2).data == record(1, "a", 0) + "\n" + record(2, "a", 1) + "\n");
    CHECK(daemon.wait_log("feed a: producer disconnected mid-line"));

    Socket second = connect_tcp(a_port);
    REQUIRE(daemon.wait_log("feed a: producer connected", 5s, 2));
    REQUIRE(write_all(second, "x\"}\n" + record(4, "a", 2) + "\n"));
    CHECK(read_lines(client, 1).data == record(4, "a", 2) + "\n");
    other_stream_intact(10);
    CHECK(scrape(metrics, "chronomerge_feed_partial_lines_total{feed=\"a\"}") == 1);
    CHECK(malformed("not_json") == 2);  // the cut line and the lone fragment
    CHECK(daemon.stop().code == 0);
    CHECK(read_to_eof(client).data == "");
    CHECK(read_file(dead_path) == dead_letter("a", "not_json", "x\"}") + "\n");
  }

  SUBCASE("binary garbage on a feed is skipped, counted and dead-lettered") {
    std::mt19937 rng(7);
    std::string garbage;
    const int garbage_lines = 5;
    for (int i = 0; i < garbage_lines; ++i) {
      std::string line = "\xff";  // never the start of JSON
      for (int k = 0; k < 200; ++k) {
        char c = static_cast<char>(rng() % 256);
        line += c == '\n' ? '\0' : c;
      }
      line += 'z';  // not a '\r' at the end
      garbage += line + "\n";
    }
    Socket producer = connect_tcp(a_port);
    REQUIRE(write_all(producer, record(1, "a", 0) + "\n" + garbage + record(2, "a", 1) + "\n"));
    CHECK(read_lines(client, 2).data == record(1, "a", 0) + "\n" + record(2, "a", 1) + "\n");
    CHECK(daemon.wait_log("feed a: line skipped", 5s, garbage_lines));
    other_stream_intact(10);
    CHECK(malformed("not_json") == garbage_lines);
    CHECK(daemon.stop().code == 0);
    std::vector<std::string> dead = split_lines(read_file(dead_path));
    CHECK(dead.size() == garbage_lines);
    for (const std::string& line : dead) {
      json entry = json::parse(line);  // valid JSON even for binary input
      CHECK(entry["feed"] == "a");
      CHECK(entry["reason"] == "not_json");
      CHECK(entry["line"].get<std::string>().size() > 100);
    }
  }

  SUBCASE("a 10 MB line is skipped as too long and the next line is fine") {
    std::string huge = "{\"time\":2,\"big\":\"" + std::string(10 << 20, 'h') + "\"}";
    Socket producer = connect_tcp(a_port);
    bool sent = false;
    Background writer([&] {
      sent = write_all(producer, record(1, "a", 0) + "\n" + huge + "\n" + record(3, "a", 2) + "\n",
                       30s);
    });
    CHECK(read_lines(client, 2, 10s).data == record(1, "a", 0) + "\n" + record(3, "a", 2) + "\n");
    writer.join();
    REQUIRE(sent);
    CHECK(daemon.wait_log("feed a: line skipped (too_long)"));
    // The line was never held whole (sanitizers' own memory would hide it).
    if (!sanitized) CHECK(daemon.memory().hwm_kib < 32 << 10);
    other_stream_intact(10);
    CHECK(malformed("too_long") == 1);
    CHECK(daemon.stop().code == 0);
    std::vector<std::string> dead = split_lines(read_file(dead_path));
    REQUIRE(dead.size() == 1);
    json entry = json::parse(dead[0]);
    CHECK(entry["feed"] == "a");
    CHECK(entry["reason"] == "too_long");
    CHECK(starts_with(huge, entry["line"].get<std::string>()));
  }

  SUBCASE("a second concurrent producer on a tcp-listen feed is refused; the first continues") {
    Socket first = connect_tcp(a_port);
    REQUIRE(write_all(first, record(1, "a", 0) + "\n"));
    CHECK(read_lines(client, 1).data == record(1, "a", 0) + "\n");
    Socket intruder = connect_tcp(a_port);
    // Whatever it manages to send must never come out.
    write_all(intruder, "{\"time\":5,\"intruder\":true}\n", 1s);
    ReadResult refused = read_to_eof(intruder, 2s);
    CHECK((refused.eof || refused.error));
    CHECK(refused.data == "");
    CHECK(daemon.wait_log("feed a: refused a second producer"));
    REQUIRE(write_all(first, record(6, "a", 1) + "\n"));
    CHECK(read_lines(client, 1).data == record(6, "a", 1) + "\n");
    other_stream_intact(10);
    CHECK(scrape(metrics, "chronomerge_feed_connections_total{feed=\"a\"}") == 1);
    CHECK(daemon.stop().code == 0);
    CHECK(read_to_eof(client).data == "");
  }
}

// --- 7. --check-config ------------------------------------------------------

namespace {

const char* good_config = R"({
  "feeds": [{"name": "a", "type": "tcp-listen", "listen": "127.0.0.1:7001"}],
  "outputs": [{"name": "clients", "type": "tcp-listen", "listen": "127.0.0.1:7070"}]
})";

struct BadConfig {
  const char* what;
  std::string text;
  std::string expected;  // a line of the report
};

}  // namespace

TEST_CASE("--check-config names every problem and exits 2") {
  std::vector<BadConfig> table = {
      {"a syntax error is reported as line:column",
       "{\n  \"feeds\": [\n    {\"name\": \"a\",, }\n  ]\n}", "3:18: syntax error"},
      {"an unknown field is an error",
       R"({"feeds": [{"name": "a", "type": "tcp-listen", "listen": "127.0.0.1:7001", "lisen": 1}],
           "outputs": [{"name": "c", "type": "stdout"}]})",
       "/feeds/0/lisen: unknown field"},
      {"a field of the wrong type",
       R"({"idle_timeout_ms": "5000",
           "feeds": [{"name": "a", "type": "stdin"}], "outputs": [{"name": "c", "type": "stdout"}]})",
       "/idle_timeout_ms: expected an integer, got \"5000\""},
      {"a value out of range",
       R"({"feeds": [{"name": "a", "type": "stdin"}],
           "outputs": [{"name": "c", "type": "tcp-listen", "listen": "127.0.0.1:7070", "max_clients": 0}]})",
       "/outputs/0/max_clients: must be between 1 and 100000"},
      {"duplicate feed names",
       R"({"feeds": [{"name": "a", "type": "stdin"},
                     {"name": "a", "type": "tcp-listen", "listen": "127.0.0.1:7001"}],
           "outputs": [{"name": "c", "type": "stdout"}]})",
       "/feeds/1/name: duplicate feed name \"a\""},
      {"a host name instead of an address",
       R"({"feeds": [{"name": "a", "type": "tcp-listen", "listen": "example.com:7001"}],
           "outputs": [{"name": "c", "type": "stdout"}]})",
       "/feeds/0/listen: expected \"host:port\", got \"example.com:7001\""},
      {"a port out of range",
       R"({"feeds": [{"name": "a", "type": "stdin"}],
           "outputs": [{"name": "c", "type": "tcp-listen", "listen": "127.0.0.1:70000"}]})",
       "/outputs/0/listen: expected \"host:port\", got \"127.0.0.1:70000\""},
      {"a low water mark not below the high one",
       R"({"feed_high_water_mark": 1000, "feed_low_water_mark": 1000,
           "feeds": [{"name": "a", "type": "stdin"}], "outputs": [{"name": "c", "type": "stdout"}]})",
       "/feed_low_water_mark: must be less than feed_high_water_mark (1000)"},
      {"a missing required field",
       R"({"feeds": [{"name": "a", "type": "tcp-listen"}],
           "outputs": [{"name": "c", "type": "stdout"}]})",
       "/feeds/0/listen: required for type \"tcp-listen\""},
      {"no feeds at all", R"({"outputs": [{"name": "c", "type": "stdout"}]})", "/feeds: required"},
      {"a field written twice",
       R"({"key": "time", "key": "ts",
           "feeds": [{"name": "a", "type": "stdin"}], "outputs": [{"name": "c", "type": "stdout"}]})",
       "/key: duplicate field"},
  };
  TempDir dir;
  for (const BadConfig& bad : table) {
    SUBCASE(bad.what) {
      std::string path = dir.write("bad.json", bad.text);
      RunResult run = run_chronomerge(dir, {"--check-config", path});
      INFO("stderr:\n" << run.err);
      CHECK(run.status.code == 2);
      CHECK(run.err.find("\n" + bad.expected) != std::string::npos);
    }
  }

  SUBCASE("every problem is listed at once, in file order") {
    std::string path = dir.write("bad.json", R"({"idle_timeout_ms": 0,
      "feeds": [{"name": "a", "type": "tcp-listen", "listen": "nowhere"}],
      "outputs": [{"name": "c", "type": "file"}]})");
    RunResult run = run_chronomerge(dir, {"--check-config", path});
    CHECK(run.status.code == 2);
    CHECK(run.err == path + ": 3 problems:\n" +
                         "/idle_timeout_ms: must be between 1 and 86400000\n"
                         "/feeds/0/listen: expected \"host:port\", got \"nowhere\"\n"
                         "/outputs/0/path: required for type \"file\"\n");
  }

  SUBCASE("a missing file exits 2 naming it") {
    RunResult run = run_chronomerge(dir, {"--check-config", dir / "absent.json"});
    CHECK(run.status.code == 2);
    CHECK(run.err.find(dir / "absent.json") != std::string::npos);
  }
}

TEST_CASE("--check-config accepts valid files") {
  TempDir dir;
  SUBCASE("a minimal config exits 0") {
    RunResult run = run_chronomerge(dir, {"--check-config", dir.write("good.json", good_config)});
    CHECK(run.status.code == 0);
    CHECK(run.out.find("ok (1 feeds, 1 outputs)") != std::string::npos);
  }
  SUBCASE("the shipped example config: valid, and where its directories are missing, named") {
    RunResult run = run_chronomerge(
        dir, {"--check-config", std::string(CHRONOMERGE_SOURCE_DIR) + "/config/example.json"});
    INFO("stderr:\n" << run.err);
    if (std::filesystem::is_directory("/var/lib/chronomerge") &&
        std::filesystem::is_directory("/run/chronomerge")) {
      CHECK(run.status.code == 0);
    } else {
      // Every problem is a path of this machine, none of the file.
      CHECK(run.status.code == 2);
      for (const std::string& line : split_lines(run.err)) {
        if (line.find(": ") == std::string::npos || line.find("problem") != std::string::npos) {
          continue;
        }
        CHECK(line.find("directory /") != std::string::npos);
      }
    }
  }
}

// --- 8. the one-shot command ------------------------------------------------

TEST_CASE("the one-shot command merges files like sort -m") {
  TempDir dir;

  SUBCASE("random sorted files with ties come out as their stable merge") {
    std::mt19937 rng(2024);
    std::vector<std::string> feeds;
    std::vector<std::string> args;
    for (int f = 0; f < 4; ++f) {
      std::string name = "f" + std::to_string(f);
      feeds.push_back(sorted_feed(rng, name, 500 + static_cast<int>(rng() % 2000)));
      args.push_back(dir.write(name + ".ndjson", feeds.back()));
    }
    RunResult run = run_chronomerge(dir, args);
    INFO("stderr:\n" << run.err);
    CHECK(run.status.code == 0);
    CHECK(run.out == stable_merge(feeds));
  }

  SUBCASE("a malformed line and a line going backwards exit 1 with a summary naming the file") {
    std::string a = lines_of({record(2, "a", 0), record(4, "a", 1), record(6, "a", 2)});
    std::string b = lines_of(
        {record(1, "b", 0), "not json", record(5, "b", 2), record(3, "b", 3), record(7, "b", 4)});
    std::string a_path = dir.write("a.ndjson", a);
    std::string b_path = dir.write("b.ndjson", b);
    RunResult run = run_chronomerge(dir, {a_path, b_path});
    INFO("stderr:\n" << run.err);
    CHECK(run.status.code == 1);
    // Every good line, in order; the backwards one is skipped, not misplaced.
    CHECK(run.out == lines_of({record(1, "b", 0), record(2, "a", 0), record(4, "a", 1),
                               record(5, "b", 2), record(6, "a", 2), record(7, "b", 4)}));
    CHECK(run.err.find(b_path + ": 2 of 5 lines skipped") != std::string::npos);
    CHECK(run.err.find("1 not_json") != std::string::npos);
    CHECK(run.err.find("1 late") != std::string::npos);
    CHECK(run.err.find(a_path + ":") == std::string::npos);  // nothing to report there
  }

  SUBCASE("a missing file exits 2 with a message naming it") {
    std::string a_path = dir.write("a.ndjson", record(1, "a", 0) + "\n");
    RunResult run = run_chronomerge(dir, {a_path, dir / "missing.ndjson"});
    CHECK(run.status.code == 2);
    CHECK(run.err.find(dir / "missing.ndjson") != std::string::npos);
  }

  SUBCASE("'-' reads standard input, from a pipe or from a file") {
    std::string a_path = dir.write("a.ndjson", lines_of({record(1, "a", 0), record(3, "a", 1)}));
    std::string data = lines_of({record(2, "stdin", 0), record(3, "stdin", 1)});
    Stdin in;
    SUBCASE("a pipe") {
      in.pipe = data;
    }
    SUBCASE("a regular file") {
      in.file = dir.write("in.ndjson", data);
    }
    RunResult run = run_chronomerge(dir, {"-", a_path}, in);
    INFO("stderr:\n" << run.err);
    CHECK(run.status.code == 0);
    CHECK(run.out == lines_of({record(1, "a", 0), record(2, "stdin", 0), record(3, "stdin", 1),
                               record(3, "a", 1)}));
  }

  SUBCASE("a reader that goes away ends the run at once, by SIGPIPE") {
    // Standard input stays open and never ends: only giving up on the
    // lost output lets the run end.
    std::string a_path = dir.write("a.ndjson", lines_of({record(1, "a", 0), record(2, "a", 1)}));
    int in[2];
    int out[2];
    REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    std::string first = record(100, "stdin", 0) + "\n";
    REQUIRE(::write(in[1], first.data(), first.size()) == static_cast<ssize_t>(first.size()));
    SpawnOptions options;
    options.args = {"-", a_path};
    options.stdin_fd = in[0];
    options.stdout_fd = out[1];
    options.stderr_path = dir / "gone.err";
    Process child(options);
    ::close(in[0]);
    ::close(out[1]);
    ::close(out[0]);  // the reader is gone before the first write
    ExitStatus status = child.wait(10s);
    ::close(in[1]);
    INFO("stderr:\n" << read_file(dir / "gone.err"));
    // As sort ends when its reader goes: killed by SIGPIPE, quietly.
    CHECK(status.signal == SIGPIPE);
    CHECK(read_file(dir / "gone.err").empty());
  }

  SUBCASE("--mode combine gives stream-combine's objects") {
    // stream-combine's README: three series keyed by _id, one object per
    // time step with the indexes of the series that have it.
    std::string s0 = dir.write("s0.ndjson", "{\"_id\":1,\"v\":\"a\"}\n{\"_id\":6,\"v\":\"b\"}\n");
    std::string s1 = dir.write("s1.ndjson", "{\"_id\":2,\"w\":1}\n");
    std::string s2 = dir.write("s2.ndjson", "{\"_id\":6,\"x\":true}\n{\"_id\":9,\"x\":false}\n");
    RunResult run = run_chronomerge(dir, {"--key", "_id", "--mode", "combine", s0, s1, s2});
    INFO("stderr:\n" << run.err);
    CHECK(run.status.code == 0);
    CHECK(
        run.out ==
        "{\"data\":[{\"_id\":1,\"v\":\"a\"}],\"indexes\":[0],\"_id\":1}\n"
        "{\"data\":[{\"_id\":2,\"w\":1}],\"indexes\":[1],\"_id\":2}\n"
        "{\"data\":[{\"_id\":6,\"v\":\"b\"},{\"_id\":6,\"x\":true}],\"indexes\":[0,2],\"_id\":6}\n"
        "{\"data\":[{\"_id\":9,\"x\":false}],\"indexes\":[2],\"_id\":9}\n");
  }

  SUBCASE("--help exits 0 and shows the usage") {
    RunResult run = run_chronomerge(dir, {"--help"});
    CHECK(run.status.code == 0);
    CHECK(run.out.find("Usage:") != std::string::npos);
  }

  SUBCASE("an unknown option exits 2") {
    RunResult run = run_chronomerge(dir, {"--frobnicate"});
    CHECK(run.status.code == 2);
    CHECK(run.err.find("--frobnicate") != std::string::npos);
  }
}

TEST_CASE("one-shot in a pipeline, like coreutils") {
  TempDir dir;
  std::string lines;
  for (int i = 0; i < 200000; ++i) lines += "{\"time\":" + std::to_string(i) + "}\n";
  const std::string a = dir.write("a.ndjson", lines);
  SUBCASE("`| head` ends quietly, killed by SIGPIPE as sort is") {
    const std::string command = "bash -c '" + std::string(CHRONOMERGE_BINARY) + " " + a + " " + a +
                                " | head -1 > " + (dir / "out") + "; echo ${PIPESTATUS[0]} > " +
                                (dir / "status") + "' 2> " + (dir / "err");
    REQUIRE(std::system(command.c_str()) == 0);
    CHECK(read_file(dir / "out") == "{\"time\":0}\n");
    CHECK(read_file(dir / "status") == "141\n");  // 128 + SIGPIPE
    CHECK(read_file(dir / "err").empty());
  }
  SUBCASE("a missing input fails before anything is written") {
    const RunResult run = run_chronomerge(dir, {a, dir / "missing.ndjson"});
    CHECK(run.status.code == 2);
    CHECK(run.out.empty());
    CHECK(run.err.find("cannot read " + (dir / "missing.ndjson")) != std::string::npos);
  }
}

TEST_CASE("the command line, parsed like the tools people know") {
  TempDir dir;
  const std::string a = dir.write("a.ndjson", "{\"ts\":1}\n{\"ts\":2}\n");
  SUBCASE("--opt=value works as --opt value") {
    const RunResult run = run_chronomerge(dir, {"--key=ts", "--key-type=integer", a});
    CHECK(run.status.code == 0);
    CHECK(run.out == "{\"ts\":1}\n{\"ts\":2}\n");
  }
  SUBCASE("conflicting options are errors, not silently ignored") {
    for (const std::vector<std::string>& args : {std::vector<std::string>{"--config", a, a},
                                                 {"--demo", "--key", "ts"},
                                                 {"--check-config", a, "--config", a},
                                                 {"--healthcheck", "http://127.0.0.1:1/", a},
                                                 {"--log-format", "json", a}}) {
      const RunResult run = run_chronomerge(dir, args);
      INFO(args[0], " ", args[1], ": ", run.err);
      CHECK(run.status.code == 2);
      CHECK(run.err.find("excludes") != std::string::npos);
    }
  }
  SUBCASE("ranges and choices are checked") {
    const RunResult small = run_chronomerge(dir, {"--max-line-bytes", "10", a});
    CHECK(small.status.code == 2);
    CHECK(small.err.find("not in range 64 to 1073741824") != std::string::npos);
    const RunResult type = run_chronomerge(dir, {"--key-type", "date", a});
    CHECK(type.status.code == 2);
    CHECK(type.err.find("date not in {integer,number,rfc3339,string}") != std::string::npos);
  }
}

TEST_CASE("one-shot: when every line fails on its key, one hint says which option reads it") {
  TempDir dir;
  struct Case {
    const char* line;
    const char* hint;
  };
  for (const Case& c :
       {Case{R"({"time":"2024-05-01T12:00:00Z"})", "--key-type rfc3339 would read it"},
        Case{R"({"meta":{"ts":5}})", "--key /meta/ts would read it"},
        Case{R"({"time":1.5})", "--key-type number would read it"}}) {
    CAPTURE(c.line);
    const std::string file = dir.write("in.ndjson", std::string(c.line) + "\n" + c.line + "\n");
    const RunResult run = run_chronomerge(dir, {file});
    CHECK(run.status.code == 1);
    CHECK(run.err.find("hint: " + file + ": ") != std::string::npos);
    CHECK(run.err.find(c.hint) != std::string::npos);
  }
  SUBCASE("and none when only some lines fail") {
    const std::string file =
        dir.write("mixed.ndjson", "{\"time\":1}\n{\"time\":\"2024-05-01T12:00:00Z\"}\n");
    const RunResult run = run_chronomerge(dir, {file});
    CHECK(run.err.find("hint") == std::string::npos);
  }
}

TEST_CASE("one-shot warnings name file:line, empty lines counted") {
  TempDir dir;
  const std::string file =
      dir.write("bad.ndjson", "{\"time\":1}\n\nnot json\n{\"time\":3}\r\n{\"x\":1}\n");
  const RunResult run = run_chronomerge(dir, {file});
  CHECK(run.status.code == 1);
  CHECK(run.err.find(file + ":3: line skipped (not_json): not json") != std::string::npos);
  CHECK(run.err.find(file + ":5: line skipped (missing_key)") != std::string::npos);
}
