// End to end: the retained output log and resuming clients. A client that
// hangs up and comes back (after an offset, or since a key) gets every
// record once, in order, byte for byte; requests the daemon cannot serve
// are answered, counted and logged; frozen and far-behind clients cost
// neither the merge nor memory.
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "harness.h"

using namespace chronomerge::e2e;
using nlohmann::json;

namespace {

// Records per feed: `release` in a Release build, a fifth under the
// sanitizers.
size_t scaled(size_t release) {
  return sanitized ? release / 5 : release;
}

// A generous bound for reading what a test sent: the sanitized daemon is
// slower, and the machine may be shared.
constexpr Millis read_timeout = sanitized ? 120s : 60s;

std::string sample_of(const std::string& family, const std::string& output) {
  return family + "{output=\"" + output + "\"}";
}

std::string disconnects(const std::string& output, const std::string& reason) {
  return "chronomerge_output_sink_disconnects_total{output=\"" + output + "\",reason=\"" + reason +
         "\"}";
}

// The lines of `text`, as views without their '\n'.
std::vector<std::string_view> line_views(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    if (nl == std::string_view::npos) nl = text.size();
    lines.push_back(text.substr(0, nl));
    text.remove_prefix(std::min(text.size(), nl + 1));
  }
  return lines;
}

// The key ("time") of a record or of a combine-mode object.
int64_t key_of(std::string_view line) {
  return json::parse(line).at("time").get<int64_t>();
}

// --- test data --------------------------------------------------------------

// Sorted feeds of records {"time":T,"feed":"F","seq":S} whose keys advance
// by 0, 1 or 2: runs of equal keys within each feed and across feeds. The
// files are complete before the daemon starts and nothing is ever late, so
// the merged stream is known in advance.
struct TiedFeeds {
  struct Entry {
    int64_t key;
    uint32_t feed;
    std::string_view line;  // into texts, without its '\n'
  };

  // Views into texts: neither copied nor moved.
  TiedFeeds(const TiedFeeds&) = delete;
  TiedFeeds& operator=(const TiedFeeds&) = delete;
  TiedFeeds(std::vector<std::string> feed_names, size_t per_feed, uint32_t seed)
      : names(std::move(feed_names)) {
    std::mt19937 rng(seed);
    std::vector<std::vector<int64_t>> keys(names.size());
    for (size_t f = 0; f < names.size(); ++f) {
      std::string text;
      text.reserve(per_feed * 48);
      int64_t time = 1000000;
      for (size_t i = 0; i < per_feed; ++i) {
        time += static_cast<int64_t>(rng() % 3);
        keys[f].push_back(time);
        text += record(time, names[f], static_cast<int64_t>(i));
        text += '\n';
      }
      texts.push_back(std::move(text));
    }
    for (size_t f = 0; f < names.size(); ++f) {
      size_t i = 0;
      for (std::string_view line : line_views(texts[f])) {
        merged.push_back({keys[f][i++], static_cast<uint32_t>(f), line});
      }
    }
    // The daemon's order: key, then the feed's position, then arrival.
    std::stable_sort(merged.begin(), merged.end(), [](const Entry& a, const Entry& b) {
      return a.key != b.key ? a.key < b.key : a.feed < b.feed;
    });
  }

  size_t records() const { return merged.size(); }
  size_t bytes() const {
    size_t total = 0;
    for (const std::string& text : texts) total += text.size();
    return total;
  }

  // Follow-mode file feeds (they never end, so neither does the stream)
  // and a retention that keeps everything: records plus their index.
  json config(const TempDir& dir) const {
    json config = {{"idle_timeout_ms", 200},
                   {"retention_bytes", bytes() + 32 * records() + (4 << 20)}};
    for (size_t f = 0; f < names.size(); ++f) {
      config["feeds"].push_back({{"name", names[f]},
                                 {"type", "file"},
                                 {"path", dir.write(names[f] + ".ndjson", texts[f])},
                                 {"follow", true}});
    }
    return config;
  }

  // The interleaved stream; with `only`, of those feeds (by position).
  std::string interleaved(const std::vector<uint32_t>& only = {}) const {
    std::string out;
    out.reserve(bytes());
    for (const Entry& e : merged) {
      if (!only.empty() && std::find(only.begin(), only.end(), e.feed) == only.end()) continue;
      out.append(e.line);
      out += '\n';
    }
    return out;
  }

  // Offsets in the whole log of the records of `only`, in stream order.
  std::vector<uint64_t> offsets_of(const std::vector<uint32_t>& only) const {
    std::vector<uint64_t> offsets;
    for (size_t i = 0; i < merged.size(); ++i) {
      if (std::find(only.begin(), only.end(), merged[i].feed) != only.end()) offsets.push_back(i);
    }
    return offsets;
  }

  // Combine mode: per key, object j holds the j-th record of every feed
  // that has more than j records with that key, in feed order.
  std::string combined() const {
    std::string out;
    for (size_t begin = 0; begin < merged.size();) {
      size_t end = begin;
      while (end < merged.size() && merged[end].key == merged[begin].key) ++end;
      std::vector<std::vector<std::string_view>> per_feed(names.size());
      for (size_t i = begin; i < end; ++i) per_feed[merged[i].feed].push_back(merged[i].line);
      for (size_t j = 0;; ++j) {
        std::string data;
        std::string indexes;
        for (size_t f = 0; f < names.size(); ++f) {
          if (per_feed[f].size() <= j) continue;
          if (!data.empty()) {
            data += ',';
            indexes += ',';
          }
          data.append(per_feed[f][j]);
          indexes += std::to_string(f);
        }
        if (data.empty()) break;
        out += "{\"data\":[" + data + "],\"indexes\":[" + indexes +
               "],\"time\":" + std::to_string(merged[begin].key) + "}\n";
      }
      begin = end;
    }
    return out;
  }

  std::vector<std::string> names;
  std::vector<std::string> texts;  // each feed's file
  std::vector<Entry> merged;       // the merged stream
};

// --- a client that hangs up and resumes -------------------------------------

enum class Resume {
  after,  // {"after": [run, the offset of the last record kept]}
  since,  // {"since": the last key kept, "skip": how many records with it were kept}
};

