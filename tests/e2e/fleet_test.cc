// End to end: fleet feeds. One tcp-listen port takes any number of
// producers, each a member feed of its own named by its hello line, a
// field of its first record, or its peer address. The cases check the
// merged bytes (a stable merge by key, then member name), acknowledged
// resends across connection resets, backpressure that pauses one member
// alone, refusals that are counted without flooding the log, and what
// /fleet and /metrics say about members.
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

using namespace chronomerge::e2e;
using nlohmann::json;

namespace {

// A generous bound for what a test waits on: the sanitized daemon is about
// three times slower, and the machine may be shared.
constexpr Millis read_timeout = sanitized ? 120s : 40s;

// A tcp-listen feed on port 0 with a `fleet` object.
json fleet_feed(const std::string& name, const json& fleet) {
  json feed = tcp_feed(name);
  feed["fleet"] = fleet;
  return feed;
}

json file_output(const TempDir& dir) {
  return {{"name", "out"}, {"type", "file"}, {"path", dir / "out"}};
}

// A member's first line under name_from "hello".
std::string hello(const std::string& member) {
  return json{{"feed", member}}.dump() + "\n";
}

// A heartbeat line for heartbeat_field "heartbeat": a key and nothing else.
std::string heartbeat(int64_t key) {
  return "{\"time\":" + std::to_string(key) + ",\"heartbeat\":true}\n";
}

// "bus-007"
std::string numbered(const char* prefix, int i) {
  char name[32];
  std::snprintf(name, sizeof(name), "%s-%03d", prefix, i);
  return name;
}

std::string fleet_sample(const std::string& family, const std::string& fleet = "buses") {
  return family + "{fleet=\"" + fleet + "\"}";
}

std::string refused_sample(const std::string& reason, const std::string& fleet = "buses") {
  return "chronomerge_fleet_refused_total{fleet=\"" + fleet + "\",reason=\"" + reason + "\"}";
}

// A sample of one scrape, or -1 if it is absent.
double value_in(const std::map<std::string, double>& samples, const std::string& name) {
  auto it = samples.find(name);
  return it == samples.end() ? -1 : it->second;
}

// The string in `value`, or "" if it is not one.
std::string text_of(const json& value) {
  return value.is_string() ? value.get<std::string>() : std::string();
}

// Raises this process's soft open-files limit to its hard limit (hundreds
// of producers; the daemon, spawned afterwards, inherits it and raises its
// own as it needs).
void raise_open_files(rlim_t wanted) {
  rlimit limit{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &limit) == 0);
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &limit) == 0);
  }
  REQUIRE_MESSAGE(limit.rlim_cur >= wanted,
                  "the open-files limit " << limit.rlim_cur << " is below " << wanted);
}

// Connects to 127.0.0.1:port without asserting (for producer threads): an
// invalid Socket on failure.
Socket try_connect(uint16_t port) {
  Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s) return s;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(s.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return Socket();
  return s;
}

// True once the daemon has closed `socket` (EOF or a reset), within
// `timeout`.
bool closed_by_daemon(const Socket& socket, Millis timeout) {
  ReadResult r = read_to_eof(socket, timeout);
  return r.eof || r.error;
}

}  // namespace

// --- many producers on one port ---------------------------------------------

