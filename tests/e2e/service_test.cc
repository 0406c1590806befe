// End to end: chronomerge as a service. The systemd notify protocol,
// signals (SIGTERM drain, SIGHUP reload, SIGUSR1 reopen), and what the
// metrics endpoint reports, checked against the real binary over real
// sockets. Every wait is for an event (a notify datagram, a log line, a
// socket, a file change, a metrics value), never a fixed sleep.
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

using namespace chronomerge::e2e;
using nlohmann::json;

namespace {

// One connect() to 127.0.0.1:port, no retry: true if a listener took it.
// On loopback the answer is immediate (accepted into the backlog, or
// refused).
bool connects_at_once(uint16_t port) {
  Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(s);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int rc;
  do {
    rc = ::connect(s.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  } while (rc != 0 && errno == EINTR);
  return rc == 0;
}

// Waits until the file at `path` holds at least `size` bytes, woken by
// inotify on its directory (so a file created after a rename is seen too).
// Returns the file's content then (or at the timeout).
std::string wait_file_size(const std::string& dir, const std::string& path, size_t size,
                           Millis timeout = 5s) {
  int watch = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  REQUIRE(watch >= 0);
  ::inotify_add_watch(watch, dir.c_str(), IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE);
  auto deadline = Clock::now() + timeout;
  std::string content;
  while (true) {
    content = read_file(path);  // after arming the watch: no write is missed
    if (content.size() >= size) break;
    auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
    if (left <= 0) break;
    pollfd p{watch, POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(left));
    char events[4096];
    while (::read(watch, events, sizeof(events)) > 0) {
    }
  }
  ::close(watch);
  return content;
}

int64_t key_of(const std::string& line) {
  return json::parse(line).at("time").get<int64_t>();
}

}  // namespace

// --- systemd notify ----------------------------------------------------------

TEST_CASE("systemd notify protocol") {
  TempDir dir;
  json config = {{"feeds", {tcp_feed("bus")}}, {"outputs", {tcp_output("clients")}}};
  with_metrics(config);

  SUBCASE("READY=1 is sent only once every listener accepts, with a STATUS line") {
    // The constructor returns as soon as READY=1 has arrived: connect to
    // every listener right then, once each, with no retry. Their ports
    // are in the log already (no waiting for the lines: 0 ms).
    Daemon daemon(dir, config);
    const uint16_t metrics = daemon.metrics_port(1, 0ms);
    const uint16_t feed_port = daemon.feed_port("bus", 1, 0ms);
    const uint16_t out_port = daemon.output_port("clients", 1, 0ms);
    INFO("daemon log (tail):\n" << daemon.log_tail());
    CHECK(connects_at_once(feed_port));
    CHECK(connects_at_once(out_port));
    CHECK(connects_at_once(metrics));
    // READY=1 and its STATUS= come in one datagram.
    CHECK(daemon.notified("READY=1\nSTATUS="));
    CHECK(daemon.notified("STATUS=merging 1 feeds into 1 outputs"));
    CHECK_FALSE(daemon.notified("STOPPING=1"));
    CHECK(daemon.stop().code == 0);
  }

  SUBCASE("WATCHDOG=1 is sent repeatedly when systemd sets WatchdogSec") {
    // WatchdogSec=0.2 s: a ping every 100 ms.
    Daemon daemon(dir, config, 10s, {"WATCHDOG_USEC=200000"});
    INFO("daemon log (tail):\n" << daemon.log_tail());
    CHECK(daemon.wait_notified("WATCHDOG=1", 3));
    CHECK(daemon.stop().code == 0);
  }

  SUBCASE("without WatchdogSec no WATCHDOG=1 is sent") {
    Daemon daemon(dir, config);
    CHECK(daemon.stop().code == 0);
    CHECK(daemon.notified("WATCHDOG=1") == 0);
  }

  SUBCASE("a notify socket nobody listens on is logged, and the daemon runs on") {
    SpawnOptions options;
    options.args = {"--config", dir.write("config.json", config.dump())};
    options.notify_socket = dir / "nobody";
    options.stderr_path = dir / "err.log";
    options.env = {"WATCHDOG_USEC=100000"};
    Process child(options);
    // The watchdog pings too: WATCHDOG=1 fails every 50 ms, logged
    // rate-limited (ten lines in ten seconds).
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (read_file(dir / "err.log").find("could not notify WATCHDOG=1") == std::string::npos &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
    }
    const std::string log = read_file(dir / "err.log");
    INFO("daemon log:\n" << log);
    CHECK(log.find("systemd: could not notify READY=1: notify socket " + (dir / "nobody")) !=
          std::string::npos);
    std::this_thread::sleep_for(1s);  // twenty more pings
    const std::string later = read_file(dir / "err.log");
    size_t lines = 0;
    for (size_t at = later.find("could not notify WATCHDOG=1"); at != std::string::npos;
         at = later.find("could not notify WATCHDOG=1", at + 1)) {
      ++lines;
    }
    CHECK(lines >= 1);
    CHECK(lines <= 10);
    // Every failure is counted, the ones the log left out too.
    const std::string needle = "metrics: listening on http://127.0.0.1:";
    const size_t at = later.find(needle);
    REQUIRE(at != std::string::npos);
    const auto port = static_cast<uint16_t>(std::atoi(later.c_str() + at + needle.size()));
    const auto failures = scrape(port, "chronomerge_systemd_notify_failures_total");
    REQUIRE(failures);
    CHECK(*failures > static_cast<double>(lines));
    CHECK(child.running());
    child.signal(SIGTERM);
    CHECK(child.wait(10s).code == 0);
  }

  SUBCASE("STOPPING=1 is sent once SIGTERM starts the drain") {
    Daemon daemon(dir, config);
    INFO("daemon log (tail):\n" << daemon.log_tail());
    CHECK_FALSE(daemon.notified("STOPPING=1"));
    ExitStatus status = daemon.stop();
    CHECK(status.code == 0);
    CHECK(daemon.notified("STOPPING=1"));
  }
}

// --- SIGTERM ----------------------------------------------------------------

TEST_CASE("SIGTERM drains what was read") {
  SUBCASE("every record read before the signal reaches both clients, then EOF and exit 0") {
    constexpr int per_feed = 1000;
    constexpr int drain_timeout_ms = 5000;
    TempDir dir;
    const std::vector<std::string> names = {"north", "south", "east"};
    json config = {// Nothing goes idle: the records behind the feed that runs dry
                   // first stay queued until the drain merges them.
                   {"idle_timeout_ms", 600000},
                   {"drain_timeout_ms", drain_timeout_ms},
                   {"feeds", {tcp_feed(names[0]), tcp_feed(names[1]), tcp_feed(names[2])}},
                   {"outputs", {tcp_output("clients")}}};
    with_metrics(config);
    Daemon daemon(dir, config);
    const uint16_t metrics = daemon.metrics_port();
    std::vector<uint16_t> ports;
    for (const std::string& name : names) ports.push_back(daemon.feed_port(name));
    const uint16_t out_port = daemon.output_port("clients");
    INFO("daemon log (tail):\n" << daemon.log_tail());

    Collector first(connect_tcp(out_port));
    Collector second(connect_tcp(out_port));
    REQUIRE(daemon.wait_log("connected (2 now)"));

    // Sorted feeds with ties inside and across them.
    std::mt19937 rng(99);
    std::vector<std::string> feeds;
    for (const std::string& name : names) {
      std::string text;
      int64_t time = 1000;
      for (int i = 0; i < per_feed; ++i) {
        time += static_cast<int64_t>(rng() % 3);
        text += record(time, name, i) + "\n";
      }
      feeds.push_back(text);
    }
    std::vector<Socket> producers;
    for (int i = 0; i < 3; ++i) {
      producers.push_back(connect_tcp(ports[i]));
      REQUIRE(write_all(producers[i], feeds[i]));
    }
    // The daemon has read (and queued) every record once its counters say
    // so; the producers stay connected.
    bool all_read = wait_metrics(metrics, [&](const std::map<std::string, double>& m) {
      return std::all_of(names.begin(), names.end(), [&](const std::string& name) {
        auto it = m.find("chronomerge_feed_records_total{feed=\"" + name + "\"}");
        return it != m.end() && it->second == per_feed;
      });
    });
    REQUIRE(all_read);
    // The merge is held by the feeds that ran dry: the drain has work.
    std::optional<double> out_before = scrape(metrics, "chronomerge_records_out_total");
    REQUIRE(out_before);
    CHECK(*out_before < 3 * per_feed);

    auto signalled = Clock::now();
    daemon.signal(SIGTERM);
    // More records after the signal: they may or may not come out, but
    // must never displace or corrupt what was read before it.
    std::vector<std::vector<std::string>> extras(3);
    for (int i = 0; i < 3; ++i) {
      for (int k = 0; k < 50; ++k) extras[i].push_back(record(1000000 + k, names[i], per_feed + k));
      write_all(producers[i], lines_of(extras[i]), 1s);  // fails once the daemon closed it
    }
    ExitStatus status = daemon.wait(Millis(drain_timeout_ms + 5000));
    auto elapsed = std::chrono::duration_cast<Millis>(Clock::now() - signalled);
    INFO("exited " << elapsed.count() << " ms after SIGTERM");
    CHECK(status.code == 0);
    CHECK(status.signal == 0);
    CHECK(elapsed < Millis(drain_timeout_ms));
    CHECK(daemon.log_count("drain timeout") == 0);
    CHECK(daemon.notified("STOPPING=1"));

    std::string expected = stable_merge(feeds);
    const ReadResult& a = first.finish();
    const ReadResult& b = second.finish();
    CHECK(a.eof);
    CHECK_FALSE(a.error);
    CHECK(b.eof);
    CHECK_FALSE(b.error);
    CHECK(a.data == b.data);
    REQUIRE(a.data.size() >= expected.size());
    CHECK(a.data.substr(0, expected.size()) == expected);
    // Whatever came after: whole lines, each feed's extras a prefix of
    // what it sent (no gap), in key order.
    std::vector<std::string> rest = split_lines(std::string_view(a.data).substr(expected.size()));
    CHECK((a.data.empty() || a.data.back() == '\n'));
    std::vector<size_t> taken(3, 0);
    int64_t last_key = 0;
    for (const std::string& line : rest) {
      json r = json::parse(line);
      auto feed = std::find(names.begin(), names.end(), r.at("feed").get<std::string>());
      REQUIRE(feed != names.end());
      size_t i = static_cast<size_t>(feed - names.begin());
      REQUIRE(taken[i] < extras[i].size());
      CHECK(line == extras[i][taken[i]]);
      ++taken[i];
      CHECK(key_of(line) >= last_key);
      last_key = key_of(line);
    }
  }
}

// --- SIGHUP -----------------------------------------------------------------

TEST_CASE("SIGHUP reloads the configuration") {
  SUBCASE("feeds are added, removed and restarted while clients and unchanged feeds stay") {
    TempDir dir;
    // A short idle timeout: a feed without data does not hold the merge
    // for long. Every step below sends one record and waits for it, with
    // keys increasing, so the output is fully determined.
    //
    // "changed" keeps its port across the reload, so its config names the
    // port from the start (free_port, not port 0): a reload from port 0 to
    // the port it bound would start the new listener before the old one
    // releases the port, and fail.
    const uint16_t changed_port = free_port();
    json config = {
        {"idle_timeout_ms", 100},
        {"feeds", {tcp_feed("keep"), tcp_feed("gone"), tcp_feed("changed", changed_port)}},
        {"outputs", {tcp_output("clients")}}};
    with_metrics(config);
    Daemon daemon(dir, config);
    const uint16_t metrics = daemon.metrics_port();
    const uint16_t keep_port = daemon.feed_port("keep");
    const uint16_t gone_port = daemon.feed_port("gone");
    const uint16_t out_port = daemon.output_port("clients");
    INFO("daemon log (tail):\n" << daemon.log_tail());

    Socket client1 = connect_tcp(out_port);
    Socket client2 = connect_tcp(out_port);
    REQUIRE(daemon.wait_log("connected (2 now)"));
    int64_t time = 0;
    // Sends one record on `producer`; both clients must receive it.
    auto deliver = [&](const Socket& producer, const std::string& feed) {
      ++time;
      std::string line = record(time, feed, time) + "\n";
      REQUIRE(write_all(producer, line));
      CHECK(read_lines(client1, 1, 5s).data == line);
      CHECK(read_lines(client2, 1, 5s).data == line);
    };

    Socket keep = connect_tcp(keep_port);
    Socket gone = connect_tcp(gone_port);
    Socket changed = connect_tcp(changed_port);
    REQUIRE(daemon.wait_log("producer connected", 5s, 3));
    deliver(keep, "keep");
    deliver(gone, "gone");
    deliver(changed, "changed");

    // v2: "gone" removed, "changed" restarted (same port, another
    // max_line_bytes), "added" new, "keep" as it was.
    json changed_feed = tcp_feed("changed", changed_port);
    changed_feed["max_line_bytes"] = 4096;
    json v2 = config;
    v2["feeds"] = {tcp_feed("keep"), changed_feed, tcp_feed("added")};
    dir.write("config.json", v2.dump(2));
    daemon.signal(SIGHUP);
    REQUIRE(daemon.wait_log("reloaded"));
    CHECK(daemon.log_count("feed gone: removed") == 1);
    CHECK(daemon.log_count("feed changed: changed, restarting") == 1);
    CHECK(daemon.log_count("feed keep: listening on") == 1);  // not restarted
    CHECK(daemon.log_count("feed keep: changed") == 0);

    // The removed feed: its producer is cut off and its port refuses.
    ReadResult gone_end = read_to_eof(gone, 5s);
    CHECK((gone_end.eof || gone_end.error));
    CHECK_FALSE(connects_at_once(gone_port));
    // The restarted feed: its producer is cut off; a new one is served on
    // the same port.
    ReadResult changed_end = read_to_eof(changed, 5s);
    CHECK((changed_end.eof || changed_end.error));
    changed = connect_tcp(changed_port);
    // The unchanged feed: its connection is still open...
    ReadResult keep_state = read_some(keep, 1, 0ms);
    CHECK_FALSE(keep_state.eof);
    CHECK_FALSE(keep_state.error);
    Socket added = connect_tcp(daemon.feed_port("added"));
    REQUIRE(daemon.wait_log("producer connected", 5s, 5));
    // ...and its next records arrive, as do the added and restarted ones.
    deliver(keep, "keep");
    deliver(added, "added");
    deliver(changed, "changed");
    deliver(keep, "keep");
    CHECK(scrape(metrics, "chronomerge_feed_connections_total{feed=\"keep\"}") == 1);
    CHECK(scrape(metrics, "chronomerge_output_sink_clients{output=\"clients\"}") == 2);
    CHECK(scrape(metrics, "chronomerge_reloads_total{result=\"success\"}") == 1);
    CHECK(scrape(metrics, "chronomerge_reloads_total{result=\"failure\"}") == 0);

    // A broken file: rejected with the line:column, the running
    // configuration goes on.
    dir.write("config.json", "{\n  \"feeds\": [\n    {\"name\": \"a\",, }\n  ]\n}");
    daemon.signal(SIGHUP);
    REQUIRE(daemon.wait_log("rejected"));
    {
      std::string log = daemon.log();
      CHECK(log.find("3:18: syntax error") != std::string::npos);
      // "one line per event": the reason is on the line that says so.
      bool one_line = false;
      for (const std::string& line : split_lines(log)) {
        if (line.find("rejected") != std::string::npos && line.find("3:18") != std::string::npos) {
          one_line = true;
        }
      }
      CHECK_MESSAGE(one_line, "the rejection and its line:column are not one log line");
      std::string stray;
      for (const std::string& line : split_lines(log)) {
        // "2026-11-30T05:06:07.089Z chronomerge info: ..."
        if (line.size() < 25 || line[24] != ' ' || line.substr(25, 12) != "chronomerge ") {
          stray += line + "\n";
        }
      }
      CHECK_MESSAGE(stray.empty(), "log lines without the prefix and level:\n" << stray);
    }
    deliver(keep, "keep");
    deliver(added, "added");
    deliver(changed, "changed");
    CHECK(scrape(metrics, "chronomerge_reloads_total{result=\"failure\"}") == 1);
    CHECK(scrape(metrics, "chronomerge_reloads_total{result=\"success\"}") == 1);

    // Two SIGHUPs back to back fold into at most two reloads. SIGUSR1
    // after them is a marker: signals are handled in order (and the
    // kernel delivers a pending SIGHUP before a pending SIGUSR1), and a
    // scrape after its log line runs a loop iteration later, once any
    // reload timer has fired.
    dir.write("config.json", v2.dump(2));
    size_t before = daemon.log_count("reloaded");
    daemon.signal(SIGHUP);
    daemon.signal(SIGHUP);
    REQUIRE(daemon.wait_log("reloaded", 5s, before + 1));
    daemon.signal(SIGUSR1);
    REQUIRE(daemon.wait_log("SIGUSR1"));
    std::optional<double> ok = scrape(metrics, "chronomerge_reloads_total{result=\"success\"}");
    size_t reloads = daemon.log_count("reloaded") - before;
    INFO("reloads after two SIGHUPs: " << reloads);
    CHECK(reloads >= 1);
    CHECK(reloads <= 2);
    CHECK(ok == static_cast<double>(1 + reloads));
    // Nothing changed: every connection is kept.
    deliver(keep, "keep");
    deliver(added, "added");
    deliver(changed, "changed");
    CHECK(scrape(metrics, "chronomerge_feed_connections_total{feed=\"keep\"}") == 1);
    CHECK(scrape(metrics, "chronomerge_feed_connections_total{feed=\"added\"}") == 1);

    CHECK(daemon.stop().code == 0);
    for (Socket* client : {&client1, &client2}) {
      ReadResult rest = read_to_eof(*client);
      CHECK(rest.eof);
      CHECK(rest.data == "");
    }
  }

  SUBCASE("equal keys follow the new config order after a reload") {
    TempDir dir;
    // Nothing goes idle: the merge waits until every feed has its record.
    json config = {{"idle_timeout_ms", 600000},
                   {"feeds", {tcp_feed("a"), tcp_feed("b")}},
                   {"outputs", {tcp_output("clients")}}};
    with_metrics(config);
    Daemon daemon(dir, config);
    const uint16_t metrics = daemon.metrics_port();
    const uint16_t a_port = daemon.feed_port("a");
    const uint16_t b_port = daemon.feed_port("b");
    const uint16_t out_port = daemon.output_port("clients");
    INFO("daemon log (tail):\n" << daemon.log_tail());
    Socket client = connect_tcp(out_port);
    REQUIRE(daemon.wait_log("connected (1 now)"));
    Socket a = connect_tcp(a_port);
    Socket b = connect_tcp(b_port);
    REQUIRE(daemon.wait_log("producer connected", 5s, 2));

    // "c" is added in front, "b" and "a" swap places.
    json v2 = config;
    v2["feeds"] = {tcp_feed("c"), tcp_feed("b"), tcp_feed("a")};  // b and a as they were
    dir.write("config.json", v2.dump(2));
    daemon.signal(SIGHUP);
    REQUIRE(daemon.wait_log("reloaded"));
    Socket c = connect_tcp(daemon.feed_port("c"));
    REQUIRE(daemon.wait_log("feed c: producer connected"));

    // Each feed sends key 10 then 20: the 10s go out together once all
    // three are queued (a feed's second record keeps it from waiting),
    // then the first 20 in config order, whose feed is then empty. "c"
    // joined idle (the merge does not wait for a newcomer): its records
    // are queued first, which makes it ready.
    REQUIRE(write_all(c, lines_of({record(10, "c", 0), record(20, "c", 1)})));
    REQUIRE(wait_metrics(metrics, [](const std::map<std::string, double>& m) {
      auto it = m.find("chronomerge_feed_records_total{feed=\"c\"}");
      return it != m.end() && it->second == 2;
    }));
    REQUIRE(write_all(a, lines_of({record(10, "a", 0), record(20, "a", 1)})));
    REQUIRE(write_all(b, lines_of({record(10, "b", 0), record(20, "b", 1)})));
    CHECK(read_lines(client, 4).data == lines_of({record(10, "c", 0), record(10, "b", 0),
                                                  record(10, "a", 0), record(20, "c", 1)}));
    CHECK(daemon.stop().code == 0);
  }
}

TEST_CASE("a reload is atomic: a new part that cannot start changes nothing") {
  TempDir dir;
  json config = {{"feeds", {tcp_feed("a")}}, {"outputs", {tcp_output("clients")}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t a_port = daemon.feed_port("a");
  const uint16_t out_port = daemon.output_port("clients");
  INFO("daemon log (tail):\n" << daemon.log_tail());
  Socket client = connect_tcp(out_port);
  REQUIRE(daemon.wait_log("connected (1 now)"));
  Socket a = connect_tcp(a_port);
  REQUIRE(daemon.wait_log("feed a: producer connected"));

  // v2 adds an output, a file output and a feed, and tunes a; the new
  // feed's port is taken by someone else.
  Socket taken = listen_tcp();
  const uint16_t taken_port = port_of(taken);
  json v2 = config;
  v2["feeds"][0]["idle_timeout_ms"] = 1234;
  v2["feeds"].push_back(tcp_feed("b", taken_port));
  v2["outputs"].push_back(tcp_output("more"));
  v2["outputs"].push_back({{"name", "archive"}, {"type", "file"}, {"path", dir / "archive"}});
  dir.write("config.json", v2.dump(2));
  daemon.signal(SIGHUP);
  REQUIRE(daemon.wait_log("reload of"));
  CHECK(daemon.log_count("feed b could not start; nothing was changed") == 1);
  CHECK(scrape(metrics, "chronomerge_reloads_total{result=\"failure\"}") == 1);
  CHECK_FALSE(connects_at_once(daemon.output_port("more")));  // started, then closed again
  CHECK(daemon.log_count("feed a: settings changed") == 0);
  CHECK(daemon.log_count("feed a: producer disconnected") == 0);
  // The old configuration serves on.
  REQUIRE(write_all(a, record(1, "a", 0) + "\n"));
  CHECK(read_lines(client, 1).data == record(1, "a", 0) + "\n");

  // Once the port is free, the same file applies in full.
  taken.close();
  daemon.signal(SIGHUP);
  REQUIRE(wait_sample(metrics, "chronomerge_reloads_total{result=\"success\"}",
                      [](double v) { return v == 1; }));
  CHECK(daemon.log_count("feed a: settings changed, applied in place") == 1);
  CHECK(connects_at_once(daemon.output_port("more", 2)));
  CHECK(connects_at_once(taken_port));
  CHECK(daemon.stop().code == 0);
}

TEST_CASE("a daemon none of whose feeds could be opened exits non-zero") {
  TempDir dir;
  json feed = {{"name", "logs"}, {"type", "file"}, {"path", dir / "missing.ndjson"}};
  json config = {{"feeds", {feed}}, {"outputs", {{{"name", "out"}, {"type", "stdout"}}}}};
  SUBCASE("so that Restart=on-failure tries again") {
    Daemon daemon(dir, config);
    INFO("daemon log (tail):\n" << daemon.log_tail());
    CHECK(daemon.wait(10s).code == 2);
    CHECK(daemon.log_count("no feed could be opened") == 1);
  }
  SUBCASE("while one that read its file to the end exits 0") {
    dir.write("missing.ndjson", record(1, "logs", 0) + "\n");
    Daemon daemon(dir, config);
    INFO("daemon log (tail):\n" << daemon.log_tail());
    CHECK(daemon.wait(10s).code == 0);
    CHECK(daemon.log_count("no feed could be opened") == 0);
  }
}

// --- metrics ----------------------------------------------------------------

TEST_CASE("metrics count what happened") {
  SUBCASE("a scrape after a run matches what was sent and what the client received") {
    TempDir dir;
    json config = {
        {"late", "drop"}, {"feeds", {tcp_feed("bus")}}, {"outputs", {tcp_output("clients")}}};
    with_metrics(config);
    Daemon daemon(dir, config);
    const uint16_t metrics = daemon.metrics_port();
    const uint16_t feed_port = daemon.feed_port("bus");
    const uint16_t out_port = daemon.output_port("clients");
    INFO("daemon log (tail):\n" << daemon.log_tail());

    HttpResponse health = http_request(metrics, "/healthz");
    CHECK(health.status == 200);

    Socket client = connect_tcp(out_port);
    REQUIRE(daemon.wait_log("connected (1 now)"));
    // 10 good records (keys 1..10), one line that is not JSON, one
    // without the key, and a late one (key 4 after key 6).
    std::vector<std::string> good;
    for (int i = 1; i <= 10; ++i) good.push_back(record(i, "bus", i));
    std::string sent;
    for (int i = 0; i < 6; ++i) sent += good[i] + "\n";
    sent += "this is not json\n";
    sent += "{\"feed\":\"bus\",\"seq\":99}\n";
    sent += record(4, "bus", 100) + "\n";
    for (int i = 6; i < 10; ++i) sent += good[i] + "\n";
    {
      Socket producer = connect_tcp(feed_port);
      REQUIRE(write_all(producer, sent));
      ReadResult got = read_lines(client, good.size());
      CHECK(got.data == lines_of(good));
      // Lines are handled in order: everything before the last record has
      // been counted by now.
      REQUIRE(daemon.wait_log("late record dropped"));
      REQUIRE(daemon.wait_log("line skipped", 5s, 2));
    }
    REQUIRE(daemon.wait_log("feed bus: producer disconnected"));

    std::string text = http_get(metrics, "/metrics");
    std::map<std::string, double> m = scrape_all(metrics);
    auto value = [&](const std::string& sample) -> std::optional<double> {
      auto it = m.find(sample);
      if (it == m.end()) return std::nullopt;
      return it->second;
    };
    const size_t out_bytes = lines_of(good).size();
    // Received and queued: the good ones and the late one.
    CHECK(value("chronomerge_feed_records_total{feed=\"bus\"}") == 11);
    CHECK(value("chronomerge_feed_records_out_total{feed=\"bus\"}") == 10);
    CHECK(value("chronomerge_feed_bytes_total{feed=\"bus\"}") == static_cast<double>(sent.size()));
    CHECK(value("chronomerge_feed_malformed_total{feed=\"bus\",reason=\"not_json\"}") == 1);
    CHECK(value("chronomerge_feed_malformed_total{feed=\"bus\",reason=\"missing_key\"}") == 1);
    CHECK(value("chronomerge_feed_malformed_total{feed=\"bus\",reason=\"not_object\"}") == 0);
    CHECK(value("chronomerge_feed_late_total{feed=\"bus\"}") == 1);
    CHECK(value("chronomerge_feed_connections_total{feed=\"bus\"}") == 1);
    CHECK(value("chronomerge_feed_connected{feed=\"bus\"}") == 0);
    CHECK(value("chronomerge_feed_last_key{feed=\"bus\"}") == 10);
    CHECK(value("chronomerge_records_out_total") == 10);
    CHECK(value("chronomerge_output_bytes_total") == static_cast<double>(out_bytes));
    CHECK(value("chronomerge_frontier") == 10);
    CHECK(value("chronomerge_output_sink_bytes_total{output=\"clients\"}") ==
          static_cast<double>(out_bytes));
    CHECK(value("chronomerge_output_sink_clients{output=\"clients\"}") == 1);
    CHECK(
        value(
            "chronomerge_output_sink_disconnects_total{output=\"clients\",reason=\"too_slow\"}") ==
        0);
    CHECK(value("chronomerge_reloads_total{result=\"success\"}") == 0);
    CHECK(value("chronomerge_reloads_total{result=\"failure\"}") == 0);
    CHECK(value("chronomerge_draining") == 0);

    health = http_request(metrics, "/healthz");
    CHECK(health.status == 200);
    CHECK(http_request(metrics, "/nothing-here").status == 404);

    if (::access("/usr/bin/promtool", X_OK) == 0) {
      std::string scraped = dir.write("scrape.txt", text);
      std::string report = dir / "promtool.txt";
      std::string command =
          "/usr/bin/promtool check metrics < '" + scraped + "' > '" + report + "' 2>&1";
      int rc = std::system(command.c_str());
      INFO("promtool check metrics:\n" << read_file(report));
      CHECK(WIFEXITED(rc));
      CHECK(WEXITSTATUS(rc) == 0);
    }

    CHECK(daemon.stop().code == 0);
    ReadResult rest = read_to_eof(client);
    CHECK(rest.eof);
    CHECK(rest.data == "");
  }
}

// --- SIGUSR1 ----------------------------------------------------------------

TEST_CASE("SIGUSR1 reopens file outputs") {
  SUBCASE("after a rename, new records go to a new file at the path and none are lost") {
    TempDir dir;
    std::string path = dir / "archive.ndjson";
    std::string rotated = dir / "archive.ndjson.1";
    json config = {{"feeds", {tcp_feed("bus")}},
                   {"outputs", {{{"name", "archive"}, {"type", "file"}, {"path", path}}}}};
    Daemon daemon(dir, config);
    const uint16_t feed_port = daemon.feed_port("bus");
    INFO("daemon log (tail):\n" << daemon.log_tail());

    auto batch = [](int from, int to) {
      std::vector<std::string> records;
      for (int i = from; i < to; ++i) records.push_back(record(i, "bus", i));
      return lines_of(records);
    };
    std::string before_rename = batch(1, 21);
    std::string before_signal = batch(21, 41);
    std::string after_signal = batch(41, 61);

    Socket producer = connect_tcp(feed_port);
    REQUIRE(write_all(producer, before_rename));
    CHECK(wait_file_size(dir.path(), path, before_rename.size()) == before_rename);

    // logrotate: rename, then signal. What comes in between still goes to
    // the open (renamed) file.
    REQUIRE(::rename(path.c_str(), rotated.c_str()) == 0);
    REQUIRE(write_all(producer, before_signal));
    CHECK(wait_file_size(dir.path(), rotated, before_rename.size() + before_signal.size()) ==
          before_rename + before_signal);

    daemon.signal(SIGUSR1);
    REQUIRE(daemon.wait_log("reopened"));
    REQUIRE(write_all(producer, after_signal));
    CHECK(wait_file_size(dir.path(), path, after_signal.size()) == after_signal);

    producer.close();
    CHECK(daemon.stop().code == 0);
    CHECK(read_file(rotated) == before_rename + before_signal);
    CHECK(read_file(path) == after_signal);
  }
}

// --- /healthz during a drain ------------------------------------------------

TEST_CASE("/healthz reports draining") {
  SUBCASE("503 while a frozen client holds the drain; exit 0 at drain_timeout_ms") {
    constexpr int drain_timeout_ms = 3000;
    TempDir dir;
    json config = {{"log_level", "debug"},  // to see the feed paused
                   {"drain_timeout_ms", drain_timeout_ms},
                   {"feeds", {tcp_feed("bus")}},
                   {"outputs", {tcp_output("clients")}}};
    with_metrics(config);
    Daemon daemon(dir, config);
    const uint16_t metrics = daemon.metrics_port();
    const uint16_t feed_port = daemon.feed_port("bus");
    const uint16_t out_port = daemon.output_port("clients");
    INFO("daemon log (tail):\n" << daemon.log_tail());

    // Never reads, with a tiny window.
    Socket frozen = connect_tcp(out_port, 5s, /*rcvbuf=*/4096);
    REQUIRE(daemon.wait_log("connected (1 now)"));
    CHECK(http_request(metrics, "/healthz").status == 200);

    // About 20 MB: far more than the client's socket, the output buffer
    // and the feed queue hold together.
    std::string data;
    const std::string pad(60, 'p');
    for (int i = 0; i < 200000; ++i) {
      data += "{\"time\":" + std::to_string(i) + ",\"pad\":\"" + pad + "\"}\n";
    }
    Socket producer = connect_tcp(feed_port);
    Background writer([&] { write_all(producer, data, 20s); });  // cut off by the drain
    // Everything behind the frozen client is full once the feed stays
    // paused: until the output is full, the merge drains each pause's
    // queue, and the feed resumes (at once when it frames on the loop
    // thread).
    REQUIRE(daemon.wait_log("feed bus: paused", 10s));
    CHECK(wait_sample(
              metrics, "chronomerge_feed_paused{feed=\"bus\"}", [](double v) { return v == 1; },
              10s) == 1);
    // The time spent paused is counted while the pause lasts.
    CHECK(wait_metrics(metrics, [](const std::map<std::string, double>& m) {
      auto it = m.find("chronomerge_feed_paused_seconds_total{feed=\"bus\"}");
      return it != m.end() && it->second >= 0.05;
    }));

    auto signalled = Clock::now();
    daemon.signal(SIGTERM);
    REQUIRE(daemon.wait_log("draining"));
    HttpResponse health = http_request(metrics, "/healthz");
    CHECK(health.status == 503);
    CHECK(health.body == "draining\n");
    CHECK(scrape(metrics, "chronomerge_draining") == 1);
    CHECK(daemon.notified("STOPPING=1"));

    ExitStatus status = daemon.wait(Millis(drain_timeout_ms + 5000));
    auto elapsed = std::chrono::duration_cast<Millis>(Clock::now() - signalled);
    INFO("exited " << elapsed.count() << " ms after SIGTERM");
    CHECK(status.code == 0);
    CHECK(status.signal == 0);
    CHECK(elapsed >= Millis(drain_timeout_ms - 100));
    CHECK(elapsed < Millis(drain_timeout_ms + 2000));
    CHECK(daemon.log_count("drain timeout") == 1);
    writer.join();

    // The frozen client was cut off with a prefix of the stream.
    ReadResult cut = read_to_eof(frozen, 10s);
    CHECK((cut.eof || cut.error));
    CHECK(cut.data.size() < data.size());
    CHECK(data.compare(0, cut.data.size(), cut.data) == 0);
  }
}

TEST_CASE("--healthcheck probes /healthz: exit 0 when it answers 200, 1 otherwise") {
  TempDir dir;
  nlohmann::json config = {
      {"feeds", {{{"name", "bus"}, {"type", "simulate"}, {"rate", 10}}}},
      {"outputs", {{{"name", "out"}, {"type", "file"}, {"path", dir / "out"}}}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const std::string base = "http://" + loopback(daemon.metrics_port());
  const RunResult healthy = run_chronomerge(dir, {"--healthcheck", base + "/healthz"});
  CHECK(healthy.status.code == 0);
  CHECK(healthy.err.empty());
  const RunResult by_default = run_chronomerge(dir, {"--healthcheck", base});
  CHECK(by_default.status.code == 0);
  const RunResult missing = run_chronomerge(dir, {"--healthcheck", base + "/nope"});
  CHECK(missing.status.code == 1);
  CHECK(missing.err.find("404") != std::string::npos);
  const RunResult closed =
      run_chronomerge(dir, {"--healthcheck", "http://" + loopback(free_port()) + "/healthz"});
  CHECK(closed.status.code == 1);
  CHECK(closed.err.find("cannot connect") != std::string::npos);
  CHECK(daemon.stop().code == 0);
}

TEST_CASE("log lines: syslog priorities for the journal, timestamps elsewhere, or JSON") {
  nlohmann::json config = {
      {"feeds", {{{"name", "bus"}, {"type", "simulate"}, {"rate", 10}}}},
      {"outputs", {{{"name", "out"}, {"type", "file"}, {"path", "/dev/null"}}}}};
  SUBCASE("the journal: standard error is the file JOURNAL_STREAM names") {
    TempDir dir;
    const std::string log = dir.write("daemon.log", "");  // the same inode once opened
    struct stat about {};
    REQUIRE(::stat(log.c_str(), &about) == 0);
    const std::string stream =
        "JOURNAL_STREAM=" + std::to_string(about.st_dev) + ":" + std::to_string(about.st_ino);
    Daemon daemon(dir, config, 10s, {stream});
    CHECK(daemon.stop().code == 0);
    const auto lines = split_lines(daemon.log());
    REQUIRE_FALSE(lines.empty());
    for (const std::string& line : lines) CHECK(starts_with(line, "<"));
    CHECK(daemon.log().find("<6>chronomerge info: running") != std::string::npos);
  }
  SUBCASE("an inherited JOURNAL_STREAM that names another file: timestamps") {
    TempDir dir;
    Daemon daemon(dir, config, 10s, {"JOURNAL_STREAM=1:1"});
    CHECK(daemon.stop().code == 0);
    for (const std::string& line : split_lines(daemon.log())) {
      INFO(line);
      REQUIRE(line.size() > 25);
      CHECK(line[4] == '-');
      CHECK(line[10] == 'T');
      CHECK(line.substr(23, 14) == "Z chronomerge ");
    }
  }
  SUBCASE("log_format json: one object per line, with the feed it concerns") {
    TempDir dir;
    config["log_format"] = "json";
    // A program that prints one malformed line and ends: "feed bus: ..." lines.
    config["feeds"][0] = {
        {"name", "bus"}, {"type", "exec"}, {"command", {"/bin/echo", "not json"}}};
    Daemon daemon(dir, config);
    daemon.wait(10s);
    bool about_feed = false;
    for (const std::string& line : split_lines(daemon.log())) {
      INFO(line);
      const nlohmann::json entry = nlohmann::json::parse(line);
      CHECK(entry.contains("time"));
      CHECK(entry.contains("level"));
      CHECK(entry.contains("message"));
      about_feed = about_feed || entry.value("feed", "") == "bus";
    }
    CHECK(about_feed);
  }
}

TEST_CASE("unix-listen sockets take a mode and a group") {
  TempDir dir;
  const group* own = ::getgrgid(::getgid());
  REQUIRE(own != nullptr);
  const std::string group_name = own->gr_name;
  nlohmann::json config = {
      {"feeds",
       {{{"name", "in"},
         {"type", "unix-listen"},
         {"path", dir / "in.sock"},
         {"mode", "0666"},
         {"group", group_name}}}},
      {"outputs",
       {{{"name", "out"}, {"type", "unix-listen"}, {"path", dir / "out.sock"}, {"mode", "0600"}}}}};
  Daemon daemon(dir, config);
  struct stat in {
  }, out{};
  REQUIRE(::stat((dir / "in.sock").c_str(), &in) == 0);
  REQUIRE(::stat((dir / "out.sock").c_str(), &out) == 0);
  CHECK((in.st_mode & 0777) == 0666);
  CHECK(in.st_gid == own->gr_gid);
  CHECK((out.st_mode & 0777) == 0600);
  CHECK(daemon.stop().code == 0);

  SUBCASE("a group the machine does not have is a config problem") {
    config["feeds"][0]["group"] = "no-such-group-cm";
    const RunResult check =
        run_chronomerge(dir, {"--check-config", dir.write("bad.json", config.dump())});
    CHECK(check.status.code == 2);
    CHECK(check.err.find("/feeds/0/group: no group \"no-such-group-cm\"") != std::string::npos);
  }
}

TEST_CASE("--check-config looks at every path the daemon would use, changing nothing") {
  TempDir dir;
  const std::string input = dir.write("in.ndjson", "{\"time\":1}\n");
  nlohmann::json config = {
      {"feeds",
       {{{"name", "ok"}, {"type", "file"}, {"path", input}},
        {{"name", "k"},
         {"type", "kafka"},
         {"brokers", "127.0.0.1:1"},
         {"topic", "t"},
         {"partitions", {0, 1}}},
        {{"name", "missing"}, {"type", "file"}, {"path", dir / "missing.ndjson"}},
        {{"name", "sock"}, {"type", "unix-listen"}, {"path", dir / "nodir/in.sock"}},
        {{"name", "secure"},
         {"type", "tcp-listen"},
         {"listen", "127.0.0.1:0"},
         {"tls", {{"cert", dir / "no.crt"}, {"key", dir / "no.key"}}}}}},
      {"outputs", {{{"name", "archive"}, {"type", "file"}, {"path", dir / "nodir/out.ndjson"}}}},
      {"deadletter", {{"path", dir / "nodir/dead.ndjson"}}}};
  const std::string file = dir.write("config.json", config.dump());
  const RunResult check = run_chronomerge(dir, {"--check-config", file});
  CHECK(check.status.code == 2);
  INFO(check.err);
  // Pointers into the file: the kafka feed's two partitions were one entry.
  CHECK(check.err.find("/feeds/2/path: cannot read " + (dir / "missing.ndjson")) !=
        std::string::npos);
  CHECK(check.err.find("/feeds/3/path: directory " + (dir / "nodir")) != std::string::npos);
  CHECK(check.err.find("/outputs/0/path: directory " + (dir / "nodir")) != std::string::npos);
  CHECK(check.err.find("/deadletter/path: directory " + (dir / "nodir")) != std::string::npos);
  CHECK(check.err.find("/feeds/0/") == std::string::npos);
  // A TLS file it cannot read is listed with the paths, not instead of them.
  CHECK(check.err.find("/feeds/4/tls/") != std::string::npos);
  // Nothing was created.
  CHECK_FALSE(std::filesystem::exists(dir / "nodir"));
}

TEST_CASE("an exec feed whose program cannot be started counts each attempt") {
  TempDir dir;
  const std::string missing = dir / "no-such-program";
  nlohmann::json config = {
      {"feeds",
       {{{"name", "job"}, {"type", "exec"}, {"command", {missing}}, {"restart", "on-exit"}},
        {{"name", "sim"}, {"type", "simulate"}, {"rate", 10}}}},
      {"outputs", {{{"name", "out"}, {"type", "file"}, {"path", dir / "out"}}}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t port = daemon.metrics_port();
  // Attempts at about 0, 0.1 and 0.3 s: three within 2 s, none connected.
  CHECK(wait_sample(
            port, "chronomerge_feed_start_failures_total{feed=\"job\"}",
            [](double v) { return v >= 3; }, 20s) >= 3);
  CHECK(scrape(port, "chronomerge_feed_connections_total{feed=\"job\"}") == 0);
  CHECK(scrape(port, "chronomerge_feed_connected{feed=\"job\"}") == 0);
  CHECK(daemon.log_count("cannot run") >= 3);
  CHECK(daemon.stop().code == 0);
}

TEST_CASE("exec feeds with restart on-exit start the program again, with backoff") {
  TempDir dir;
  // Each run prints one record, numbered by a counter file, and exits.
  const std::string script = dir.write(
      "once.sh", "n=$(cat " + (dir / "count") + " 2>/dev/null || echo 0); n=$((n+1)); echo $n > " +
                     (dir / "count") + "; echo \"{\\\"time\\\":$n}\"\n");
  nlohmann::json config = {
      {"feeds",
       {{{"name", "job"},
         {"type", "exec"},
         {"command", {"/bin/sh", script}},
         {"restart", "on-exit"}}}},
      {"outputs", {{{"name", "out"}, {"type", "file"}, {"path", dir / "out"}}}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t port = daemon.metrics_port();
  // Runs at about 0, 0.1, 0.3 and 0.7 s: four records within 2 s.
  CHECK(wait_sample(
            port, "chronomerge_feed_records_total{feed=\"job\"}", [](double v) { return v >= 4; },
            20s) >= 4);
  CHECK(scrape(port, "chronomerge_feed_connections_total{feed=\"job\"}") >= 4);
  CHECK(scrape(port, "chronomerge_feed_start_failures_total{feed=\"job\"}") == 0);
  CHECK(daemon.log_count("starting it again") >= 3);
  CHECK(daemon.stop().code == 0);
  const auto lines = split_lines(read_file(dir / "out"));
  REQUIRE(lines.size() >= 4);
  CHECK(lines[0] == "{\"time\":1}");
  CHECK(lines[3] == "{\"time\":4}");
}