struct CutPlan {
  Resume how = Resume::after;
  json feeds;                // a "feeds" filter, or null
  std::vector<size_t> cuts;  // hang up once this many records are kept in all
  size_t total = 0;          // records to read in all
  // The offset each answer must name once `kept` records are kept.
  std::function<uint64_t(size_t kept)> offset_of;
  // Or the range it must lie in, both ends included.
  std::function<std::pair<uint64_t, uint64_t>(size_t kept)> offset_bounds;
  // Runs after each hang-up.
  std::function<void()> at_cut;
};

// The last key of `records` and how many records at their end carry it.
std::pair<int64_t, uint64_t> last_key_run(std::string_view records) {
  int64_t last = 0;
  uint64_t equal = 0;
  while (!records.empty()) {
    records.remove_suffix(1);  // the '\n'
    size_t start = records.rfind('\n');
    start = start == std::string_view::npos ? 0 : start + 1;
    int64_t key = key_of(records.substr(start));
    if (equal > 0 && key != last) break;
    last = key;
    ++equal;
    records.remove_suffix(records.size() - start);
  }
  return {last, equal};
}

// One client reads `plan.total` records from a resume output, hanging up
// (with unread data: a reset) at every cut and coming back where it
// stopped; what it kept of each connection, concatenated.
std::string read_with_cuts(uint16_t port, const CutPlan& plan) {
  std::string kept_records;
  std::string run;
  uint64_t last_offset = 0;
  size_t kept = 0;
  for (size_t session = 0; session <= plan.cuts.size(); ++session) {
    const size_t target = session < plan.cuts.size() ? plan.cuts[session] : plan.total;
    json request;
    if (session == 0) {
      request = {{"since", "oldest"}};
    } else if (plan.how == Resume::after) {
      request = {{"after", {run, last_offset}}};
    } else {
      auto [key, equal] = last_key_run(kept_records);
      request = {{"since", key}, {"skip", equal}};
    }
    if (!plan.feeds.is_null()) request["feeds"] = plan.feeds;
    CAPTURE(session);
    CAPTURE(request.dump());
    ResumeReader client(connect_tcp(port));
    REQUIRE(client.send(request));
    const json answer = client.answer(10s);
    CAPTURE(client.answer_line());
    REQUIRE(answer.is_object());
    REQUIRE(answer.contains("offset"));
    CHECK_FALSE(answer.contains("gap"));
    if (session == 0) {
      run = answer.at("run").get<std::string>();
      CHECK(run.size() == 16);
    } else {
      CHECK(answer.at("run") == run);
    }
    const uint64_t offset = answer.at("offset").get<uint64_t>();
    if (plan.offset_of) CHECK(offset == plan.offset_of(kept));
    if (plan.offset_bounds) {
      auto [low, high] = plan.offset_bounds(kept);
      CHECK(offset >= low);
      CHECK(offset <= high);
    }
    const size_t wanted = target - kept;
    REQUIRE_MESSAGE(client.read_records(wanted, read_timeout),
                    "got " << client.records() << " of " << wanted << " records");
    kept_records.append(client.records_text(wanted));
    // It numbers what it receives from the answer's offset on.
    last_offset = offset + wanted - 1;
    kept = target;
    client.socket().close();
    if (plan.at_cut && session < plan.cuts.size()) plan.at_cut();
  }
  return kept_records;
}

// `count` distinct cut points in [1, total), sorted, from a fixed seed.
std::vector<size_t> cut_points(size_t total, size_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<size_t> pick(1, total - 1);
  std::vector<size_t> cuts;
  while (cuts.size() < count) {
    size_t cut = pick(rng);
    if (std::find(cuts.begin(), cuts.end(), cut) == cuts.end()) cuts.push_back(cut);
  }
  std::sort(cuts.begin(), cuts.end());
  return cuts;
}

// How many cuts fell inside a run of equal keys of `stream`: the last
// record kept and the next one have the same key.
size_t cuts_in_ties(std::string_view stream, const std::vector<size_t>& cuts) {
  std::vector<std::string_view> lines = line_views(stream);
  size_t ties = 0;
  for (size_t cut : cuts) {
    REQUIRE(cut < lines.size());
    if (key_of(lines[cut - 1]) == key_of(lines[cut])) ++ties;
  }
  return ties;
}

// A reference client on its own thread: {"since":"oldest"} (and `feeds`),
// then `total` records. No assertions on the thread: the test checks what
// it got after join().
struct Reference {
  Reference(uint16_t port, size_t total, json feeds = nullptr)
      : filtered(!feeds.is_null()), reader(connect_tcp(port)), thread([this, total, feeds] {
          json request = {{"since", "oldest"}};
          if (!feeds.is_null()) request["feeds"] = feeds;
          sent = reader.send(request);
          answer = reader.answer(10s);
          complete = reader.read_records(total, read_timeout);
        }) {}

  // Joins the thread; REQUIREs the whole stream.
  std::string_view finish(size_t total) {
    thread.join();
    REQUIRE(sent);
    CAPTURE(reader.answer_line());
    REQUIRE(answer.is_object());
    // With a filter the first record sent is the first of those feeds
    // (the answer's offset is checked exactly elsewhere).
    if (!filtered) CHECK(answer.at("offset") == 0);
    CHECK(answer.at("oldest") == 0);
    REQUIRE_MESSAGE(complete, "the reference got " << reader.records() << " of " << total);
    return reader.records_text(total);
  }

  const bool filtered;
  ResumeReader reader;
  bool sent = false;
  bool complete = false;
  json answer;
  Background thread;
};

// The daemon for the cut-and-resume cases: the feeds of `data` and one
// resume output "clients", in `mode`.
struct ResumeRun {
  ResumeRun(const TiedFeeds& data, const std::string& mode = "interleave") {
    config = data.config(dir);
    config["mode"] = mode;
    config["outputs"] = {resume_output("clients")};
    with_metrics(config);
    daemon = std::make_unique<Daemon>(dir, config);
    metrics = daemon->metrics_port();
    port = daemon->output_port("clients");
  }