TEST_CASE("a fleet of 500 producers on one port merges into one stable stream") {
  constexpr int producers = 500;
  const int per_producer = sanitized ? 16 : 40;
  raise_open_files(producers + 64);

  TempDir dir;
  json feed = fleet_feed("buses", {{"name_from", "hello"}});
  feed["heartbeat_field"] = "heartbeat";
  // Members wait for each other from their heartbeat until their data
  // arrives: longer than the barrier below takes, so no member goes idle
  // and none of its records can be late.
  feed["idle_timeout_ms"] = 15000;
  json config = {{"feeds", {feed}}, {"outputs", {tcp_output("clients")}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t port = daemon.feed_port("buses");
  const uint16_t out_port = daemon.output_port("clients");
  INFO("daemon log (tail):\n" << daemon.log_tail());

  Collector collector(connect_tcp(out_port), read_timeout);
  REQUIRE(wait_sample(metrics, "chronomerge_output_sink_clients{output=\"clients\"}",
                      [](double v) { return v == 1; }) == 1);

  // Every stream starts near key 1000 and advances by 0, 1 or 2: ties
  // within a stream and across hundreds of members.
  std::vector<std::string> names;
  std::vector<std::string> feeds;
  for (int i = 0; i < producers; ++i) {
    std::mt19937 rng(1000 + i);
    names.push_back(numbered("bus", i));
    feeds.push_back(sorted_feed(rng, names.back(), per_producer));
  }

  // The barrier: every producer names itself and sends a heartbeat below
  // every record key, in one write; all 500 are members before any data
  // is sent. They connect 100 at a time, each batch taken before the next,
  // so the listen backlog never overflows (a dropped SYN is retried by the
  // kernel only a second later).
  const auto started = Clock::now();
  std::vector<Socket> sockets;
  for (int i = 0; i < producers; ++i) {
    sockets.push_back(connect_tcp(port));
    REQUIRE(write_all(sockets.back(), hello(names[i]) + heartbeat(1)));
    if ((i + 1) % 100 == 0) {
      const int joined = i + 1;
      const json fleet = wait_fleet(
          metrics, [&](const json& f) { return field(f, "connected") == joined; }, 20s);
      REQUIRE_MESSAGE(field(fleet, "connected") == joined, "/fleet: " << fleet.dump());
    }
  }
  {
    const json fleet = fleet_of(metrics);
    CHECK(field(fleet, "known") == producers);
    CHECK(member_names(fleet) == names);  // sorted by name
    size_t connected = 0;
    for (const json& member : field(fleet, "members")) {
      if (field(member, "connected") == true) ++connected;
    }
    CHECK(connected == producers);
    CHECK(field(member_of(fleet, "bus-042"), "feed") == "buses/bus-042");
  }
  const auto barrier = Clock::now();
  CHECK(collector.bytes_so_far() == 0);  // heartbeats are not forwarded

  // Then everyone sends its records and hangs up, four threads at once.
  std::atomic<int> failed{0};
  {
    std::vector<std::thread> writers;
    for (int t = 0; t < 4; ++t) {
      writers.emplace_back([&, t] {
        for (int i = t; i < producers; i += 4) {
          if (!write_all(sockets[i], feeds[i], read_timeout)) ++failed;
          sockets[i].close();
        }
      });
    }
    for (auto& w : writers) w.join();
  }
  REQUIRE(failed == 0);

  // A member that hung up is not waited for: the merge completes.
  const std::string expected = stable_merge(feeds);  // feeds in name order
  const bool complete = collector.wait_bytes(expected.size(), read_timeout);
  const auto done = Clock::now();
  MESSAGE(producers << " producers, " << producers * per_producer << " records: barrier in "
                    << std::chrono::duration_cast<Millis>(barrier - started).count()
                    << " ms, merged in "
                    << std::chrono::duration_cast<Millis>(done - barrier).count() << " ms");
  CHECK_MESSAGE(complete,
                "got " << collector.bytes_so_far() << " of " << expected.size() << " bytes");

  CHECK(wait_metrics(metrics, [&](const auto& m) {
    return value_in(m, fleet_sample("chronomerge_fleet_members")) == 0 &&
           value_in(m, fleet_sample("chronomerge_fleet_members_left_total")) == producers;
  }));
  const auto samples = scrape_all(metrics);
  CHECK(value_in(samples, fleet_sample("chronomerge_fleet_members_joined_total")) == producers);
  CHECK(value_in(samples, fleet_sample("chronomerge_fleet_late_total")) == 0);
  CHECK(value_in(samples, fleet_sample("chronomerge_fleet_malformed_total")) == 0);
  for (const char* reason : {"max_members", "duplicate", "hello_timeout", "bad_hello"}) {
    CAPTURE(reason);
    CHECK(value_in(samples, refused_sample(reason)) == 0);
  }
  daemon.check_alive();
  CHECK(daemon.stop().code == 0);
  const ReadResult& got = collector.finish();
  CHECK(got.eof);
  CHECK(got.data.size() == expected.size());
  CHECK(got.data == expected);
}

// --- acknowledged resends ---------------------------------------------------

namespace {

// A producer with ack: true that resets its connection mid-stream and
// resends from what the daemon acknowledged. Runs on a thread of its own:
// no doctest assertions, it reports a problem in words.
struct AckProducer {
  AckProducer(std::string member, size_t count, uint32_t seed) : name(std::move(member)) {
    std::mt19937 rng(seed);
    int64_t time = 1000;
    for (size_t i = 0; i < count; ++i) {
      time += static_cast<int64_t>(rng() % 3);
      keys.push_back(time);
      lines.push_back(record(time, name, static_cast<int64_t>(i)) + "\n");
      text += lines.back();
    }
  }

  // Connects, says hello and reads the ack, retrying while refused (a
  // close before the ack); false once `deadline` passes.
  bool connect(uint16_t port, Clock::time_point deadline, Socket& socket, json& ack) {
    Millis backoff = 5ms;
    while (Clock::now() < deadline) {
      socket = try_connect(port);
      ++connections;
      if (socket && write_all(socket, hello(name), 5s)) {
        ReadResult r = read_lines(socket, 1, 5s);
        const size_t nl = r.data.find('\n');
        if (nl != std::string::npos) {
          const std::string line = r.data.substr(0, nl);
          acks.push_back(line);
          if (nl + 1 != r.data.size()) {
            problem = "bytes after the ack line " + line + ": " + r.data.substr(nl + 1, 100);
          }
          ack = json::parse(line, nullptr, /*allow_exceptions=*/false);
          return true;
        }
        if (!r.eof && !r.error) {
          problem = "neither an ack nor a close within 5 s";
          return false;
        }
      }
      ++refusals;
      std::this_thread::sleep_for(backoff);  // a producer's retry backoff
      backoff = std::min(backoff * 2, Millis(200));
    }
    problem = "no ack before the deadline";
    return false;
  }

  // Where to resend from after `ack`, checked against what was sent; npos
  // (and a problem) if the ack cannot be right.
  size_t resume_point(const json& ack, size_t session) {
    auto bad = [&](const std::string& why) {
      problem = "session " + std::to_string(session) + ": ack " + ack.dump() + " " + why;
      return std::string::npos;
    };
    if (!ack.is_object() || ack.size() != 2 || !ack.contains("last_key") ||
        !ack.contains("count") || !ack["count"].is_number_unsigned()) {
      return bad("is not {\"last_key\": K, \"count\": n}");
    }
    const size_t count = ack["count"].get<size_t>();
    size_t from = 0;
    if (ack["last_key"].is_null()) {
      if (count != 0) return bad("has a count without a key");
    } else {
      if (!ack["last_key"].is_number_integer()) return bad("has a key that is not an integer");
      const int64_t key = ack["last_key"].get<int64_t>();
      auto first = std::lower_bound(keys.begin(), keys.end(), key);
      if (first == keys.end() || *first != key) return bad("names a key never sent");
      from = static_cast<size_t>(first - keys.begin()) + count;
      if (count == 0 || from > keys.size() || keys[from - 1] != key) {
        return bad("counts more records with that key than were sent");
      }
    }
    if (session == 0 && !ack["last_key"].is_null()) return bad("is not null for a new member");
    if (from < acknowledged) {
      return bad("goes back: " + std::to_string(acknowledged) + " records were acknowledged");
    }
    if (from > sent)
      return bad("counts " + std::to_string(from) + " of " + std::to_string(sent) +
                 " whole records sent");
    acknowledged = from;
    resent += sent - from;
    return from;
  }

  // `resets` times: send from the acknowledged point to a random record
  // and half of the next one, then reset. Then the rest, and close.
  void run(uint16_t port, int resets, uint32_t seed, Millis budget) {
    std::mt19937 rng(seed);
    const auto deadline = Clock::now() + budget;
    for (size_t session = 0;; ++session) {
      Socket socket;
      json ack;
      if (!connect(port, deadline, socket, ack)) return;
      const size_t from = resume_point(ack, session);
      if (from == std::string::npos) return;
      if (session < static_cast<size_t>(resets) && from + 1 < lines.size()) {
        std::uniform_int_distribution<size_t> pick(from, lines.size() - 2);
        const size_t cut = pick(rng);
        std::string chunk;
        for (size_t i = from; i < cut; ++i) chunk += lines[i];
        chunk += lines[cut].substr(0, lines[cut].size() / 2);
        // A failed write is a reset too: whatever arrived is what the
        // next ack says.
        write_all(socket, chunk, 10s);
        sent = std::max(sent, cut);
        socket.reset();  // RST: what the daemon has not read is lost
        ++resets_done;
        continue;
      }
      std::string rest;
      for (size_t i = from; i < lines.size(); ++i) rest += lines[i];
      if (!write_all(socket, rest, 30s)) {
        problem = "the last session's write failed";
        return;
      }
      sent = lines.size();
      socket.close();
      return;
    }
  }

  std::string name;
  std::vector<int64_t> keys;
  std::vector<std::string> lines;  // each with its '\n'
  std::string text;
  // What happened (read after the thread is joined).
  std::string problem;
  std::vector<std::string> acks;
  int connections = 0;
  int refusals = 0;
  int resets_done = 0;
  size_t acknowledged = 0;  // records the last ack covered
  size_t sent = 0;          // whole records written so far, on any connection
  size_t resent = 0;        // records written whole but not taken, so sent again
};

// The lines of `text` (with their '\n') of records whose "feed" is `name`.
std::string lines_of_feed(const std::string& text, const std::string& name) {
  const std::string needle = "\"feed\":\"" + name + "\"";
  std::string out;
  for (const std::string& line : split_lines(text)) {
    if (line.find(needle) != std::string::npos) out += line + "\n";
  }
  return out;
}

}  // namespace

TEST_CASE(
    "with ack, fleet producers that reset mid-stream resend from the ack: every record once") {
  constexpr int producers = 8;
  constexpr int resets = 3;
  const size_t per_producer = sanitized ? 600 : 2000;

  TempDir dir;
  json feed = fleet_feed("buses", {{"name_from", "hello"}, {"ack", true}});
  feed["idle_timeout_ms"] = 2000;
  json config = {{"outputs", {tcp_output("clients")}}};
  bool held = false;
  SUBCASE("while the merge is held: the output is the stable merge by key and name") {
    // A silent feed holds the merge until the end, so a member that is
    // between connections cannot fall behind the frontier (its resent
    // records would then be late, emitted out of order), and each member
    // has room for all its records.
    held = true;
    feed["high_water_mark"] = 4 << 20;
    feed["low_water_mark"] = 1 << 20;
    json hold = tcp_feed("hold");
    hold["idle_timeout_ms"] = 600000;
    config["feeds"] = {feed, hold};
  }
  SUBCASE("while the merge runs and members pause: bytes the daemon never read are resent") {
    // Small water marks: a member ahead of the others is paused with
    // records unread in the kernel, which a replacing connection
    // discards. A member between connections is idle, so some resent
    // records may be late: each member's records are checked in order.
    feed["high_water_mark"] = 8192;
    feed["low_water_mark"] = 2048;
    config["feeds"] = {feed};
  }
  CAPTURE(held);
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t port = daemon.feed_port("buses");
  const uint16_t out_port = daemon.output_port("clients");
  INFO("daemon log (tail):\n" << daemon.log_tail());
  Socket holder;
  if (held) {
    holder = connect_tcp(daemon.feed_port("hold"));
    REQUIRE(daemon.wait_log("feed hold: producer connected"));
  }
  Collector collector(connect_tcp(out_port), 3 * read_timeout);
  REQUIRE(wait_sample(metrics, "chronomerge_output_sink_clients{output=\"clients\"}",
                      [](double v) { return v == 1; }) == 1);

  std::vector<std::unique_ptr<AckProducer>> all;
  std::vector<std::string> names;
  for (int p = 0; p < producers; ++p) {
    names.push_back(numbered("p", p));
    all.push_back(std::make_unique<AckProducer>(names.back(), per_producer, 100 + p));
  }
  {
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p) {
      threads.emplace_back([&, p] { all[p]->run(port, resets, 200 + p, read_timeout); });
    }
    for (auto& t : threads) t.join();
  }
  int refusals = 0;
  int in_ties = 0;  // acks inside a run of equal keys: "count" above 1
  size_t resent = 0;
  for (const auto& producer : all) {
    CAPTURE(producer->name);
    std::string acks;
    for (const std::string& ack : producer->acks) {
      acks += ack + " ";
      const json parsed = json::parse(ack, nullptr, /*allow_exceptions=*/false);
      if (field(parsed, "count").is_number() && field(parsed, "count").get<int64_t>() > 1) {
        ++in_ties;
      }
    }
    CAPTURE(acks);
    CHECK(producer->problem == "");
    CHECK(producer->resets_done == resets);
    refusals += producer->refusals;
    resent += producer->resent;
  }
  MESSAGE(std::string(held ? "merge held: " : "merge running: ")
          << (producers * resets) << " resets, " << refusals << " reconnections refused, "
          << in_ties << " acks with a count above 1, " << resent
          << " records written whole before a reset and sent again");
  CHECK(in_ties >= 1);

  // Every member's records were taken once: its count in /fleet is the
  // length of its stream, and it is listed once.
  const json fleet = wait_fleet(
      metrics,
      [&](const json& f) {
        for (const std::string& name : names) {
          if (records_of(f, name) != static_cast<int64_t>(per_producer)) return false;
        }
        return true;
      },
      read_timeout);
  INFO("/fleet: " << fleet.dump());
  CHECK(member_names(fleet) == names);
  for (const std::string& name : names) {
    CAPTURE(name);
    CHECK(records_of(fleet, name) == static_cast<int64_t>(per_producer));
  }
  // A connection taken before the daemon had seen its predecessor's reset
  // was refused as a duplicate, and the producer tried again.
  const auto samples = scrape_all(metrics);
  CHECK(value_in(samples, refused_sample("duplicate")) == refusals);
  CHECK(value_in(samples, refused_sample("ack_failed")) == 0);
  CHECK(value_in(samples, fleet_sample("chronomerge_fleet_members_joined_total")) == producers);
  if (held) CHECK(value_in(samples, fleet_sample("chronomerge_fleet_late_total")) == 0);

  std::vector<std::string> texts;
  size_t total = 0;
  for (const auto& producer : all) {
    texts.push_back(producer->text);
    total += producer->text.size();
  }
  if (!held) {
    // The members are gone (idle): the merge completes on its own.
    CHECK_MESSAGE(collector.wait_bytes(total, read_timeout),
                  "got " << collector.bytes_so_far() << " of " << total << " bytes");
  }
  // SIGTERM drains: what is queued is merged.
  daemon.check_alive();
  CHECK(daemon.stop().code == 0);
  const ReadResult& got = collector.finish();
  CHECK(got.eof);
  CHECK(got.data.size() == total);
  if (held) {
    CHECK(got.data == stable_merge(texts));
  } else {
    for (size_t p = 0; p < all.size(); ++p) {
      CAPTURE(names[p]);
      CHECK(lines_of_feed(got.data, names[p]) == texts[p]);
    }
  }
}

// --- backpressure -----------------------------------------------------------

namespace {

// A record of the member that floods: keys far ahead of everyone.
std::string far_record(uint64_t seq) {
  static const std::string pad(100, 'z');
  return "{\"time\":" + std::to_string(1000000000 + seq) +
         ",\"feed\":\"z\",\"seq\":" + std::to_string(seq) + ",\"pad\":\"" + pad + "\"}\n";
}

}  // namespace

TEST_CASE("a fleet member sending far ahead of the others is paused alone; the others flow") {
  int64_t max_bytes = 0;
  int64_t high_water = 0;
  int64_t low_water = 0;
  bool paced = false;  // z sends a chunk at a time, each read before the next
  SUBCASE("z floods and is paused by its high-water mark, well within max_bytes") {
    max_bytes = 262144;
    high_water = 65536;
    low_water = 16384;
  }
  SUBCASE("z is paused by the fleet's max_bytes long before its own high-water mark") {
    // Over the budget, a member over its share (max_bytes / members) is
    // paused. The budget is checked every few milliseconds, so z sends
    // small chunks, each taken in before the next: its queue stays far
    // below its own high-water mark, which therefore cannot be what
    // pauses it.
    max_bytes = 32768;
    high_water = 4 << 20;
    low_water = 1 << 20;
    paced = true;
  }
  CAPTURE(max_bytes);
  CAPTURE(high_water);
  const int rounds = sanitized ? 40 : 120;

  TempDir dir;
  json feed = fleet_feed("buses", {{"name_from", "hello"}, {"max_bytes", max_bytes}});
  feed["high_water_mark"] = high_water;
  feed["low_water_mark"] = low_water;
  feed["heartbeat_field"] = "heartbeat";
  feed["idle_timeout_ms"] = 60000;
  json config = {{"feeds", {feed}}, {"outputs", {tcp_output("clients")}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t port = daemon.feed_port("buses");
  const uint16_t out_port = daemon.output_port("clients");
  INFO("daemon log (tail):\n" << daemon.log_tail());
  Collector collector(connect_tcp(out_port), read_timeout);
  REQUIRE(wait_sample(metrics, "chronomerge_output_sink_clients{output=\"clients\"}",
                      [](double v) { return v == 1; }) == 1);

  // A member joins idle; a heartbeat with the hello makes a, b and c
  // members the merge waits for (waiting, or ready with the heartbeat
  // queued), before z sends anything.
  const std::vector<std::string> slow_names = {"a", "b", "c"};
  std::vector<Socket> slow;
  for (const std::string& name : slow_names) {
    slow.push_back(connect_tcp(port));
    REQUIRE(write_all(slow.back(), hello(name) + heartbeat(999)));
  }
  REQUIRE(field(wait_fleet(metrics,
                           [&](const json& f) {
                             for (const std::string& name : slow_names) {
                               const json m = member_of(f, name);
                               if (field(m, "last_key") != 999 || field(m, "state") == "idle") {
                                 return false;
                               }
                             }
                             return true;
                           }),
                "connected") == 3);
  Socket z = connect_tcp(port);
  REQUIRE(write_all(z, hello("z")));
  REQUIRE(field(wait_fleet(metrics, [](const json& f) { return field(f, "connected") == 4; }),
                "connected") == 4);

  // z floods, whole records at a time, until told to stop; its writes
  // block while the daemon does not read it.
  std::atomic<bool> stop{false};
  std::atomic<bool> flood_failed{false};
  std::atomic<uint64_t> flooded{0};
  std::thread flood([&] {
    uint64_t seq = 0;
    while (!stop && !paced) {
      std::string chunk;
      for (int k = 0; k < 64; ++k) chunk += far_record(seq + k);
      if (!write_all(z, chunk, read_timeout)) {
        flood_failed = true;
        return;
      }
      seq += 64;
      flooded = seq;
    }
  });
  struct FloodGuard {
    std::atomic<bool>& stop;
    std::thread& thread;
    Socket& socket;
    ~FloodGuard() {  // on a failed REQUIRE: unblock and join the thread
      stop = true;
      if (thread.joinable()) {
        ::shutdown(socket.fd(), SHUT_RDWR);
        thread.join();
      }
    }
  } guard{stop, flood, z};

  double max_queue = 0;
  auto paused_members = [&](const std::map<std::string, double>& m) {
    max_queue = std::max(max_queue, value_in(m, fleet_sample("chronomerge_fleet_queue_bytes")));
    return value_in(m, fleet_sample("chronomerge_fleet_members_paused"));
  };
  if (paced) {
    // 16 records (about 2.4 KB) at a time, until z is paused.
    uint64_t seq = 0;
    while (true) {
      std::string chunk;
      for (int k = 0; k < 16; ++k) chunk += far_record(seq + k);
      REQUIRE(write_all(z, chunk));
      seq += 16;
      flooded = seq;
      const json fleet = wait_fleet(metrics, [&](const json& f) {
        return field(member_of(f, "z"), "paused") == true ||
               records_of(f, "z") == static_cast<int64_t>(seq);
      });
      if (field(member_of(fleet, "z"), "paused") == true) break;
      REQUIRE_MESSAGE(records_of(fleet, "z") == static_cast<int64_t>(seq),
                      "/fleet: " << fleet.dump());
      REQUIRE_MESSAGE(seq * 150 < static_cast<uint64_t>(high_water),
                      "z not paused with " << seq << " records queued");
    }
    const auto samples = scrape_all(metrics);
    paused_members(samples);
    MESSAGE("z paused by the budget with " << seq << " records read, the fleet queueing "
                                           << max_queue << " bytes");
    CHECK(max_queue < static_cast<double>(high_water) / 2);
  }
  REQUIRE(wait_metrics(metrics, [&](const auto& m) { return paused_members(m) == 1; }));

  // a, b and c send a record each per round, all with the round's key; a
  // round is merged once the next one has arrived (ties: a, b, c).
  std::vector<std::string> slow_feeds(slow_names.size());
  for (int r = 0; r < rounds; ++r) {
    for (size_t s = 0; s < slow_names.size(); ++s) {
      slow_feeds[s] += record(1000 + r, slow_names[s], r) + "\n";
    }
  }
  const std::string slow_merged = stable_merge(slow_feeds);
  const std::vector<std::string> slow_lines = split_lines(slow_merged);
  std::vector<size_t> prefix = {0};  // bytes of the first n records
  for (const std::string& line : slow_lines) prefix.push_back(prefix.back() + line.size() + 1);

  int rounds_paused_alone = 0;
  for (int r = 0; r < rounds; ++r) {
    for (size_t s = 0; s < slow_names.size(); ++s) {
      REQUIRE(write_all(slow[s], record(1000 + r, slow_names[s], r) + "\n"));
    }
    CAPTURE(r);
    REQUIRE(collector.wait_bytes(prefix[3 * r], 10s));
    if (paused_members(scrape_all(metrics)) == 1) ++rounds_paused_alone;
  }
  const json fleet = fleet_of(metrics);
  INFO("/fleet: " << fleet.dump());
  MESSAGE(rounds << " rounds of a, b, c while z was paused (" << rounds_paused_alone
                 << " scrapes with one member paused); z sent " << flooded.load() << " records; "
                 << "fleet queue at most " << max_queue << " bytes");
  CHECK(rounds_paused_alone == rounds);
  CHECK(max_queue > 0);
  CHECK(max_queue <= static_cast<double>(max_bytes + high_water));
  CHECK(field(member_of(fleet, "z"), "paused") == true);
  for (const std::string& name : slow_names) {
    CAPTURE(name);
    CHECK(field(member_of(fleet, name), "paused") == false);
  }

  // Heartbeats past all of z's keys let z's records through; z's thread
  // finishes the chunk it was blocked in and stops.
  stop = true;
  for (Socket& s : slow) {
    REQUIRE(write_all(s, heartbeat(4000000000)));
    s.close();
  }
  flood.join();
  REQUIRE_FALSE(flood_failed);
  z.close();
  std::string expected = slow_merged;
  for (uint64_t seq = 0; seq < flooded; ++seq) expected += far_record(seq);
  CHECK_MESSAGE(collector.wait_bytes(expected.size(), read_timeout),
                "got " << collector.bytes_so_far() << " of " << expected.size() << " bytes");
  daemon.check_alive();
  CHECK(daemon.stop().code == 0);
  const ReadResult& got = collector.finish();
  CHECK(got.data.size() == expected.size());
  CHECK(got.data == expected);
}

// --- refusals ---------------------------------------------------------------

TEST_CASE(
    "a connect storm beyond a fleet's max_members is refused, counted, logged in a few lines") {
  constexpr int limit = 20;
  constexpr int tried = 200;
  raise_open_files(tried + 64);
  TempDir dir;
  json config = {{"feeds", {fleet_feed("buses", {{"name_from", "hello"}, {"max_members", limit}})}},
                 {"outputs", {file_output(dir)}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t port = daemon.feed_port("buses");
  INFO("daemon log (tail):\n" << daemon.log_tail());

  // 50 at a time, each batch settled before the next (the listen backlog).
  std::vector<Socket> sockets;
  for (int i = 0; i < tried; ++i) {
    sockets.push_back(connect_tcp(port));
    try_write(sockets.back(), hello(numbered("bus", i)));  // may fail: refused at once
    if ((i + 1) % 50 == 0) {
      const double settled = i + 1;
      REQUIRE(wait_metrics(metrics, [&](const auto& m) {
        // A series not exported yet counts 0 here.
        return std::max(0.0, value_in(m, fleet_sample("chronomerge_fleet_members"))) +
                   std::max(0.0, value_in(m, refused_sample("max_members"))) ==
               settled;
      }));
    }
  }
  CHECK(wait_sample(metrics, refused_sample("max_members"),
                    [](double v) { return v >= tried - limit; }) == tried - limit);
  const auto samples = scrape_all(metrics);
  CHECK(value_in(samples, fleet_sample("chronomerge_fleet_members")) == limit);
  CHECK(value_in(samples, fleet_sample("chronomerge_fleet_members_known")) == limit);
  CHECK(value_in(samples, fleet_sample("chronomerge_fleet_members_joined_total")) == limit);
  REQUIRE(daemon.check_alive());

  // The refused connections are closed; the members are not.
  std::vector<bool> closed(tried, false);
  size_t closed_count = 0;
  const auto deadline = Clock::now() + 10s;
  while (closed_count < tried - limit && Clock::now() < deadline) {
    for (int i = 0; i < tried; ++i) {
      if (!closed[i] && closed_by_daemon(sockets[i], 0ms)) {
        closed[i] = true;
        ++closed_count;
      }
    }
    if (closed_count < tried - limit) std::this_thread::sleep_for(10ms);
  }
  CHECK(closed_count == tried - limit);
  const json fleet = fleet_of(metrics);
  INFO("/fleet: " << fleet.dump());
  CHECK(field(fleet, "connected") == limit);
  std::vector<std::string> members;
  for (int i = 0; i < tried; ++i) {
    if (!closed[i]) members.push_back(numbered("bus", i));
  }
  CHECK(member_names(fleet) == members);

  // A member goes on.
  auto open = std::find(closed.begin(), closed.end(), false);
  REQUIRE(open != closed.end());
  const int first = static_cast<int>(open - closed.begin());
  REQUIRE(write_all(sockets[first], record(1000, numbered("bus", first), 0) + "\n"));
  CHECK(records_of(
            wait_fleet(metrics,
                       [&](const json& f) { return records_of(f, numbered("bus", first)) == 1; }),
            numbered("bus", first)) == 1);

  // A few lines about the refusals, not one per connection.
  std::vector<std::string> refusal_lines;
  for (const std::string& line : split_lines(daemon.log())) {
    if (line.find("refused") != std::string::npos) refusal_lines.push_back(line);
  }
  MESSAGE((tried - limit) << " refusals: " << refusal_lines.size()
                          << " log lines with \"refused\"");
  CHECK(refusal_lines.size() >= 1);
  CHECK(refusal_lines.size() < 10);
  daemon.check_alive();
  sockets.clear();
  CHECK(daemon.stop().code == 0);
}

// --- members one by one -----------------------------------------------------

namespace {

// A daemon with fleet "buses" (its `fleet` object),
// a silent feed "hold" that holds the merge (so members that come and go
// are never behind the frontier), and a file output "out".
struct FleetRun {
  explicit FleetRun(const json& fleet) {
    json feed = fleet_feed("buses", fleet);
    feed["idle_timeout_ms"] = 300;
    json hold = tcp_feed("hold");
    hold["idle_timeout_ms"] = 600000;
    config = {{"feeds", {feed, hold}}, {"outputs", {file_output(dir)}}};
    with_metrics(config);
    daemon = std::make_unique<Daemon>(dir, config);
    metrics = daemon->metrics_port();
    port = daemon->feed_port("buses");
    holder = connect_tcp(daemon->feed_port("hold"));
    REQUIRE(daemon->wait_log("feed hold: producer connected"));
  }

  // Stops the daemon (its drain merges what is queued); the output file.
  std::string output() {
    daemon->check_alive();
    CHECK(daemon->stop().code == 0);
    return read_file(dir / "out");
  }

  double sample(const std::string& name) { return scrape(metrics, name).value_or(-1); }

  TempDir dir;
  json config;
  std::unique_ptr<Daemon> daemon;
  uint16_t metrics = 0;
  uint16_t port = 0;
  Socket holder;
};

}  // namespace

TEST_CASE("fleet members: names, reconnections, refusals, reloads and per-member metrics") {
  SUBCASE("a member that disconnects and reconnects under its name continues its feed") {
    FleetRun run(json{{"name_from", "hello"}});
    INFO("daemon log (tail):\n" << run.daemon->log_tail());
    const std::vector<std::string> records = {record(1000, "bus-1", 0), record(1001, "bus-1", 1),
                                              record(1001, "bus-1", 2), record(1002, "bus-1", 3),
                                              record(1004, "bus-1", 4)};
    {
      Socket first = connect_tcp(run.port);
      REQUIRE(write_all(first, hello("bus-1") + lines_of({records[0], records[1], records[2]})));
    }
    json fleet = wait_fleet(run.metrics, [](const json& f) {
      const json m = member_of(f, "bus-1");
      return field(m, "connected") == false && field(m, "records") == 3;
    });
    INFO("/fleet: " << fleet.dump());
    REQUIRE(records_of(fleet, "bus-1") == 3);
    CHECK(field(fleet, "connected") == 0);
    CHECK(field(fleet, "known") == 1);

    Socket second = connect_tcp(run.port);
    REQUIRE(write_all(second, hello("bus-1") + lines_of({records[3], records[4]})));
    fleet = wait_fleet(run.metrics, [](const json& f) {
      const json m = member_of(f, "bus-1");
      return field(m, "connected") == true && field(m, "records") == 5;
    });
    CHECK(member_names(fleet) == std::vector<std::string>{"bus-1"});
    const json member = member_of(fleet, "bus-1");
    CHECK(field(member, "connected") == true);
    CHECK(field(member, "records") == 5);
    CHECK(field(member, "feed") == "buses/bus-1");
    CHECK(field(member, "last_key") == 1004);
    CHECK(run.sample(fleet_sample("chronomerge_fleet_members_joined_total")) == 1);
    CHECK(run.sample(fleet_sample("chronomerge_fleet_members_left_total")) == 1);
    CHECK(run.sample(fleet_sample("chronomerge_fleet_members")) == 1);
    second.close();
    CHECK(run.output() == lines_of(records));
  }

  SUBCASE("the oldest member lag is how far the member furthest behind trails the one ahead") {
    FleetRun run(json{{"name_from", "hello"}});
    INFO("daemon log (tail):\n" << run.daemon->log_tail());
    Socket behind = connect_tcp(run.port);
    REQUIRE(write_all(behind, hello("slow") + lines_of({record(1000, "slow", 0)})));
    Socket ahead = connect_tcp(run.port);
    REQUIRE(write_all(
        ahead, hello("fast") + lines_of({record(1100, "fast", 0), record(1250, "fast", 1)})));
    const std::optional<double> lag =
        wait_sample(run.metrics, fleet_sample("chronomerge_fleet_oldest_member_lag"),
                    [](double v) { return v == 250; });
    CHECK(lag == 250);
    // Gone members do not count: only the one left.
    ahead.close();
    CHECK(wait_sample(run.metrics, fleet_sample("chronomerge_fleet_oldest_member_lag"),
                      [](double v) { return v == 0; }) == 0);
  }

  SUBCASE("name_from a JSON pointer names a member by its first record, which is merged too") {
    FleetRun run(json{{"name_from", "/vehicle"}});
    INFO("daemon log (tail):\n" << run.daemon->log_tail());
    auto vehicle_record = [](int64_t time, const json& vehicle, int seq) {
      return "{\"time\":" + std::to_string(time) + ",\"vehicle\":" + vehicle.dump() +
             ",\"seq\":" + std::to_string(seq) + "}";
    };
    // Equal keys across the two: "42" sorts before "v-7".
    const std::string by_string =
        lines_of({vehicle_record(1000, "v-7", 0), vehicle_record(1001, "v-7", 1),
                  vehicle_record(1001, "v-7", 2)});
    const std::string by_integer = lines_of(
        {vehicle_record(1000, 42, 0), vehicle_record(1001, 42, 1), vehicle_record(1002, 42, 2)});
    Socket v7 = connect_tcp(run.port);
    REQUIRE(write_all(v7, by_string));
    Socket v42 = connect_tcp(run.port);
    REQUIRE(write_all(v42, by_integer));
    const json fleet = wait_fleet(run.metrics, [](const json& f) {
      return records_of(f, "v-7") == 3 && records_of(f, "42") == 3;
    });
    INFO("/fleet: " << fleet.dump());
    CHECK(member_names(fleet) == std::vector<std::string>{"42", "v-7"});
    CHECK(field(member_of(fleet, "42"), "feed") == "buses/42");
    CHECK(field(member_of(fleet, "v-7"), "feed") == "buses/v-7");
    CHECK(records_of(fleet, "v-7") == 3);
    CHECK(records_of(fleet, "42") == 3);
    v7.close();
    v42.close();
    CHECK(run.output() == stable_merge({by_integer, by_string}));
  }

  SUBCASE("name_from peer names a member by the producer's address") {
    FleetRun run(json{{"name_from", "peer"}});
    INFO("daemon log (tail):\n" << run.daemon->log_tail());
    const std::string records =
        lines_of({record(1000, "peer", 0), record(1000, "peer", 1), record(1003, "peer", 2)});
    Socket producer = connect_tcp(run.port);
    REQUIRE(write_all(producer, records));
    const json fleet =
        wait_fleet(run.metrics, [](const json& f) { return records_of(f, "127.0.0.1") == 3; });
    INFO("/fleet: " << fleet.dump());
    CHECK(member_names(fleet) == std::vector<std::string>{"127.0.0.1"});
    const json member = member_of(fleet, "127.0.0.1");
    CHECK(field(member, "feed") == "buses/127.0.0.1");
    CHECK(starts_with(text_of(field(member, "peer")), "127.0.0.1:"));
    CHECK(field(member, "connected") == true);
    producer.close();
    CHECK(run.output() == records);
  }

  SUBCASE("a connection that does not name itself is closed after hello_timeout_ms") {
    constexpr int hello_timeout_ms = 300;
    FleetRun run(json{{"name_from", "hello"}, {"hello_timeout_ms", hello_timeout_ms}});
    INFO("daemon log (tail):\n" << run.daemon->log_tail());
    Socket silent = connect_tcp(run.port);
    Socket partial = connect_tcp(run.port);
    const auto connected = Clock::now();
    REQUIRE(write_all(partial, "{\"feed\": \"bus"));  // no end of line
    CHECK(closed_by_daemon(silent, 5s));
    const auto waited = std::chrono::duration_cast<Millis>(Clock::now() - connected);
    MESSAGE("closed after " << waited.count() << " ms");
    CHECK(waited >= Millis(hello_timeout_ms - 20));
    CHECK(closed_by_daemon(partial, 5s));
    CHECK(wait_sample(run.metrics, refused_sample("hello_timeout"),
                      [](double v) { return v >= 2; }) == 2);
    CHECK(run.sample(fleet_sample("chronomerge_fleet_members_known")) == 0);
    CHECK(member_names(fleet_of(run.metrics)).empty());
    CHECK(run.output() == "");
  }

  SUBCASE("a bad hello is refused and counted; a 64-byte name is fine") {
    FleetRun run(json{{"name_from", "hello"}});
    INFO("daemon log (tail):\n" << run.daemon->log_tail());
    const std::vector<std::string> bad = {R"({"feed": "a/b"})", "not json", R"({"feed": ""})",
                                          hello(std::string(65, 'x'))};
    for (const std::string& line : bad) {
      CAPTURE(line);
      Socket producer = connect_tcp(run.port);
      std::string text = line;
      if (text.back() != '\n') text += '\n';
      try_write(producer, text + record(1000, "bad", 0) + "\n");  // may fail: refused at once
      CHECK(closed_by_daemon(producer, 5s));
    }
    CHECK(wait_sample(run.metrics, refused_sample("bad_hello"), [&](double v) {
            return v >= static_cast<double>(bad.size());
          }) == static_cast<double>(bad.size()));
    const std::string longest(64, 'x');
    Socket good = connect_tcp(run.port);
    REQUIRE(write_all(good, hello(longest) + record(1000, "good", 0) + "\n"));
    const json fleet =
        wait_fleet(run.metrics, [&](const json& f) { return records_of(f, longest) == 1; });
    INFO("/fleet: " << fleet.dump());
    CHECK(member_names(fleet) == std::vector<std::string>{longest});
    good.close();
    CHECK(run.output() == record(1000, "good", 0) + "\n");
  }

  SUBCASE("a reload that leaves the fleet as it was keeps its members connected") {
    FleetRun run(json{{"name_from", "hello"}});
    INFO("daemon log (tail):\n" << run.daemon->log_tail());
    const std::vector<std::string> names = {"bus-1", "bus-2"};
    std::vector<Socket> producers;
    std::vector<std::string> texts(names.size());
    for (size_t i = 0; i < names.size(); ++i) {
      producers.push_back(connect_tcp(run.port));
      const std::string first = lines_of({record(1000, names[i], 0), record(1001, names[i], 1)});
      REQUIRE(write_all(producers[i], hello(names[i]) + first));
      texts[i] += first;
    }
    auto all_have = [&](int64_t count) {
      return wait_fleet(run.metrics, [&](const json& f) {
        for (const std::string& name : names) {
          const json m = member_of(f, name);
          if (field(m, "connected") != true || field(m, "records") != count) {
            return false;
          }
        }
        return true;
      });
    };
    REQUIRE(records_of(all_have(2), "bus-2") == 2);

    // Another output and log level: nothing about the fleet changes.
    run.config["log_level"] = "debug";
    run.config["outputs"].push_back(
        {{"name", "copy"}, {"type", "file"}, {"path", run.dir / "copy"}});
    run.dir.write("config.json", run.config.dump(2));
    run.daemon->signal(SIGHUP);
    REQUIRE(wait_sample(run.metrics, "chronomerge_reloads_total{result=\"success\"}",
                        [](double v) { return v == 1; }) == 1);

    for (size_t i = 0; i < names.size(); ++i) {
      CAPTURE(names[i]);
      ReadResult nothing = read_some(producers[i], 100, 0ms);
      CHECK_FALSE(nothing.eof);
      CHECK_FALSE(nothing.error);
      const std::string more = lines_of({record(1002, names[i], 2), record(1003, names[i], 3)});
      REQUIRE(write_all(producers[i], more));
      texts[i] += more;
    }
    const json fleet = all_have(4);
    INFO("/fleet: " << fleet.dump());
    CHECK(records_of(fleet, "bus-1") == 4);
    CHECK(records_of(fleet, "bus-2") == 4);
    CHECK(run.sample(fleet_sample("chronomerge_fleet_members_left_total")) == 0);
    CHECK(run.sample(fleet_sample("chronomerge_fleet_members_joined_total")) == 2);
    CHECK(run.daemon->log_count("feed buses: changed") == 0);
    for (Socket& producer : producers) producer.close();
    CHECK(run.output() == stable_merge(texts));
  }

  SUBCASE("per-member series are in /metrics only with member_metrics") {
    bool per_member = false;
    SUBCASE("without member_metrics") {}
    SUBCASE("with member_metrics") {
      per_member = true;
    }
    CAPTURE(per_member);
    FleetRun run(json{{"name_from", "hello"}, {"member_metrics", per_member}});
    INFO("daemon log (tail):\n" << run.daemon->log_tail());
    Socket producer = connect_tcp(run.port);
    REQUIRE(write_all(producer,
                      hello("bus-1") + lines_of({record(1000, "bus-1", 0), record(1001, "bus-1", 1),
                                                 record(1002, "bus-1", 2)})));
    REQUIRE(records_of(
                wait_fleet(run.metrics, [](const json& f) { return records_of(f, "bus-1") == 3; }),
                "bus-1") == 3);
    const std::string text = http_get(run.metrics, "/metrics");
    const auto samples = scrape_all(run.metrics);
    CHECK(value_in(samples, fleet_sample("chronomerge_fleet_records_total")) == 3);
    const std::string series = "chronomerge_feed_records_total{feed=\"buses/bus-1\"}";
    if (per_member) {
      CHECK(value_in(samples, series) == 3);
    } else {
      CHECK(samples.count(series) == 0);
      CHECK(text.find("feed=\"buses/") == std::string::npos);
    }
    producer.close();
    CHECK(run.output() ==
          lines_of({record(1000, "bus-1", 0), record(1001, "bus-1", 1), record(1002, "bus-1", 2)}));
  }
}
