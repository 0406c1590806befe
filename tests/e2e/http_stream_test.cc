// The http-listen output, end to end: GET /stream as chunked NDJSON and as
// Server-Sent Events, resumed by query string and by Last-Event-ID, over
// real sockets and with curl.
#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "harness.h"

using namespace chronomerge::e2e;
using json = nlohmann::json;

namespace {

// A follow-file feed of `count` records (never ends, so the stream stays
// open for clients that come back), and an http-listen output.
json stream_config(const std::string& feed_path, json output = json::object()) {
  output["name"] = "web";
  output["type"] = "http-listen";
  output["listen"] = "127.0.0.1:0";
  json config = {
      {"idle_timeout_ms", 100},
      {"feeds", {{{"name", "bus"}, {"type", "file"}, {"path", feed_path}, {"follow", true}}}},
      {"outputs", {output}}};
  with_metrics(config);
  return config;
}

std::string numbered_records(int count) {
  std::string out;
  for (int i = 0; i < count; ++i) out += record(1000 + i / 3, "bus", i) + "\n";  // ties in threes
  return out;
}

Socket get(uint16_t port, const std::string& target, const std::vector<std::string>& headers) {
  Socket socket = connect_tcp(port);
  std::string request = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (const std::string& header : headers) request += header + "\r\n";
  request += "\r\n";
  REQUIRE(write_all(socket, request));
  return socket;
}

// An HTTP/1.1 response read off a socket: the head, and the body with its
// chunked framing removed.
struct Response {
  std::string head;
  std::string body;
  bool complete = false;  // the last chunk (or the Content-Length) arrived
};

// Reads until `done(body)` holds, the response completes, or time runs out.
Response read_response(const Socket& socket, const std::function<bool(const std::string&)>& done,
                       Millis timeout = 10s) {
  Response response;
  std::string raw;
  size_t at = 0;  // next unparsed byte of the body
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (response.head.empty()) {
      const size_t end = raw.find("\r\n\r\n");
      if (end != std::string::npos) {
        response.head = raw.substr(0, end + 4);
        at = end + 4;
      }
    }
    if (!response.head.empty()) {
      const bool chunked = response.head.find("Transfer-Encoding: chunked") != std::string::npos;
      if (!chunked) {
        response.body = raw.substr(at);
        const size_t length_at = response.head.find("Content-Length: ");
        if (length_at != std::string::npos &&
            response.body.size() >= std::stoul(response.head.substr(length_at + 16))) {
          response.complete = true;
          return response;
        }
      } else {
        while (true) {
          const size_t line_end = raw.find("\r\n", at);
          if (line_end == std::string::npos) break;
          const size_t size = std::stoul(raw.substr(at, line_end - at), nullptr, 16);
          if (raw.size() < line_end + 2 + size + 2) break;
          if (size == 0) {
            response.complete = true;
            return response;
          }
          response.body += raw.substr(line_end + 2, size);
          REQUIRE(raw.compare(line_end + 2 + size, 2, "\r\n") == 0);
          at = line_end + 2 + size + 2;
        }
      }
      if (done(response.body)) return response;
    }
    ReadResult got = read_some(socket, 1 << 16, 200ms);
    raw += got.data;
    if (got.eof || got.error) {
      if (!response.head.empty() &&
          response.head.find("Transfer-Encoding: chunked") == std::string::npos) {
        response.body = raw.substr(at);
      }
      return response;
    }
  }
  return response;
}

struct Event {
  std::string id;
  std::string event;
  std::string data;
};

std::vector<Event> parse_events(const std::string& body) {
  std::vector<Event> events;
  Event current;
  for (const std::string& line : split_lines(body)) {
    if (line.empty()) {
      if (!current.data.empty() || !current.event.empty()) events.push_back(current);
      current = Event{};
    } else if (line.starts_with("id: ")) {
      current.id = line.substr(4);
    } else if (line.starts_with("event: ")) {
      current.event = line.substr(7);
    } else if (line.starts_with("data: ")) {
      current.data = line.substr(6);
    }
  }
  return events;
}

size_t count_record_events(const std::string& body) {
  size_t n = 0;
  for (size_t at = body.find("\nid: "); at != std::string::npos; at = body.find("\nid: ", at + 1)) {
    ++n;
  }
  return n;
}

}  // namespace