  // After the clients: every connection was served as a resume, nothing
  // was refused or dropped by the daemon, and the log holds all `records`
  // (objects in combine mode).
  void check_counters(double resumes, double records) {
    CHECK(wait_sample(metrics, sample_of("chronomerge_output_sink_resumes_total", "clients"),
                      [&](double v) { return v >= resumes; }) == resumes);
    for (const char* reason :
         {"too_slow", "out_of_window", "stalled", "gap", "bad_request", "hello_timeout"}) {
      CAPTURE(reason);
      CHECK(scrape(metrics, disconnects("clients", reason)) == 0);
    }
    CHECK(scrape(metrics, sample_of("chronomerge_output_sink_gaps_total", "clients")) == 0);
    CHECK(scrape(metrics, "chronomerge_output_log_oldest_offset") == 0);
    // A filtered client may be done before the last records of other
    // feeds (held for the idle timeout) are merged.
    CHECK(wait_sample(
              metrics, "chronomerge_output_log_retained_records",
              [&](double v) { return v >= records; }, 10s) == records);
    daemon->check_alive();
  }

  TempDir dir;
  json config;
  std::unique_ptr<Daemon> daemon;
  uint16_t metrics = 0;
  uint16_t port = 0;
};

}  // namespace

// --- hanging up and coming back ----------------------------------------------

TEST_CASE("a client that hangs up 20 times and resumes gets the stream byte for byte") {
  constexpr size_t cuts_made = 20;

  SUBCASE("resuming after the offset of the last record it kept, while the merge runs") {
    // About a million records with many ties, merged while the clients
    // read: they connect as soon as the daemon is ready.
    const TiedFeeds data({"a", "b", "c", "d"}, scaled(250000), 1);
    ResumeRun run(data);
    INFO("daemon log (tail):\n" << run.daemon->log_tail());
    Reference reference(run.port, data.records());
    size_t live_cuts = 0;
    CutPlan plan;
    plan.how = Resume::after;
    plan.total = data.records();
    plan.cuts = cut_points(plan.total, cuts_made, 7);
    plan.offset_of = [](size_t kept) { return kept; };
    plan.at_cut = [&] {
      auto merged = scrape(run.metrics, "chronomerge_records_out_total");
      if (merged && *merged < static_cast<double>(data.records())) ++live_cuts;
    };
    const std::string resumed = read_with_cuts(run.port, plan);
    const std::string_view expected = reference.finish(data.records());
    MESSAGE(data.records() << " records, " << (data.bytes() >> 20) << " MiB; " << live_cuts
                           << " of " << cuts_made << " cuts while the merge was running");
    CHECK(live_cuts >= 1);

    CHECK(expected == data.interleaved());
    CHECK(resumed.size() == expected.size());
    CHECK(resumed == expected);
    const size_t ties = cuts_in_ties(expected, plan.cuts);
    MESSAGE(ties << " of " << cuts_made << " cuts fell inside a run of equal keys");
    CHECK(ties >= 5);
    // The cutting client's connections and the reference: all served.
    run.check_counters(cuts_made + 2, static_cast<double>(data.records()));
  }

  SUBCASE("resuming since the last key it kept, skipping the records with that key it has") {
    const TiedFeeds data({"a", "b", "c", "d"}, scaled(100000), 2);
    ResumeRun run(data);
    INFO("daemon log (tail):\n" << run.daemon->log_tail());
    Reference reference(run.port, data.records());
    CutPlan plan;
    plan.how = Resume::since;
    plan.total = data.records();
    plan.cuts = cut_points(plan.total, cuts_made, 8);
    plan.offset_of = [](size_t kept) { return kept; };
    const std::string resumed = read_with_cuts(run.port, plan);
    const std::string_view expected = reference.finish(data.records());

    // The precondition of a key resume: the log is in key order.
    CHECK(expected == data.interleaved());
    CHECK(resumed == expected);
    CHECK(cuts_in_ties(expected, plan.cuts) >= 5);
    run.check_counters(cuts_made + 2, static_cast<double>(data.records()));
  }

  SUBCASE("with a feeds filter, resuming since a key gets what a filtered reference gets") {
    // skip counts the filtered records; offsets in the answers are the
    // whole log's (so a raw filtered client cannot use after).
    const TiedFeeds data({"a", "b", "c", "d"}, scaled(100000), 3);
    const std::vector<uint32_t> only = {0, 2};
    const json feeds = {"a", "c"};
    const std::string filtered = data.interleaved(only);
    const std::vector<uint64_t> offsets = data.offsets_of(only);
    ResumeRun run(data);
    INFO("daemon log (tail):\n" << run.daemon->log_tail());
    Reference reference(run.port, offsets.size(), feeds);
    CutPlan plan;
    plan.how = Resume::since;
    plan.feeds = feeds;
    plan.total = offsets.size();
    plan.cuts = cut_points(plan.total, cuts_made, 9);
    // Each answer names a place between the last record kept and the
    // next one of the filter (which one: see the test case on an answer's
    // offset with a feeds filter).
    plan.offset_bounds = [&](size_t kept) {
      return std::pair<uint64_t, uint64_t>{kept == 0 ? 0 : offsets[kept - 1] + 1, offsets[kept]};
    };
    const std::string resumed = read_with_cuts(run.port, plan);
    const std::string_view expected = reference.finish(offsets.size());

    CHECK(expected == filtered);
    CHECK(resumed == expected);
    CHECK(cuts_in_ties(expected, plan.cuts) >= 5);
    run.check_counters(cuts_made + 2, static_cast<double>(data.records()));
  }

  SUBCASE("in combine mode, resuming after the offset of the last object it kept") {
    const TiedFeeds data({"a", "b", "c"}, scaled(100000), 4);
    const std::string objects = data.combined();
    const size_t total = line_views(objects).size();
    ResumeRun run(data, "combine");
    INFO("daemon log (tail):\n" << run.daemon->log_tail());
    Reference reference(run.port, total);
    CutPlan plan;
    plan.how = Resume::after;
    plan.total = total;
    plan.cuts = cut_points(plan.total, cuts_made, 10);
    plan.offset_of = [](size_t kept) { return kept; };
    const std::string resumed = read_with_cuts(run.port, plan);
    const std::string_view expected = reference.finish(total);

    CHECK(expected == objects);
    CHECK(resumed == expected);
    // Objects with equal keys: a feed with several records at one key.
    CHECK(cuts_in_ties(expected, plan.cuts) >= 3);
    run.check_counters(cuts_made + 2, static_cast<double>(total));
  }
}

