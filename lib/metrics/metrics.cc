#include "metrics/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <initializer_list>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "daemon/pipeline.h"
#include "feeds/listen_feed.h"
#include "metrics/http_server.h"
#include "sinks/dead_letter.h"
#include "sinks/server_sink.h"

#ifndef CHRONOMERGE_VERSION
#define CHRONOMERGE_VERSION "unknown"
#endif

namespace chronomerge {

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

double unix_time_seconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

namespace {

// HELP text escapes only backslash and newline.
std::string escape_help(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// Sample values are Go floats: integers print exactly, doubles in their
// shortest round-trip form, and the special values as Prometheus spells them.
std::string value_text(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}
std::string value_text(uint64_t v) {
  return fmt::format("{}", v);
}
std::string value_text(int64_t v) {
  return fmt::format("{}", v);
}
std::string value_text(bool v) {
  return v ? "1" : "0";
}

using Labels = std::initializer_list<std::pair<std::string_view, std::string_view>>;

// Writes metric families: a family's HELP and TYPE, then all its samples,
// as the format requires (one family's samples are never interleaved with
// another's).
class Exposition {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    name_ = name;
    fmt::format_to(std::back_inserter(out_), "# HELP {} {}\n# TYPE {} {}\n", name,
                   escape_help(help), name, type);
  }

  template <typename T>
  void sample(Labels labels, T value) {
    sample_text(labels, value_text(value));
  }
  template <typename T>
  void sample(T value) {
    sample_text(Labels{}, value_text(value));
  }

  // A value already in the format's number syntax.
  void sample_text(Labels labels, std::string_view value) {
    out_ += name_;
    if (labels.size() > 0) {
      char separator = '{';
      for (const auto& [label, text] : labels) {
        fmt::format_to(std::back_inserter(out_), "{}{}=\"{}\"", separator, label,
                       escape_label_value(text));
        separator = ',';
      }
      out_ += '}';
    }
    out_ += ' ';
    out_ += value;
    out_ += '\n';
  }

  std::string take() { return std::move(out_); }

 private:
  std::string out_;
  std::string name_;
};

constexpr std::array<LineError, 7> line_errors = {
    LineError::not_json,       LineError::not_object,   LineError::missing_key,
    LineError::wrong_key_type, LineError::key_overflow, LineError::too_long,
    LineError::too_deep,
};
static_assert(std::size(FeedCounters{}.malformed_by) == line_errors.size(),
              "a new LineError needs its metric label here");

constexpr std::array<FeedState, 4> feed_states = {FeedState::ready, FeedState::waiting,
                                                  FeedState::idle, FeedState::ended};

// rfc3339 ordinals are nanoseconds since the epoch. Split before converting:
// ordinal / 1e9 in one step rounds twice.
double unix_seconds(int64_t nanos) {
  return static_cast<double>(nanos / 1000000000) + static_cast<double>(nanos % 1000000000) / 1e9;
}

// A key as a sample value: integer keys exactly as they are, number keys as
// the double they were, rfc3339 keys as Unix seconds. String keys have no
// numeric value.
std::optional<std::string> key_value_text(KeyType type, const Key& key) {
  switch (type) {
    case KeyType::integer:
      return value_text(key.ordinal);
    case KeyType::number:
      return value_text(key_number_value(key));
    case KeyType::rfc3339:
      return value_text(unix_seconds(key.ordinal));
    case KeyType::string:
      return std::nullopt;
  }
  return std::nullopt;
}

// A key as Unix seconds, when it is a time: rfc3339 keys, and integer keys
// between 1e12 and 1e13, taken as epoch milliseconds (2001-09-09 to
// 2286-11-20; seconds, microseconds or nanoseconds since the epoch, and
// plain sequence numbers, fall outside that range today).
std::optional<double> key_time_seconds(KeyType type, const Key& key) {
  if (type == KeyType::rfc3339) return unix_seconds(key.ordinal);
  if (type == KeyType::integer && key.ordinal >= 1000000000000 && key.ordinal < 10000000000000) {
    return static_cast<double>(key.ordinal) / 1e3;
  }
  return std::nullopt;
}

// Every Feed object of one configured feed name (see the header: a restart
// by reload leaves the old, removed one next to the new one), summed.
struct FeedTotals {
  std::string_view name;
  uint64_t records_in = 0;
  uint64_t records_out = 0;
  uint64_t bytes_read = 0;
  std::array<uint64_t, line_errors.size()> malformed_by{};
  uint64_t partial_discarded = 0;
  uint64_t discarded_bytes = 0;
  uint64_t late = 0;
  uint64_t heartbeats = 0;
  uint64_t queue_bytes = 0;
  uint64_t pauses = 0;
  uint64_t paused_ms = 0;
  uint64_t connections = 0;
  bool listens = false;  // a listening feed: refusals apply
  uint64_t refused = 0;
  uint64_t refused_bytes = 0;
  AcceptErrors accept_errors;
  bool paused = false;
  bool connected = false;
  bool io_error = false;
  FeedState state = FeedState::ended;  // of the newest instance
  std::optional<Key> last_key;         // the newest instance's that has one
  bool reported = false;
};

std::vector<FeedTotals> feed_totals(const Pipeline& pipeline) {
  const Merger& merger = pipeline.merger_state();
  std::vector<FeedTotals> totals;
  for (const auto& feed : pipeline.feeds()) {
    if (!feed) continue;
    auto it = std::find_if(totals.begin(), totals.end(),
                           [&](const FeedTotals& t) { return t.name == feed->name(); });
    if (it == totals.end()) {
      totals.push_back(FeedTotals{});
      it = std::prev(totals.end());
      it->name = feed->name();
    }
    FeedTotals& t = *it;
    const FeedId id = feed->id();
    const FeedStats& stats = merger.stats(id);
    const FeedCounters& counters = feed->counters();
    t.records_in += stats.records_in;
    t.records_out += stats.records_out;
    t.bytes_read += counters.bytes_read;
    for (size_t i = 0; i < line_errors.size(); ++i) t.malformed_by[i] += counters.malformed_by[i];
    t.partial_discarded += counters.partial_discarded;
    t.discarded_bytes += counters.discarded_bytes;
    t.late += stats.late;
    t.heartbeats += stats.heartbeats;
    t.queue_bytes += merger.queue_bytes(id);
    t.pauses += stats.pauses;
    t.paused_ms += counters.paused_ms_at(pipeline.now_ms(), merger.paused(id));
    t.connections += counters.connections;
    if (const auto* listen = dynamic_cast<const ListenFeed*>(feed.get())) {
      t.listens = true;
      t.refused += listen->refused();
      t.refused_bytes += listen->refused_bytes();
      for (const auto& [reason, count] : listen->accept_errors()) t.accept_errors[reason] += count;
    }
    t.paused = t.paused || merger.paused(id);
    t.connected = t.connected || counters.connected;
    t.io_error = t.io_error || counters.io_error;
    // Feeds are in id order: the newest instance comes last and wins.
    t.state = merger.state(id);
    if (stats.last_key) t.last_key = stats.last_key;
    if (t.state != FeedState::ended) t.reported = true;
  }
  // Retired instances (removed, drained and freed) still count: counters
  // never go backwards.
  for (const auto& [name, retired] : pipeline.retired_feeds()) {
    auto it = std::find_if(totals.begin(), totals.end(),
                           [&](const FeedTotals& t) { return t.name == name; });
    if (it == totals.end()) {
      totals.push_back(FeedTotals{});
      it = std::prev(totals.end());
      it->name = name;
    }
    FeedTotals& t = *it;
    t.records_in += retired.stats.records_in;
    t.records_out += retired.stats.records_out;
    t.bytes_read += retired.counters.bytes_read;
    for (size_t i = 0; i < line_errors.size(); ++i) {
      t.malformed_by[i] += retired.counters.malformed_by[i];
    }
    t.partial_discarded += retired.counters.partial_discarded;
    t.discarded_bytes += retired.counters.discarded_bytes;
    t.refused += retired.counters.refused;
    t.refused_bytes += retired.counters.refused_bytes;
    t.late += retired.stats.late;
    t.heartbeats += retired.stats.heartbeats;
    t.pauses += retired.stats.pauses;
    t.paused_ms += retired.counters.paused_ms;
    t.connections += retired.counters.connections;
    if (!t.last_key && retired.stats.last_key) t.last_key = retired.stats.last_key;
  }
  // Ended feeds stay visible while the configuration names them.
  for (const FeedConfig& feed : pipeline.config().feeds) {
    for (FeedTotals& t : totals) {
      if (t.name == feed.name) t.reported = true;
    }
  }
  std::erase_if(totals, [](const FeedTotals& t) { return !t.reported; });
  return totals;
}

void render_feeds(Exposition& x, const Pipeline& pipeline) {
  const std::vector<FeedTotals> feeds = feed_totals(pipeline);
  const KeyType key_type = pipeline.config().key_type;

  // One family at a time, every feed in it.
  auto counter = [&](std::string_view name, std::string_view help, auto field) {
    x.family(name, "counter", help);
    for (const FeedTotals& t : feeds) x.sample({{"feed", t.name}}, t.*field);
  };
  auto gauge = [&](std::string_view name, std::string_view help, auto field) {
    x.family(name, "gauge", help);
    for (const FeedTotals& t : feeds) x.sample({{"feed", t.name}}, t.*field);
  };

  counter("chronomerge_feed_records_total",
          "Records received from the feed and queued for merging (heartbeats excluded).",
          &FeedTotals::records_in);
  counter("chronomerge_feed_records_out_total",
          "Records of the feed emitted in order (late records excluded).",
          &FeedTotals::records_out);
  counter("chronomerge_feed_bytes_total", "Bytes read from the feed.", &FeedTotals::bytes_read);

  x.family("chronomerge_feed_malformed_total", "counter",
           "Lines of the feed skipped because they are not records, by reason.");
  for (const FeedTotals& t : feeds) {
    for (size_t i = 0; i < line_errors.size(); ++i) {
      x.sample({{"feed", t.name}, {"reason", to_string(line_errors[i])}}, t.malformed_by[i]);
    }
  }
  counter("chronomerge_feed_partial_lines_total",
          "Unterminated lines discarded because the producer disconnected (also counted as "
          "malformed, reason not_json).",
          &FeedTotals::partial_discarded);
  counter("chronomerge_feed_discarded_bytes_total",
          "Bytes a removed or restarted feed (reload, drain) left unread in its connection "
          "when its drain_timeout_ms ran out.",
          &FeedTotals::discarded_bytes);
  counter("chronomerge_feed_late_total",
          "Records of the feed older than the merge frontier when they reached the head of its "
          "queue, whatever the late policy did with them.",
          &FeedTotals::late);
  counter("chronomerge_feed_heartbeats_total", "Heartbeat lines received from the feed.",
          &FeedTotals::heartbeats);
  gauge("chronomerge_feed_queue_bytes", "Bytes of records queued for merging.",
        &FeedTotals::queue_bytes);
  gauge("chronomerge_feed_paused",
        "1 while reading from the feed is paused because its queue reached the high-water mark.",
        &FeedTotals::paused);
  counter("chronomerge_feed_pauses_total", "Times reading from the feed was paused.",
          &FeedTotals::pauses);
  x.family("chronomerge_feed_paused_seconds_total", "counter",
           "Seconds reading from the feed has spent paused by backpressure, the current pause "
           "included.");
  for (const FeedTotals& t : feeds) {
    x.sample({{"feed", t.name}}, static_cast<double>(t.paused_ms) / 1000.0);
  }

  x.family("chronomerge_feed_idle", "gauge",
           "1 while the feed is idle: empty for longer than its idle timeout, so the merge no "
           "longer waits for it.");
  for (const FeedTotals& t : feeds) x.sample({{"feed", t.name}}, t.state == FeedState::idle);

  x.family("chronomerge_feed_state", "gauge",
           "The feed's merge state: ready (records queued), waiting (empty; the merge waits "
           "for it), idle (empty for longer than its idle timeout), ended; 1 for the current "
           "state.");
  for (const FeedTotals& t : feeds) {
    for (FeedState state : feed_states) {
      x.sample({{"feed", t.name}, {"state", to_string(state)}}, t.state == state);
    }
  }

  gauge("chronomerge_feed_connected",
        "1 while the feed's input is open (a connected producer, a running process, an open "
        "file).",
        &FeedTotals::connected);
  counter("chronomerge_feed_connections_total",
          "Times the feed's input was opened (producer connections, process starts).",
          &FeedTotals::connections);
  gauge("chronomerge_feed_io_error", "1 if the feed's input failed before its end.",
        &FeedTotals::io_error);

  // Listening feeds only: one producer at a time.
  x.family("chronomerge_feed_refused_total", "counter",
           "Producer connections a listening feed refused because a producer was connected "
           "(another one, or the same one's previous connection not yet read to its end).");
  for (const FeedTotals& t : feeds) {
    if (t.listens) x.sample({{"feed", t.name}}, t.refused);
  }
  x.family("chronomerge_feed_refused_bytes_total", "counter",
           "Bytes refused producers had already sent when they were refused, discarded unread.");
  for (const FeedTotals& t : feeds) {
    if (t.listens) x.sample({{"feed", t.name}}, t.refused_bytes);
  }

  if (key_type != KeyType::string) {
    x.family("chronomerge_feed_last_key", "gauge",
             "Key of the last record received from the feed: integer keys as they are, number "
             "keys as numbers, rfc3339 keys as Unix seconds.");
    for (const FeedTotals& t : feeds) {
      if (!t.last_key) continue;
      if (auto text = key_value_text(key_type, *t.last_key))
        x.sample_text({{"feed", t.name}}, *text);
    }
  }
}

void render_merger(Exposition& x, const Pipeline& pipeline, double wall_clock_seconds) {
  const Merger& merger = pipeline.merger_state();
  const Output& output = pipeline.output();
  const KeyType key_type = pipeline.config().key_type;

  x.family("chronomerge_records_out_total", "counter",
           "Records written to the merged stream (late records emitted by policy included).");
  x.sample(merger.records_out());
  x.family("chronomerge_output_bytes_total", "counter", "Bytes written to the merged stream.");
  x.sample(output.head());

  const std::optional<Key>& frontier = merger.frontier();
  if (frontier && key_type != KeyType::string) {
    x.family("chronomerge_frontier", "gauge",
             "Key of the last record emitted in order: integer keys as they are, number keys "
             "as numbers, rfc3339 keys as Unix seconds.");
    if (auto text = key_value_text(key_type, *frontier)) x.sample_text({}, *text);
  }
  if (frontier) {
    if (std::optional<double> time = key_time_seconds(key_type, *frontier)) {
      x.family("chronomerge_frontier_lag_seconds", "gauge",
               "Wall clock minus the merge frontier, in seconds. Only when keys are times: "
               "rfc3339 keys, or integer keys between 1e12 and 1e13, taken as Unix epoch "
               "milliseconds (heuristic).");
      x.sample(wall_clock_seconds - *time);
    }
  }

  // Who the merge waits for while other feeds have records ready: one
  // sample while a feed holds it, none otherwise.
  x.family("chronomerge_feed_holding_seconds", "gauge",
           "Seconds the named feed has held the merge without a break: the merge waits for it "
           "(empty, not yet idle) while other feeds have records ready. Absent while no feed "
           "holds it.");
  if (std::optional<FeedId> holder = merger.holder()) {
    const auto& feed = pipeline.feeds()[*holder];
    if (feed) {
      x.sample({{"feed", feed->name()}},
               static_cast<double>(pipeline.now_ms() - merger.held_since()) / 1000.0);
    }
  }

  x.family("chronomerge_output_discarded_bytes_total", "counter",
           "Bytes of the merged stream (or dead letters) that outputs replaced or removed by a "
           "reload had not yet written.");
  x.sample(pipeline.discarded_output_bytes());

  x.family("chronomerge_output_buffered_bytes", "gauge",
           "Bytes of the merged stream held in memory until every reader has taken them.");
  x.sample(static_cast<uint64_t>(output.buffered_bytes()));
  x.family("chronomerge_output_clients", "gauge",
           "Readers of the merged stream: one per file or stdout output, one per client of a "
           "listening output.");
  x.sample(static_cast<uint64_t>(output.subscriber_count()));
}

void render_sinks(Exposition& x, const Pipeline& pipeline) {
  std::vector<std::pair<std::string_view, SinkCounters>> sinks;
  for (const auto& sink : pipeline.sinks()) {
    if (sink) sinks.emplace_back(sink->name(), sink->counters());
  }
  auto family = [&](std::string_view name, std::string_view type, std::string_view help,
                    auto value) {
    x.family(name, type, help);
    for (const auto& [output, counters] : sinks) x.sample({{"output", output}}, value(counters));
  };
  family("chronomerge_output_sink_clients", "gauge",
         "Clients connected to the output now (listening outputs).",
         [](const SinkCounters& c) { return c.clients; });
  family("chronomerge_output_sink_connections_total", "counter",
         "Clients accepted by the output since it started (listening outputs).",
         [](const SinkCounters& c) { return c.clients_total; });
  family("chronomerge_output_sink_bytes_total", "counter", "Bytes written by the output.",
         [](const SinkCounters& c) { return c.bytes_out; });
  family("chronomerge_output_sink_queue_bytes", "gauge",
         "Bytes of the merged stream the output's slowest reader has yet to write.",
         [](const SinkCounters& c) { return static_cast<uint64_t>(c.queue_bytes); });
  family("chronomerge_output_sink_disconnects_total", "counter",
         "Clients the output dropped: too slow, stalled, or failed writes.",
         [](const SinkCounters& c) { return c.disconnects; });
  family("chronomerge_output_sink_refused_total", "counter",
         "Clients the output refused because max_clients were connected.",
         [](const SinkCounters& c) { return c.refused; });
  family("chronomerge_output_sink_failed", "gauge", "1 if the output failed and stopped writing.",
         [](const SinkCounters& c) { return c.failed; });
  family("chronomerge_output_sink_failing", "gauge",
         "1 while a file output cannot write (disk full, I/O error) and retries.",
         [](const SinkCounters& c) { return c.failing; });
  family("chronomerge_output_sink_write_errors_total", "counter",
         "Failed writes of a file output, retries included.",
         [](const SinkCounters& c) { return c.write_errors; });
  family("chronomerge_output_sink_blocked_seconds_total", "counter",
         "Seconds a file output with on_error block could not write and held what it had to "
         "write (the merge waits once its queue is full).",
         [](const SinkCounters& c) { return static_cast<double>(c.blocked_ms) / 1000.0; });
  family("chronomerge_output_sink_dropped_records_total", "counter",
         "Records a file output with on_error skip dropped because it could not write.",
         [](const SinkCounters& c) { return c.dropped_records; });
  family("chronomerge_output_sink_dropped_bytes_total", "counter",
         "Bytes a file output with on_error skip dropped because it could not write.",
         [](const SinkCounters& c) { return c.dropped_bytes; });
}

// Every listening socket: feeds, outputs, and the metrics port serving this
// (when render_metrics runs in its handler). Only reasons that occurred.
void render_accept_errors(Exposition& x, const Pipeline& pipeline) {
  x.family("chronomerge_accept_errors_total", "counter",
           "Connections a listener could not accept, by listener (feed/NAME, output/NAME, "
           "metrics) and reason (the error; EMFILE: the process is out of file descriptors, "
           "and the connections waiting were closed at once).");
  auto samples = [&](const std::string& listener, const AcceptErrors& errors) {
    for (const auto& [reason, count] : errors) {
      x.sample({{"listener", listener}, {"reason", reason}}, count);
    }
  };
  // A feed restarted by reload has two instances for a moment: one series.
  std::map<std::string, AcceptErrors> by_feed;
  for (const auto& feed : pipeline.feeds()) {
    if (const auto* listen = dynamic_cast<const ListenFeed*>(feed.get())) {
      for (const auto& [reason, count] : listen->accept_errors()) {
        by_feed["feed/" + feed->name()][reason] += count;
      }
    }
  }
  for (const auto& [listener, errors] : by_feed) samples(listener, errors);
  for (const auto& sink : pipeline.sinks()) {
    if (const auto* server = dynamic_cast<const ServerSink*>(sink.get())) {
      samples("output/" + server->name(), server->accept_errors());
    }
  }
  if (const HttpServer* http = HttpServer::current()) samples("metrics", http->accept_errors());
}

// The metrics port itself, when render_metrics runs in its handler.
void render_http(Exposition& x) {
  const HttpServer* http = HttpServer::current();
  if (http == nullptr) return;
  const HttpServer::Counters& c = http->counters();
  x.family("chronomerge_http_connections_total", "counter",
           "Connections the metrics port accepted.");
  x.sample(c.connections);
  x.family("chronomerge_http_connections_evicted_total", "counter",
           "Connections the metrics port closed to make room for a new one at its limit: the "
           "oldest idle one (no complete request head yet), else the oldest already answered.");
  x.sample(c.evicted);
  x.family("chronomerge_http_connections_refused_total", "counter",
           "Connections the metrics port closed at once: at its limit, every connection was "
           "busy answering.");
  x.sample(c.refused);
  x.family("chronomerge_http_timeouts_total", "counter",
           "Connections the metrics port closed on a timeout: stage head (no complete request "
           "head within 2 s), linger (answered, but the client did not hang up within 5 s).");
  x.sample({{"stage", "head"}}, c.head_timeouts);
  x.sample({{"stage", "linger"}}, c.linger_timeouts);
  x.family("chronomerge_http_requests_total", "counter",
           "Responses of the metrics port by status code (the one being served not yet "
           "counted).");
  for (const auto& [code, count] : c.responses) {
    x.sample({{"code", std::to_string(code)}}, count);
  }
}

// Only when a dead-letter file is configured.
void render_deadletter(Exposition& x, const Pipeline& pipeline) {
  const DeadLetter* deadletter = pipeline.deadletter();
  if (deadletter == nullptr) return;
  const DeadLetter::Counters c = deadletter->counters();
  x.family("chronomerge_deadletter_records_total", "counter",
           "Dead letters (malformed and late records) queued for the dead-letter file.");
  x.sample(c.records);
  x.family("chronomerge_deadletter_bytes_total", "counter",
           "Bytes written to the dead-letter file.");
  x.sample(c.bytes_written);
  x.family("chronomerge_deadletter_queue_bytes", "gauge",
           "Bytes of dead letters waiting to be written; at most deadletter.max_buffer.");
  x.sample(static_cast<uint64_t>(c.queue_bytes));
  x.family("chronomerge_deadletter_dropped_total", "counter",
           "Dead letters dropped because deadletter.max_buffer bytes were already waiting (a slow "
           "or stuck file).");
  x.sample(c.dropped);
  x.family("chronomerge_deadletter_dropped_bytes_total", "counter",
           "Bytes of the dead letters dropped.");
  x.sample(c.dropped_bytes);
  x.family("chronomerge_deadletter_write_errors_total", "counter",
           "Failed writes to the dead-letter file, retries included.");
  x.sample(c.write_errors);
  x.family("chronomerge_deadletter_failing", "gauge",
           "1 while the dead-letter file cannot be written (disk full, I/O error) and is retried.");
  x.sample(c.failing);
}

void render_daemon(Exposition& x, const MetricsExtras& extras) {
  x.family("chronomerge_reloads_total", "counter",
           "Configuration reloads (SIGHUP), by result; a failed reload leaves the running "
           "configuration in place.");
  x.sample({{"result", "success"}}, extras.reloads_ok);
  x.sample({{"result", "failure"}}, extras.reloads_failed);
  x.family("chronomerge_draining", "gauge",
           "1 while the daemon drains after SIGTERM or SIGINT: no more input is read, what is "
           "queued is still written.");
  x.sample(extras.draining);
  x.family("chronomerge_start_time_seconds", "gauge", "Unix time the daemon started.");
  x.sample(extras.start_time_seconds);
  x.family("chronomerge_build_info", "gauge", "Always 1; the version of chronomerge as a label.");
  x.sample({{"version", CHRONOMERGE_VERSION}}, uint64_t{1});
}

}  // namespace

std::string render_metrics(const Pipeline& pipeline, const MetricsExtras& extras,
                           double wall_clock_seconds) {
  Exposition x;
  render_feeds(x, pipeline);
  render_merger(x, pipeline, wall_clock_seconds);
  render_sinks(x, pipeline);
  render_accept_errors(x, pipeline);
  render_deadletter(x, pipeline);
  render_http(x);
  render_daemon(x, extras);
  return x.take();
}

}  // namespace chronomerge