TEST_CASE("http-listen serves Server-Sent Events that resume exactly from Last-Event-ID") {
  TempDir dir;
  constexpr int count = 3000;
  const std::string records = numbered_records(count);
  Daemon daemon(dir, stream_config(dir.write("bus.ndjson", records)));
  const uint16_t port = daemon.output_port("web");
  const uint16_t metrics = daemon.metrics_port();
  INFO("daemon log (tail):\n" << daemon.log_tail());
  REQUIRE(
      wait_sample(metrics, "chronomerge_records_out_total", [](double v) { return v >= count; }));

  // The first connection stops after 1000 events; the second continues
  // from the id of the last event the first one kept.
  const std::vector<std::string> sse = {"Accept: text/event-stream"};
  Socket first = get(port, "/stream?since=oldest", sse);
  Response part1 = read_response(
      first, [](const std::string& body) { return count_record_events(body) > 1000; });
  first.close();
  REQUIRE(part1.head.starts_with("HTTP/1.1 200 OK\r\n"));
  CHECK(part1.head.find("Content-Type: text/event-stream\r\n") != std::string::npos);
  std::vector<Event> events1 = parse_events(part1.body);
  REQUIRE(events1.size() > 1000);
  CHECK(events1.front().event == "resume");
  const json answer = json::parse(events1.front().data);
  const std::string run = answer["run"];
  CHECK(answer["offset"] == 0);
  events1.erase(events1.begin());
  events1.resize(1000);  // what the client "kept"

  Socket second =
      get(port, "/stream", {"Accept: text/event-stream", "Last-Event-ID: " + events1.back().id});
  Response part2 = read_response(
      second, [&](const std::string& body) { return count_record_events(body) >= count - 1000; });
  std::vector<Event> events2 = parse_events(part2.body);
  REQUIRE(!events2.empty());
  CHECK(json::parse(events2.front().data)["offset"] == 1000);
  events2.erase(events2.begin());

  std::string got;
  uint64_t offset = 0;
  for (const auto* part : {&events1, &events2}) {
    for (const Event& e : *part) {
      CHECK(e.id == run + ":" + std::to_string(offset));
      ++offset;
      got += e.data + "\n";
    }
  }
  CHECK(offset == count);
  CHECK(got == records);  // one feed: the merge is the file, with no gap and no duplicate

  SUBCASE("curl -N receives the events") {
    const std::string command =
        "curl -sN -H 'Accept: text/event-stream' 'http://127.0.0.1:" + std::to_string(port) +
        "/stream?since=oldest' | head -n 12";
    FILE* pipe = ::popen(command.c_str(), "r");
    REQUIRE(pipe != nullptr);
    std::string out;
    char buffer[4096];
    while (size_t n = std::fread(buffer, 1, sizeof(buffer), pipe)) out.append(buffer, n);
    ::pclose(pipe);
    CHECK(out.find("event: resume\n") != std::string::npos);
    CHECK(out.find("id: " + run + ":0\ndata: " + split_lines(records)[0] + "\n") !=
          std::string::npos);
  }
  CHECK(daemon.stop().code == 0);
}

TEST_CASE("http-listen says event: gap and goes on from the oldest record") {
  TempDir dir;
  constexpr int count = 6000;  // ~400 kB: far more than the smallest retention
  json config = stream_config(dir.write("bus.ndjson", numbered_records(count)));
  config["retention_bytes"] = 65536;
  Daemon daemon(dir, config);
  const uint16_t port = daemon.output_port("web");
  const uint16_t metrics = daemon.metrics_port();
  INFO("daemon log (tail):\n" << daemon.log_tail());
  REQUIRE(
      wait_sample(metrics, "chronomerge_records_out_total", [](double v) { return v >= count; }));
  const auto oldest = scrape(metrics, "chronomerge_output_log_oldest_offset");
  REQUIRE(oldest);
  REQUIRE(*oldest > 0);

  // Offset 0 of this run is gone; the run id comes from a first request.
  Socket probe = get(port, "/stream", {"Accept: text/event-stream"});
  Response hello = read_response(probe, [](const std::string& body) {
    return body.find("\n\n", body.find("event: resume")) != std::string::npos;
  });
  const std::string run = json::parse(parse_events(hello.body).front().data)["run"];
  probe.close();

  Socket client =
      get(port, "/stream", {"Accept: text/event-stream", "Last-Event-ID: " + run + ":0"});
  Response response =
      read_response(client, [](const std::string& body) { return count_record_events(body) >= 2; });
  std::vector<Event> events = parse_events(response.body);
  INFO("response: " << response.head << response.body.substr(0, 600));
  REQUIRE(events.size() >= 4);
  CHECK(events[0].event == "resume");
  CHECK(json::parse(events[0].data)["gap"] == true);
  CHECK(events[1].event == "gap");
  CHECK(events[2].id == run + ":" + std::to_string(static_cast<uint64_t>(*oldest)));
  CHECK(wait_sample(metrics, "chronomerge_output_sink_gaps_total{output=\"web\"}",
                    [](double v) { return v >= 1; }));
  CHECK(daemon.stop().code == 0);
}