// --- refusals -----------------------------------------------------------------

namespace {

// One follow-mode file feed of `count` records with keys 1000, 1001, ...
// and a resume output "clients" with a 300 ms hello timeout.
struct OneFeed {
  explicit OneFeed(size_t count, json globals = json::object()) : config(std::move(globals)) {
    for (size_t i = 0; i < count; ++i) {
      text += record(1000 + static_cast<int64_t>(i), "bus", static_cast<int64_t>(i)) + "\n";
    }
    config["idle_timeout_ms"] = 200;
    config["feeds"] = {{{"name", "bus"},
                        {"type", "file"},
                        {"path", dir.write("bus.ndjson", text)},
                        {"follow", true}}};
    json output = resume_output("clients");
    output["hello_timeout_ms"] = hello_timeout_ms;
    config["outputs"] = {output};
    with_metrics(config);
    daemon = std::make_unique<Daemon>(dir, config);
    metrics = daemon->metrics_port();
    port = daemon->output_port("clients");
    REQUIRE(wait_sample(
                metrics, "chronomerge_records_out_total",
                [&](double v) { return v == static_cast<double>(count); },
                10s) == static_cast<double>(count));
  }

  // The run id, from a client that asks for nothing old.
  std::string run_id() {
    ResumeReader client(connect_tcp(port));
    REQUIRE(client.send(json{{"since", "now"}}));
    json answer = client.answer();
    REQUIRE(answer.is_object());
    return answer.at("run").get<std::string>();
  }

  double sample(const std::string& name) { return scrape(metrics, name).value_or(-1); }

  static constexpr int hello_timeout_ms = 300;
  TempDir dir;
  json config;
  std::string text;
  std::unique_ptr<Daemon> daemon;
  uint16_t metrics = 0;
  uint16_t port = 0;
};

// Another valid run id: the same with its first digit changed.
std::string other_run(std::string run) {
  run[0] = run[0] == '0' ? '1' : '0';
  return run;
}

}  // namespace

TEST_CASE("resume requests the daemon cannot serve are answered, counted and logged") {
  SUBCASE("a malformed request gets a bad_request line, then the end of the stream") {
    OneFeed run(100);
    INFO("daemon log (tail):\n" << run.daemon->log_tail());
    ResumeReader client(connect_tcp(run.port));
    REQUIRE(client.send_line(R"({"since":"yesterday"})"));
    const json answer = client.answer();
    CHECK(answer == json{{"error", "bad_request"},
                         {"message", R"(since: expected "now", "oldest" or an integer key)"}});
    CHECK(client.read_to_eof(5s));
    CHECK(client.records_text().empty());
    CHECK(run.sample(disconnects("clients", "bad_request")) == 1);
    CHECK(run.sample(sample_of("chronomerge_output_sink_resumes_total", "clients")) == 0);
    CHECK(run.daemon->wait_log(
        R"(disconnected: bad_request (since: expected "now", "oldest" or an integer key))"));
    CHECK(run.daemon->log_count("output clients: client #1 127.0.0.1:") == 2);
  }

  SUBCASE("an after with another run's id is a gap: an error line, then the end of the stream") {
    OneFeed run(100);
    INFO("daemon log (tail):\n" << run.daemon->log_tail());
    const std::string id = run.run_id();
    ResumeReader client(connect_tcp(run.port));
    REQUIRE(client.send(json{{"after", {other_run(id), 5}}}));
    CHECK(client.answer() == json{{"error", "gap"}, {"run", id}, {"oldest", 0}});
    CHECK(client.read_to_eof(5s));
    CHECK(client.records_text().empty());
    CHECK(run.sample(sample_of("chronomerge_output_sink_gaps_total", "clients")) == 1);
    CHECK(run.sample(disconnects("clients", "gap")) == 1);
    CHECK(run.daemon->wait_log("disconnected: gap (asked for records no longer retained)"));
  }

  SUBCASE("with on_gap oldest, the answer says gap and the records follow from the oldest") {
    OneFeed run(100);
    INFO("daemon log (tail):\n" << run.daemon->log_tail());
    const std::string id = run.run_id();
    ResumeReader client(connect_tcp(run.port));
    REQUIRE(client.send(json{{"after", {other_run(id), 5}}, {"on_gap", "oldest"}}));
    CHECK(client.answer() == json{{"gap", true}, {"offset", 0}, {"oldest", 0}, {"run", id}});
    REQUIRE(client.read_records(100));
    CHECK(client.records_text() == run.text);
    CHECK(run.sample(sample_of("chronomerge_output_sink_gaps_total", "clients")) == 1);
    CHECK(run.sample(sample_of("chronomerge_output_sink_resumes_total", "clients")) == 2);
    CHECK(run.sample(disconnects("clients", "gap")) == 0);
  }

  SUBCASE("a client that sends nothing is closed after hello_timeout_ms") {
    OneFeed run(100);
    INFO("daemon log (tail):\n" << run.daemon->log_tail());
    ResumeReader client(connect_tcp(run.port));
    const auto connected = Clock::now();
    CHECK(client.read_to_eof(5s));
    const auto waited = std::chrono::duration_cast<Millis>(Clock::now() - connected);
    MESSAGE("closed after " << waited.count() << " ms");
    CHECK(waited >= Millis(OneFeed::hello_timeout_ms - 20));
    CHECK(client.answer_line().empty());
    CHECK(client.records_text().empty());
    CHECK(run.sample(disconnects("clients", "hello_timeout")) == 1);
    // Its two lines: connected, disconnected.
    CHECK(run.daemon->wait_log("output clients: client #1 127.0.0.1:", 2s, 2));
    CHECK(run.daemon->log_count(
              "disconnected: hello_timeout (sent no request within hello_timeout_ms)") == 1);
  }

  SUBCASE("an offset or key that retention dropped is a gap") {
    // 64 KiB retained of about 400 KiB of records and index.
    constexpr size_t count = 8000;
    OneFeed run(count, {{"retention_bytes", 65536}});
    INFO("daemon log (tail):\n" << run.daemon->log_tail());
    const double oldest = run.sample("chronomerge_output_log_oldest_offset");
    CHECK(oldest > 0);
    CHECK(run.sample("chronomerge_output_log_retained_records") ==
          static_cast<double>(count) - oldest);
    // At least retention_bytes, and at most one more 64 KiB segment of
    // records with its index.
    const double retained = run.sample("chronomerge_output_log_retained_bytes");
    CHECK(retained >= 65536);
    CHECK(retained < 65536 + 2 * 65536);
    const std::string id = run.run_id();
    const auto first = static_cast<uint64_t>(oldest);

    // After oldest - 2: the record that would follow was dropped.
    ResumeReader gone(connect_tcp(run.port));
    REQUIRE(gone.send(json{{"after", {id, first - 2}}}));
    CHECK(gone.answer() == json{{"error", "gap"}, {"oldest", first}, {"run", id}});
    CHECK(gone.read_to_eof(5s));
    // Since the first key: its records were dropped.
    ResumeReader old_key(connect_tcp(run.port));
    REQUIRE(old_key.send(json{{"since", 1000}}));
    CHECK(old_key.answer() == json{{"error", "gap"}, {"oldest", first}, {"run", id}});
    CHECK(old_key.read_to_eof(5s));

    CHECK(run.sample(sample_of("chronomerge_output_sink_gaps_total", "clients")) == 2);
    CHECK(run.sample(disconnects("clients", "gap")) == 2);
    CHECK(run.daemon->wait_log("disconnected: gap (asked for records no longer retained)", 5s, 2));
  }
}

