// Refusals are counted and logged without flooding the log: producers
// refused by a one-producer feed, a producer reconnecting before its
// previous connection was read to its end, and clients the daemon cannot
// accept because it is out of file descriptors. (The rate limiter every
// such log line goes through is tested on its own in tests/log.)
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "harness.h"

using namespace chronomerge::e2e;
using nlohmann::json;

namespace {

// Lines of `text` containing `needle`.
std::vector<std::string> lines_with(const std::string& text, std::string_view needle) {
  std::vector<std::string> found;
  for (std::string& line : split_lines(text)) {
    if (line.find(needle) != std::string::npos) found.push_back(std::move(line));
  }
  return found;
}

}  // namespace

TEST_CASE("a one-producer feed counts every producer it refuses and logs a few lines") {
  // Regression: each refusal wrote one warning (2,000 refusals: 2,000
  // lines, 158 KB) and no metric said how many there were or that their
  // records were lost.
  TempDir dir;
  json config = {{"feeds", {tcp_feed("a")}},
                 {"outputs", {{{"name", "out"}, {"type", "file"}, {"path", dir / "out"}}}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t feed_port = daemon.feed_port("a");
  INFO("daemon log (tail):\n" << daemon.log_tail());

  Socket producer = connect_tcp(feed_port);
  REQUIRE(daemon.wait_log("feed a: producer connected"));
  REQUIRE(write_all(producer, record(1, "a", 0) + "\n"));

  constexpr int intruders = 200;
  const std::string text = lines_of({record(2, "x", 0), record(3, "x", 1)});
  for (int i = 0; i < intruders; ++i) {
    Socket intruder = connect_tcp(feed_port);
    // May fail: the daemon resets a refused connection.
    try_write(intruder, text);
  }
  CHECK(wait_sample(metrics, "chronomerge_feed_refused_total{feed=\"a\"}",
                    [](double v) { return v >= intruders; }) == intruders);
  // What the kernel held for them is discarded unread, and counted.
  std::optional<double> bytes = scrape(metrics, "chronomerge_feed_refused_bytes_total{feed=\"a\"}");
  REQUIRE(bytes);
  CHECK(*bytes <= intruders * static_cast<double>(text.size()));

  // Ten lines in full, then one line per 10 s window with the count (the
  // window began with the first refusal).
  REQUIRE(daemon.wait_log("more producer refusals in the last 10 s", 15s));
  const std::string log_text = daemon.log();
  std::vector<std::string> refusals = lines_with(log_text, "refus");
  CHECK(refusals.size() <= 20);
  CHECK(lines_with(log_text, "feed a: refused a second producer connection").size() == 10);
  CHECK(lines_with(log_text, "feed a: 190 more producer refusals in the last 10 s").size() == 1);
  MESSAGE(intruders << " refusals: " << refusals.size() << " log lines, " << log_text.size()
                    << " bytes of log in all");

  // The producer that was connected goes on.
  REQUIRE(write_all(producer, record(4, "a", 1) + "\n"));
  producer.close();
  REQUIRE(daemon.wait_log("feed a: producer disconnected"));

  // A reload that restarts the feed (same port, another max_line_bytes)
  // frees the old instance; its count lives on.
  config["feeds"][0]["max_line_bytes"] = 4096;
  dir.write("config.json", config.dump(2));
  daemon.signal(SIGHUP);
  REQUIRE(wait_sample(metrics, "chronomerge_reloads_total{result=\"success\"}",
                      [](double v) { return v == 1; }));
  REQUIRE(daemon.wait_log("feed a: changed, restarting"));
  // The old instance is freed within a few 10 ms retire rounds; watched
  // for half a second, the count never drops.
  CHECK(wait_sample(
            metrics, "chronomerge_feed_refused_total{feed=\"a\"}",
            [](double v) { return v < intruders; }, 500ms) == intruders);
  CHECK(daemon.stop().code == 0);
  CHECK(read_file(dir / "out") == lines_of({record(1, "a", 0), record(4, "a", 1)}));
}

TEST_CASE("a producer that reconnects before its previous connection was read is refused") {
  // The feed is held back (a silent feed holds the merge), so its queue
  // fills and the old connection is paused with bytes still unread.
  TempDir dir;
  json feed = tcp_feed("a");
  feed["high_water_mark"] = 4096;
  feed["low_water_mark"] = 1024;
  json config = {{"idle_timeout_ms", 600000},
                 {"feeds", {feed, tcp_feed("silent")}},
                 {"outputs", {{{"name", "out"}, {"type", "file"}, {"path", dir / "out"}}}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t feed_port = daemon.feed_port("a");
  const uint16_t silent_port = daemon.feed_port("silent");
  INFO("daemon log (tail):\n" << daemon.log_tail());

  Socket silent = connect_tcp(silent_port);
  std::vector<std::string> records;
  for (int i = 0; i < 3000; ++i) records.push_back(record(1000 + i, "a", i));
  const std::string text = lines_of(records);
  {
    Socket first = connect_tcp(feed_port);
    REQUIRE(write_all(first, text));
    REQUIRE(wait_sample(metrics, "chronomerge_feed_paused{feed=\"a\"}",
                        [](double v) { return v == 1; }) == 1);
  }  // the producer is done and closes; the daemon has not read it all

  // Reconnecting now is refused, and the log says why and what to do.
  Socket early = connect_tcp(feed_port);
  try_write(early, record(5000, "a", 3000) + "\n");
  REQUIRE(daemon.wait_log("previous connection still open"));
  CHECK(scrape(metrics, "chronomerge_feed_refused_total{feed=\"a\"}") == 1);
  std::vector<std::string> lines = lines_with(daemon.log(), "previous connection still open");
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find("feed a: refused a producer connection from 127.0.0.1:") !=
        std::string::npos);
  CHECK(lines[0].find("(paused by backpressure)") != std::string::npos);
  CHECK(lines[0].find("then retry") != std::string::npos);
  ReadResult refused = read_some(early, 100, 2s);
  CHECK((refused.eof || refused.error));

  // As advised: once the merge moves on, the old connection is read to its
  // end and closed, and a retry is taken.
  REQUIRE(write_all(silent, record(1000000, "silent", 0) + "\n"));
  REQUIRE(daemon.wait_log("feed a: producer disconnected", 10s));
  Socket retry = connect_tcp(feed_port);
  REQUIRE(daemon.wait_log("feed a: producer connected", 5s, 2));
  REQUIRE(write_all(retry, record(5000, "a", 3000) + "\n"));
  retry.close();
  silent.close();
  REQUIRE(daemon.wait_log("feed a: producer disconnected", 5s, 2));
  CHECK(daemon.stop().code == 0);
  records.push_back(record(5000, "a", 3000));
  records.push_back(record(1000000, "silent", 0));
  CHECK(read_file(dir / "out") == lines_of(records));
}

TEST_CASE(
    "out of file descriptors, clients are refused, counted and logged while the rest are served") {
  // Regression: libuv accepted and closed what it could not take (757
  // client connections under EMFILE) without a log line or a metric.
  TempDir dir;
  json config = {{"feeds", {tcp_feed("a")}}, {"outputs", {tcp_output("clients")}}};
  with_metrics(config);
  // About 14 descriptors in use after start: room for a producer and some
  // clients.
  DaemonOptions options;
  options.open_files_limit = 32;
  Daemon daemon(dir, config, options);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t feed_port = daemon.feed_port("a");
  const uint16_t out_port = daemon.output_port("clients");
  INFO("daemon log (tail):\n" << daemon.log_tail());

  Socket producer = connect_tcp(feed_port);
  REQUIRE(daemon.wait_log("feed a: producer connected"));
  // First a client gets a record and resets, so that every path the rest
  // of the case takes has run once with descriptors to spare: a sanitized
  // daemon checks each type the first time it meets it, and that check
  // needs a descriptor (UndefinedBehaviorSanitizer's vptr check reports a
  // false error without one).
  {
    Socket warm = connect_tcp(out_port);
    REQUIRE(daemon.wait_log("connected (1 now)"));
    REQUIRE(write_all(producer, record(0, "a", 0) + "\n"));
    REQUIRE(read_lines(warm, 1).data == record(0, "a", 0) + "\n");
    warm.reset();
    REQUIRE(wait_sample(metrics, "chronomerge_output_sink_clients{output=\"clients\"}",
                        [](double v) { return v == 0; }) == 0);
  }

  // More clients than the daemon has descriptors for; a client it cannot
  // take is closed at once (EOF or a reset, nothing before it). Accepts go
  // in order: once the last one has been closed, every one before it has
  // been taken or closed.
  constexpr int tried = 40;
  std::vector<Socket> clients;
  for (int i = 0; i < tried; ++i) clients.push_back(connect_tcp(out_port));
  Socket last = connect_tcp(out_port);
  ReadResult last_result = read_to_eof(last, 5s);
  REQUIRE((last_result.eof || last_result.error));
  CHECK(last_result.data.empty());
  std::vector<Socket> kept;
  for (Socket& client : clients) {
    ReadResult result = read_some(client, 100, 20ms);
    if (!result.eof && !result.error) kept.push_back(std::move(client));
  }
  const size_t lost = tried + 1 - kept.size();
  MESSAGE(kept.size() << " of " << tried + 1 << " clients taken under a limit of 32 descriptors");
  REQUIRE(kept.size() >= 5);

  // Those it took get the stream.
  REQUIRE(write_all(producer, record(1, "a", 1) + "\n"));
  for (Socket& client : kept) CHECK(read_lines(client, 1).data == record(1, "a", 1) + "\n");
  // Logged, but a few lines only, whatever the number of clients.
  const size_t logged =
      lines_with(daemon.log(), "output clients: cannot accept clients: EMFILE").size();
  CHECK(logged >= 1);
  CHECK(logged <= 10);

  // Reset by their clients, the connections give their descriptors back,
  // and the metrics port can answer again: every client lost is counted
  // with its reason.
  for (Socket& client : kept) client.reset();
  std::optional<double> errors;
  auto until = Clock::now() + 10s;
  while (!errors && Clock::now() < until) {
    // Not http_request(): a connection the daemon still cannot take is
    // closed without an answer, and that is no failure here.
    Socket s = connect_tcp(metrics);
    if (!write_all(s, "GET /metrics HTTP/1.0\r\n\r\n")) continue;
    ReadResult response = read_to_eof(s, 5s);
    if (!starts_with(response.data, "HTTP/1.1 200 OK")) continue;
    errors = 0;
    const std::string sample =
        "chronomerge_accept_errors_total{listener=\"output/clients\",reason=\"EMFILE\"} ";
    for (const std::string& line : split_lines(response.data)) {
      if (starts_with(line, sample)) errors = std::stod(line.substr(sample.size()));
    }
  }
  REQUIRE(errors);
  CHECK(*errors == static_cast<double>(lost));
  producer.close();
  CHECK(daemon.stop().code == 0);
}