TEST_CASE("http-listen serves chunked NDJSON resumed by query string") {
  TempDir dir;
  constexpr int count = 2000;
  const std::string records = numbered_records(count);
  json output = {{"allow_origin", "https://dash.example"}};
  Daemon daemon(dir, stream_config(dir.write("bus.ndjson", records), output));
  const uint16_t port = daemon.output_port("web");
  const uint16_t metrics = daemon.metrics_port();
  INFO("daemon log (tail):\n" << daemon.log_tail());
  REQUIRE(
      wait_sample(metrics, "chronomerge_records_out_total", [](double v) { return v >= count; }));

  SUBCASE("the answer object first, then the records; after=R:N continues exactly") {
    Socket first = get(port, "/stream?since=oldest", {"Origin: https://dash.example"});
    Response part1 = read_response(
        first, [](const std::string& body) { return split_lines(body).size() > 501; });
    first.close();
    REQUIRE(part1.head.starts_with("HTTP/1.1 200 OK\r\n"));
    CHECK(part1.head.find("Content-Type: application/x-ndjson\r\n") != std::string::npos);
    CHECK(part1.head.find("Access-Control-Allow-Origin: https://dash.example\r\n") !=
          std::string::npos);
    std::vector<std::string> lines = split_lines(part1.body);
    const json answer = json::parse(lines[0]);
    CHECK(answer["offset"] == 0);
    lines.erase(lines.begin());
    lines.resize(500);

    Socket second = get(port, "/stream?after=" + answer["run"].get<std::string>() + ":499", {});
    Response part2 = read_response(second, [&](const std::string& body) {
      return split_lines(body).size() >= count - 500 + 1;
    });
    std::vector<std::string> rest = split_lines(part2.body);
    REQUIRE(!rest.empty());
    CHECK(json::parse(rest[0])["offset"] == 500);
    std::string got;
    for (const std::string& line : lines) got += line + "\n";
    for (size_t i = 1; i < rest.size(); ++i) got += rest[i] + "\n";
    CHECK(got == records);
    CHECK(part2.head.find("Access-Control-Allow-Origin") == std::string::npos);  // no Origin sent
  }
  SUBCASE("a malformed query is a 400 naming the parameter, counted") {
    Socket socket = get(port, "/stream?since=yesterday", {});
    Response response = read_response(socket, [](const std::string&) { return false; });
    CHECK(response.head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
    CHECK(response.body.find("\"error\":\"bad_request\"") != std::string::npos);
    CHECK(response.body.find("since") != std::string::npos);
    CHECK(wait_sample(
        metrics, "chronomerge_output_sink_disconnects_total{output=\"web\",reason=\"bad_request\"}",
        [](double v) { return v >= 1; }));
  }
  SUBCASE("another path is a 404") {
    Socket socket = get(port, "/", {});
    Response response = read_response(socket, [](const std::string&) { return false; });
    CHECK(response.head.starts_with("HTTP/1.1 404 Not Found\r\n"));
  }
  SUBCASE("an offset of another run is a 410 with the gap object, counted") {
    Socket socket = get(port, "/stream?after=0000000000000000:5", {});
    Response response = read_response(socket, [](const std::string&) { return false; });
    CHECK(response.head.starts_with("HTTP/1.1 410 Gone\r\n"));
    CHECK(json::parse(response.body)["error"] == "gap");
    CHECK(wait_sample(metrics, "chronomerge_output_sink_gaps_total{output=\"web\"}",
                      [](double v) { return v >= 1; }));
  }
  CHECK(daemon.stop().code == 0);
}

TEST_CASE("retention_ms empties the retained log even while nothing is merged") {
  TempDir dir;
  constexpr int count = 3000;  // ~200 kB: several segments
  // A producer that sends its records and goes: afterwards nothing wakes
  // the merge, and only the age limit's own timer can trim.
  json config = {
      {"idle_timeout_ms", 100},
      {"retention_ms", 300},
      {"feeds", {tcp_feed("bus")}},
      {"outputs", {{{"name", "web"}, {"type", "http-listen"}, {"listen", "127.0.0.1:0"}}}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  INFO("daemon log (tail):\n" << daemon.log_tail());
  {
    Socket producer = connect_tcp(daemon.feed_port("bus"));
    REQUIRE(write_all(producer, numbered_records(count)));
  }
  REQUIRE(
      wait_sample(metrics, "chronomerge_records_out_total", [](double v) { return v >= count; }));
  CHECK(wait_sample(
      metrics, "chronomerge_output_log_retained_records", [](double v) { return v < count / 2; },
      5s));
  const auto oldest = scrape(metrics, "chronomerge_output_log_oldest_offset");
  REQUIRE(oldest);
  CHECK(*oldest > count / 2);
  CHECK(daemon.stop().code == 0);
}