TEST_CASE("a client resumes anywhere in the retained window once retention has dropped records") {
  // 64 KiB retained of about 400 KiB of records and index, and the
  // defaults of a network output (slow_client disconnect, max_buffer
  // retention_bytes).
  constexpr size_t count = 8000;
  OneFeed run(count, {{"retention_bytes", 65536}});
  INFO("daemon log (tail):\n" << run.daemon->log_tail());
  const auto first = static_cast<uint64_t>(run.sample("chronomerge_output_log_oldest_offset"));
  REQUIRE(first > 1);
  const std::string id = run.run_id();
  const std::vector<std::string_view> lines = line_views(run.text);
  auto text_from = [&](uint64_t offset) {
    std::string text;
    for (uint64_t i = offset; i < count; ++i) text += std::string(lines[i]) + "\n";
    return text;
  };
  json request;
  uint64_t start = 0;
  SUBCASE("after the record just before the oldest") {
    request = {{"after", {id, first - 1}}};
    start = first;
  }
  SUBCASE("since oldest") {
    request = {{"since", "oldest"}};
    start = first;
  }
  SUBCASE("since a key halfway between the oldest and the newest") {
    start = (first + count) / 2;
    request = {{"since", key_of(lines[start])}};
  }
  CAPTURE(request.dump());
  ResumeReader client(connect_tcp(run.port));
  REQUIRE(client.send(request));
  const json answer = client.answer();
  CAPTURE(client.answer_line());
  CHECK(answer == json{{"offset", start}, {"oldest", first}, {"run", id}});
  const bool complete = client.read_records(count - start);
  CHECK(complete);
  CHECK(client.records_text() == text_from(start));
  // Cut short: the daemon's log (above) says why, and it may be gone.
  if (!complete) return;
  CHECK(run.sample(disconnects("clients", "too_slow")) == 0);
  CHECK(run.sample(disconnects("clients", "out_of_window")) == 0);
}

TEST_CASE("a resume served from the oldest record after a gap is logged") {
  // Every gap is counted and logged, even one the client chose to ride
  // out with on_gap "oldest": an operator must see in the log that a
  // client skipped records.
  OneFeed run(100);
  INFO("daemon log (tail):\n" << run.daemon->log_tail());
  const std::string id = run.run_id();
  ResumeReader client(connect_tcp(run.port));
  REQUIRE(client.send(json{{"after", {other_run(id), 5}}, {"on_gap", "oldest"}}));
  REQUIRE(client.answer().is_object());
  REQUIRE(client.read_records(100));
  CHECK(run.sample(sample_of("chronomerge_output_sink_gaps_total", "clients")) == 1);
  // The client is #2 (#1 asked for the run id).
  bool logged = false;
  for (const std::string& line : split_lines(run.daemon->log())) {
    logged = logged || (line.find("output clients: client #2 ") != std::string::npos &&
                        line.find("gap") != std::string::npos);
  }
  CHECK_MESSAGE(logged, "no log line names client #2 and its gap:\n" << run.daemon->log());
}

TEST_CASE("an answer's offset is that of the first record sent, with a feeds filter too") {
  // Offsets are the whole log's; a filtered client is told the offset of
  // the first record it gets, not of a record of another feed before it.
  const TiedFeeds data({"a", "b"}, 200, 5);
  const std::string only_b = data.interleaved({1});
  const std::vector<std::string_view> b_lines = line_views(only_b);
  const std::vector<uint64_t> b_offsets = data.offsets_of({1});
  ResumeRun run(data);
  INFO("daemon log (tail):\n" << run.daemon->log_tail());
  REQUIRE(wait_sample(
              run.metrics, "chronomerge_output_log_retained_records",
              [&](double v) { return v == static_cast<double>(data.records()); },
              10s) == static_cast<double>(data.records()));
  // A key both feeds have from b's 101st record on: a's records with it
  // come first in the log.
  size_t at = 0;  // in the log
  size_t b_index = 0;
  for (size_t i = 1; i < data.merged.size(); ++i) {
    const bool b_after_a = data.merged[i].feed == 1 && data.merged[i - 1].feed == 0 &&
                           data.merged[i].key == data.merged[i - 1].key;
    if (b_after_a && b_index >= 100) {
      at = i;
      break;
    }
    if (data.merged[i].feed == 1) ++b_index;
  }
  REQUIRE(at > 0);
  REQUIRE(b_offsets[b_index] == at);
  const int64_t key = data.merged[at].key;

  const std::vector<std::pair<json, size_t>> cases = {
      {{{"since", "oldest"}, {"feeds", {"b"}}}, 0},
      {{{"since", key}, {"feeds", {"b"}}}, b_index},
      {{{"since", key}, {"skip", 1}, {"feeds", {"b"}}}, b_index + 1},
  };
  for (const auto& [request, index] : cases) {
    CAPTURE(request.dump());
    ResumeReader client(connect_tcp(run.port));
    REQUIRE(client.send(request));
    const json answer = client.answer();
    CAPTURE(client.answer_line());
    REQUIRE(answer.is_object());
    REQUIRE(client.read_records(1));
    CHECK(client.records_text(1) == std::string(b_lines[index]) + "\n");
    CHECK(answer.at("offset") == b_offsets[index]);
  }
}

// --- slow and frozen clients ------------------------------------------------

namespace {

// `count` records of about 100 bytes from one feed, keys 1, 2, ...
std::string bulk_records(const std::string& feed, size_t first, size_t count) {
  std::string out;
  out.reserve(count * 100);
  const std::string pad(50, 'y');
  for (size_t i = first; i < first + count; ++i) {
    out += "{\"time\":" + std::to_string(i + 1) + ",\"feed\":\"" + feed +
           "\",\"seq\":" + std::to_string(i) + ",\"pad\":\"" + pad + "\"}\n";
  }
  return out;
}

// Writes `data` at about `bytes_per_second`, in 64 KiB pieces: a producer
// that a healthy reader keeps up with. False if a write failed.
bool write_paced(const Socket& socket, std::string_view data, size_t bytes_per_second) {
  const auto start = Clock::now();
  size_t sent = 0;
  while (sent < data.size()) {
    const size_t piece = std::min<size_t>(64 << 10, data.size() - sent);
    if (!write_all(socket, data.substr(sent, piece), 30s)) return false;
    sent += piece;
    std::this_thread::sleep_until(start +
                                  std::chrono::microseconds(sent * 1000000 / bytes_per_second));
  }
  return true;
}

json file_output(const std::string& name, const std::string& path) {
  return {{"name", name}, {"type", "file"}, {"path", path}};
}

}  // namespace

TEST_CASE("with the defaults, a frozen client slows neither a file output nor another client") {
  // A network output without slow_client disconnects a client more than
  // max_buffer (by default retention_bytes, 1 MiB here) behind.
  const size_t records = sanitized ? 80000 : 160000;  // 8 or 16 MB
  TempDir dir;
  const std::string archive = dir / "archive.ndjson";
  json config = {{"retention_bytes", 1 << 20},
                 {"feeds", {tcp_feed("bus")}},
                 {"outputs",
                  {file_output("archive", archive),
                   {{"name", "clients"}, {"type", "tcp-listen"}, {"listen", loopback(0)}}}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t feed_port = daemon.feed_port("bus");
  const uint16_t out_port = daemon.output_port("clients");
  INFO("daemon log (tail):\n" << daemon.log_tail());

  // Never reads, and advertises a tiny window.
  Socket frozen = connect_tcp(out_port, 5s, /*rcvbuf=*/4096);
  REQUIRE(daemon.wait_log("connected (1 now)"));
  Collector reader(connect_tcp(out_port), read_timeout);
  REQUIRE(daemon.wait_log("connected (2 now)"));

  const std::string data = bulk_records("bus", 0, records);
  Socket producer = connect_tcp(feed_port);
  const auto started = Clock::now();
  REQUIRE(write_paced(producer, data, 32 << 20));
  CHECK(reader.wait_bytes(data.size(), read_timeout));
  CHECK(wait_sample(
            metrics, sample_of("chronomerge_output_sink_bytes_total", "archive"),
            [&](double v) { return v >= static_cast<double>(data.size()); },
            read_timeout) == static_cast<double>(data.size()));
  MESSAGE((data.size() >> 20) << " MiB through both in "
                              << std::chrono::duration_cast<Millis>(Clock::now() - started).count()
                              << " ms");

  // The frozen client was dropped, counted and logged; nobody held the
  // merge.
  auto dropped = [&](const auto& m) {
    auto value = [&](const std::string& reason) {
      auto it = m.find(disconnects("clients", reason));
      return it == m.end() ? 0.0 : it->second;
    };
    return value("too_slow") + value("out_of_window") == 1;
  };
  CHECK(wait_metrics(metrics, dropped));
  CHECK(daemon.log_count("output clients: client #1 ") == 2);
  CHECK(daemon.log_count("disconnected: too_slow") +
            daemon.log_count("disconnected: out_of_window") ==
        1);
  CHECK(scrape(metrics, sample_of("chronomerge_output_sink_clients", "clients")) == 1);
  CHECK(scrape(metrics, sample_of("chronomerge_output_sink_held_seconds_total", "clients")) == 0);

  // Both got every byte, in order.
  daemon.check_alive();
  CHECK(daemon.stop().code == 0);
  const ReadResult& got = reader.finish();
  CHECK(got.eof);
  CHECK(got.data.size() == data.size());
  CHECK(got.data == data);
  CHECK(read_file(archive) == data);
  ReadResult cut = read_to_eof(frozen, 10s);
  CHECK((cut.eof || cut.error));
  CHECK(cut.data.size() < data.size());
}

TEST_CASE(
    "with slow_client block, a client resuming far behind catches up without holding the merge") {
  // Records of about 100 bytes: 8 MB in each phase, far more than what
  // the kernel buffers for the late client, so it stays behind while the
  // live client keeps receiving.
  constexpr size_t per_phase = 80000;
  TempDir dir;
  json output = resume_output("clients");
  output["slow_client"] = "block";
  json config = {
      {"retention_bytes", 64 << 20}, {"feeds", {tcp_feed("bus")}}, {"outputs", {output}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t feed_port = daemon.feed_port("bus");
  const uint16_t out_port = daemon.output_port("clients");
  INFO("daemon log (tail):\n" << daemon.log_tail());
  const std::string phase1 = bulk_records("bus", 0, per_phase);
  const std::string phase2 = bulk_records("bus", per_phase, per_phase);
  const std::string phase3 = bulk_records("bus", 2 * per_phase, per_phase / 8);
  const std::string everything = phase1 + phase2 + phase3;

  // The live client reads from the start, as fast as it can.
  Socket live_socket = connect_tcp(out_port);
  REQUIRE(write_all(live_socket, R"({"since":"now"})"
                                 "\n"));
  Collector live(std::move(live_socket), read_timeout);
  REQUIRE(wait_sample(metrics, sample_of("chronomerge_output_sink_resumes_total", "clients"),
                      [](double v) { return v == 1; }) == 1);
  Socket producer = connect_tcp(feed_port);
  REQUIRE(write_all(producer, phase1, read_timeout));
  REQUIRE(live.wait_bytes(phase1.size(), read_timeout));

  // The late client asks for everything and reads nothing yet.
  ResumeReader late(connect_tcp(out_port, 5s, /*rcvbuf=*/4096));
  REQUIRE(late.send(json{{"since", "oldest"}}));
  REQUIRE(wait_sample(metrics, sample_of("chronomerge_output_sink_resumes_total", "clients"),
                      [](double v) { return v == 2; }) == 2);
  // The merge goes on: phase 2 reaches the live client in full.
  REQUIRE(write_all(producer, phase2, read_timeout));
  CHECK(live.wait_bytes(phase1.size() + phase2.size(), read_timeout));
  // ...while the late client is still megabytes behind.
  const double pending =
      scrape(metrics, sample_of("chronomerge_output_sink_pending_bytes", "clients")).value_or(-1);
  MESSAGE("the late client was " << (static_cast<uint64_t>(pending) >> 10)
                                 << " KiB behind when phase 2 had reached the live client");
  CHECK(pending > 4 << 20);

  // It catches up from the oldest record, in order; then it is a live
  // client like the other.
  const json answer = late.answer(10s);
  CHECK(answer == json{{"offset", 0}, {"oldest", 0}, {"run", answer.value("run", "")}});
  REQUIRE(late.read_records(2 * per_phase, read_timeout));
  CHECK(late.records_text() == phase1 + phase2);
  {
    Background writer([&] { write_all(producer, phase3, read_timeout); });
    CHECK(late.read_records(2 * per_phase + per_phase / 8, read_timeout));
  }
  CHECK(late.records_text() == everything);
  CHECK(live.wait_bytes(everything.size(), read_timeout));
  for (const char* reason : {"too_slow", "out_of_window", "stalled", "write_failed"}) {
    CAPTURE(reason);
    CHECK(scrape(metrics, disconnects("clients", reason)) == 0);
  }
  daemon.check_alive();
  CHECK(daemon.stop().code == 0);
  const ReadResult& got = live.finish();
  CHECK(got.eof);
  const size_t answer_end = got.data.find('\n') + 1;
  CHECK(json::parse(got.data.substr(0, answer_end)).at("offset") == 0);
  CHECK(got.data.substr(answer_end) == everything);
}

// --- memory -----------------------------------------------------------------

namespace {

// An environment knob: its integer value, or `fallback` when unset.
uint64_t knob(const char* name, uint64_t fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::strtoull(value, nullptr, 10) : fallback;
}

// Raises this process's open-files limit to at least `wanted` (the daemon,
// spawned afterwards, inherits it). REQUIREs that the hard limit allows it.
void raise_open_files(rlim_t wanted) {
  rlimit limit{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &limit) == 0);
  if (limit.rlim_cur >= wanted) return;
  REQUIRE_MESSAGE(limit.rlim_max >= wanted,
                  "the hard open-files limit " << limit.rlim_max << " is below " << wanted);
  limit.rlim_cur = wanted;
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &limit) == 0);
}

// Reads many sockets on one thread (epoll) and throws the bytes away,
// counting them per socket.
class Drain {
 public:
  explicit Drain(std::vector<Socket> sockets) : sockets_(std::move(sockets)) {
    epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    REQUIRE(epoll_ >= 0);
    bytes_.assign(sockets_.size(), 0);
    for (size_t i = 0; i < sockets_.size(); ++i) {
      sockets_[i].set_nonblocking(true);
      epoll_event event{};
      event.events = EPOLLIN;
      event.data.u64 = i;
      REQUIRE(::epoll_ctl(epoll_, EPOLL_CTL_ADD, sockets_[i].fd(), &event) == 0);
    }
    thread_ = std::thread([this] { run(); });
  }
  ~Drain() {
    stop_ = true;
    thread_.join();
    ::close(epoll_);
  }
  Drain(const Drain&) = delete;
  Drain& operator=(const Drain&) = delete;

  // Waits until every socket has delivered at least `bytes` (true), or
  // `timeout` passes.
  bool wait_all(uint64_t bytes, Millis timeout) {
    std::unique_lock lock(mutex_);
    target_ = bytes;
    return progress_.wait_for(lock, timeout, [&] { return reached_ == sockets_.size(); });
  }
  size_t ended() const { return ended_.load(); }
  uint64_t least() {
    std::lock_guard lock(mutex_);
    return *std::min_element(bytes_.begin(), bytes_.end());
  }

 private:
  void run() {
    std::vector<char> buffer(256 << 10);
    epoll_event events[64];
    while (!stop_) {
      int n = ::epoll_wait(epoll_, events, 64, 50);
      std::lock_guard lock(mutex_);
      for (int e = 0; e < n; ++e) {
        const size_t i = events[e].data.u64;
        while (true) {
          ssize_t got = ::recv(sockets_[i].fd(), buffer.data(), buffer.size(), 0);
          if (got > 0) {
            bytes_[i] += static_cast<uint64_t>(got);
            continue;
          }
          if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
          if (got < 0 && errno == EINTR) continue;
          ::epoll_ctl(epoll_, EPOLL_CTL_DEL, sockets_[i].fd(), nullptr);
          ++ended_;
          break;
        }
      }
      if (target_ > 0) {
        reached_ = static_cast<size_t>(
            std::count_if(bytes_.begin(), bytes_.end(), [&](uint64_t b) { return b >= target_; }));
        progress_.notify_all();
      }
    }
  }

  std::vector<Socket> sockets_;
  int epoll_ = -1;
  std::mutex mutex_;
  std::condition_variable progress_;
  std::vector<uint64_t> bytes_;  // guarded by mutex_
  uint64_t target_ = 0;          // guarded by mutex_
  size_t reached_ = 0;           // guarded by mutex_
  std::atomic<size_t> ended_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace

TEST_CASE(
    "1,000 clients, half of them frozen, while 8 producers push: RSS stays under "
    "retention_bytes + 32 MiB") {
  // The issue's scenario pushes for 30 s. Every byte goes to 500 live
  // clients, so the producers are rate-limited (CHRONOMERGE_E2E_MEMORY_RATE
  // bytes a second each) and CI pushes for CHRONOMERGE_E2E_MEMORY_SECONDS,
  // 10 by default: enough to cycle the retained log and drop every frozen
  // client, on two cores. Set it to 30 for the issue's run.
  const uint64_t seconds = knob("CHRONOMERGE_E2E_MEMORY_SECONDS", sanitized ? 5 : 10);
  const uint64_t rate = knob("CHRONOMERGE_E2E_MEMORY_RATE", sanitized ? 60000 : 160000);
  constexpr size_t clients = 1000;
  constexpr size_t producers = 8;
  constexpr uint64_t retention = 8 << 20;
  raise_open_files(4096);

  TempDir dir;
  json output = {{"name", "clients"},
                 {"type", "tcp-listen"},
                 {"listen", loopback(0)},
                 {"max_clients", clients}};
  json config = {{"retention_bytes", retention},
                 // A producer that hangs up at the end holds the merge
                 // this long.
                 {"idle_timeout_ms", 300},
                 {"outputs", {output}}};
  for (size_t p = 0; p < producers; ++p)
    config["feeds"].push_back(tcp_feed("p" + std::to_string(p)));
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t out_port = daemon.output_port("clients");
  std::vector<uint16_t> feed_ports;
  for (size_t p = 0; p < producers; ++p)
    feed_ports.push_back(daemon.feed_port("p" + std::to_string(p)));
  INFO("daemon log (tail):\n" << daemon.log_tail());
  const Memory before = daemon.memory();

  // Even clients are frozen (a tiny window, never read), odd ones read.
  // They connect a hundred at a time, each batch accepted before the next:
  // the listen backlog is 128, and a connection it drops is retried by
  // the kernel only a second later.
  std::vector<Socket> frozen;
  std::vector<Socket> live;
  for (size_t c = 0; c < clients; ++c) {
    if (c % 2 == 0) {
      frozen.push_back(connect_tcp(out_port, 5s, /*rcvbuf=*/4096));
    } else {
      live.push_back(connect_tcp(out_port));
    }
    if ((c + 1) % 100 == 0) {
      const auto accepted = static_cast<double>(c + 1);
      REQUIRE(wait_sample(
                  metrics, sample_of("chronomerge_output_sink_clients", "clients"),
                  [&](double v) { return v == accepted; }, 10s) == accepted);
    }
  }
  Drain drain(std::move(live));

  // Each producer sends `rate` bytes a second for `seconds`, keyed by the
  // milliseconds since the start, then hangs up.
  std::atomic<uint64_t> sent{0};
  std::atomic<size_t> failed{0};
  const auto start = Clock::now();
  const auto end = start + std::chrono::seconds(seconds);
  std::vector<std::thread> threads;
  for (size_t p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      Socket socket = connect_tcp(feed_ports[p]);
      const std::string feed = "p" + std::to_string(p);
      const std::string pad(140, 'z');
      uint64_t bytes = 0;
      int64_t seq = 0;
      while (Clock::now() < end) {
        const auto now = Clock::now();
        const auto elapsed = std::chrono::duration_cast<std::chrono::microseconds>(now - start);
        const uint64_t due = rate * static_cast<uint64_t>(elapsed.count()) / 1000000;
        std::string chunk;
        while (bytes + chunk.size() < due) {
          chunk += "{\"time\":" + std::to_string(elapsed.count() / 1000) + ",\"feed\":\"" + feed +
                   "\",\"seq\":" + std::to_string(seq++) + ",\"pad\":\"" + pad + "\"}\n";
        }
        if (!chunk.empty() && !write_all(socket, chunk, 30s)) {
          ++failed;
          return;
        }
        bytes += chunk.size();
        std::this_thread::sleep_until(now + 100ms);
      }
      socket.shutdown_write();
      sent += bytes;
    });
  }
  uint64_t peak_rss = 0;
  while (Clock::now() < end) {
    peak_rss = std::max(peak_rss, daemon.memory().rss_kib);
    std::this_thread::sleep_for(100ms);
  }
  for (auto& t : threads) t.join();
  REQUIRE(failed == 0);

  // Every live client gets every byte: none was slowed down or dropped.
  const bool all = drain.wait_all(sent, read_timeout);
  const Memory memory = daemon.memory();
  peak_rss = std::max(peak_rss, memory.rss_kib);
  MESSAGE((sent >> 20) << " MiB pushed in " << seconds << " s to " << clients / 2
                       << " live clients; RSS " << before.rss_kib << " KiB before, peak sampled "
                       << peak_rss << " KiB, VmHWM " << memory.hwm_kib << " KiB");
  CHECK_MESSAGE(all, "the slowest live client got " << drain.least() << " of " << sent << " bytes");
  CHECK(drain.ended() == 0);
  daemon.check_alive();
  if (!sanitized) {
    CHECK(memory.hwm_kib < (retention >> 10) + (32 << 10));
  }

  // The frozen ones were dropped once the stream had left them behind;
  // nobody else was.
  const auto samples = scrape_all(metrics);
  auto value = [&](const std::string& reason) {
    auto it = samples.find(disconnects("clients", reason));
    return it == samples.end() ? -1.0 : it->second;
  };
  const double dropped = value("too_slow") + value("out_of_window");
  MESSAGE(value("too_slow") << " frozen clients dropped as too_slow, " << value("out_of_window")
                            << " as out_of_window");
  // A frozen client's cursor stays where it froze; retention drops that
  // place once about retention_bytes (records and index) were merged after.
  if (sent > retention + (4 << 20)) CHECK(dropped == clients / 2);
  CHECK(dropped <= clients / 2);
  CHECK(value("write_failed") == 0);
  CHECK(value("peer_closed") == 0);
  // Those still connected (a short run) would hold the drain.
  frozen.clear();
  CHECK(daemon.stop(30s).code == 0);
}
