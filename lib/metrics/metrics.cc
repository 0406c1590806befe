#include "metrics/metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "metrics/http_server.h"
#include "metrics/metrics_snapshot.h"
#include "record/simd_level.h"

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

// A key as Unix seconds, when keys are times: rfc3339 keys, and integer or
// number keys with a key_unit.
std::optional<double> key_timestamp(const MetricsSnapshot& snapshot, const Key& key) {
  if (snapshot.key_type == KeyType::rfc3339) return unix_seconds(key.ordinal);
  if (!snapshot.key_unit_seconds) return std::nullopt;
  if (snapshot.key_type == KeyType::integer) {
    return static_cast<double>(key.ordinal) * *snapshot.key_unit_seconds;
  }
  if (snapshot.key_type == KeyType::number) {
    return key_number_value(key) * *snapshot.key_unit_seconds;
  }
  return std::nullopt;
}

// Without a key_unit, integer keys between 1e12 and 1e13 are taken as
// epoch milliseconds for the frontier's lag alone (2001-09-09 to
// 2286-11-20; seconds, microseconds or nanoseconds since the epoch, and
// plain sequence numbers, fall outside that range today).
std::optional<double> guessed_timestamp(const MetricsSnapshot& snapshot, const Key& key) {
  if (snapshot.key_type == KeyType::integer && key.ordinal >= 1000000000000 &&
      key.ordinal < 10000000000000) {
    return static_cast<double>(key.ordinal) / 1e3;
  }
  return std::nullopt;
}

bool keys_are_times(const MetricsSnapshot& snapshot) {
  return snapshot.key_type == KeyType::rfc3339 ||
         (snapshot.key_unit_seconds && snapshot.key_type != KeyType::string);
}

void render_feeds(Exposition& x, const MetricsSnapshot& snapshot) {
  const std::vector<FeedSnapshot>& feeds = snapshot.feeds;
  const KeyType key_type = snapshot.key_type;

  // One family at a time, every feed in it.
  auto counter = [&](std::string_view name, std::string_view help, auto field) {
    x.family(name, "counter", help);
    for (const FeedSnapshot& t : feeds) x.sample({{"feed", t.name}}, t.*field);
  };
  auto gauge = [&](std::string_view name, std::string_view help, auto field) {
    x.family(name, "gauge", help);
    for (const FeedSnapshot& t : feeds) x.sample({{"feed", t.name}}, t.*field);
  };

  counter("chronomerge_feed_records_total",
          "Records received from the feed and queued for merging (heartbeats excluded).",
          &FeedSnapshot::records_in);
  counter("chronomerge_feed_records_out_total",
          "Records of the feed emitted in order (late records excluded).",
          &FeedSnapshot::records_out);
  counter("chronomerge_feed_bytes_total", "Bytes read from the feed.", &FeedSnapshot::bytes_read);

  x.family("chronomerge_feed_malformed_total", "counter",
           "Lines of the feed skipped because they are not records, by reason.");
  for (const FeedSnapshot& t : feeds) {
    for (size_t i = 0; i < line_errors.size(); ++i) {
      x.sample({{"feed", t.name}, {"reason", to_string(line_errors[i])}}, t.malformed_by[i]);
    }
  }
  counter("chronomerge_feed_partial_lines_total",
          "Unterminated lines discarded because the producer disconnected (also counted as "
          "malformed, reason not_json).",
          &FeedSnapshot::partial_discarded);
  counter("chronomerge_feed_discarded_bytes_total",
          "Bytes a removed or restarted feed (reload, drain) left unread in its connection "
          "when its drain_timeout_ms ran out.",
          &FeedSnapshot::discarded_bytes);
  counter("chronomerge_feed_late_total",
          "Records of the feed older than the merge frontier when they reached the head of its "
          "queue, whatever the late policy did with them.",
          &FeedSnapshot::late);
  counter("chronomerge_feed_heartbeats_total", "Heartbeat lines received from the feed.",
          &FeedSnapshot::heartbeats);
  gauge("chronomerge_feed_queue_bytes", "Bytes of records queued for merging.",
        &FeedSnapshot::queue_bytes);
  gauge("chronomerge_feed_paused",
        "1 while reading from the feed is paused because its queue reached the high-water mark.",
        &FeedSnapshot::paused);
  counter("chronomerge_feed_pauses_total", "Times reading from the feed was paused.",
          &FeedSnapshot::pauses);
  x.family("chronomerge_feed_paused_seconds_total", "counter",
           "Seconds reading from the feed has spent paused by backpressure, the current pause "
           "included.");
  for (const FeedSnapshot& t : feeds) {
    x.sample({{"feed", t.name}}, static_cast<double>(t.paused_ms) / 1000.0);
  }

  x.family("chronomerge_feed_idle", "gauge",
           "1 while the feed is idle: empty for longer than its idle timeout, so the merge no "
           "longer waits for it.");
  for (const FeedSnapshot& t : feeds) x.sample({{"feed", t.name}}, t.state == FeedState::idle);

  x.family("chronomerge_feed_state", "gauge",
           "The feed's merge state: ready (records queued), waiting (empty; the merge waits "
           "for it), idle (empty for longer than its idle timeout), ended; 1 for the current "
           "state.");
  for (const FeedSnapshot& t : feeds) {
    for (FeedState state : feed_states) {
      x.sample({{"feed", t.name}, {"state", to_string(state)}}, t.state == state);
    }
  }

  gauge("chronomerge_feed_connected",
        "1 while the feed's input is open (a connected producer, a running process, an open "
        "file).",
        &FeedSnapshot::connected);
  counter("chronomerge_feed_connections_total",
          "Times the feed's input was opened (producer connections, process starts).",
          &FeedSnapshot::connections);
  gauge("chronomerge_feed_io_error", "1 if the feed's input failed before its end.",
        &FeedSnapshot::io_error);

  // Exec feeds only.
  x.family("chronomerge_feed_start_failures_total", "counter",
           "Times an exec feed's program could not be started (not found, not executable, "
           "out of processes or descriptors); with restart on-exit it is tried again, with "
           "backoff.");
  for (const FeedSnapshot& t : feeds) {
    if (t.runs_program) x.sample({{"feed", t.name}}, t.start_failures);
  }

  // Listening feeds only: one producer at a time.
  x.family("chronomerge_feed_refused_total", "counter",
           "Producer connections a listening feed refused because a producer was connected "
           "(another one, or the same one's previous connection not yet read to its end).");
  for (const FeedSnapshot& t : feeds) {
    if (t.listens) x.sample({{"feed", t.name}}, t.refused);
  }
  x.family("chronomerge_feed_refused_bytes_total", "counter",
           "Bytes refused producers had already sent when they were refused, discarded unread.");
  for (const FeedSnapshot& t : feeds) {
    if (t.listens) x.sample({{"feed", t.name}}, t.refused_bytes);
  }

  if (keys_are_times(snapshot)) {
    x.family("chronomerge_feed_last_key_timestamp_seconds", "gauge",
             "Key of the last record received from the feed, as Unix time (keys are times: "
             "rfc3339, or key_unit).");
    for (const FeedSnapshot& t : feeds) {
      if (!t.last_key) continue;
      if (auto time = key_timestamp(snapshot, *t.last_key)) x.sample({{"feed", t.name}}, *time);
    }
  } else if (key_type != KeyType::string) {
    x.family("chronomerge_feed_last_key", "gauge",
             "Key of the last record received from the feed: integer keys as they are, number "
             "keys as numbers (set key_unit for Unix time).");
    for (const FeedSnapshot& t : feeds) {
      if (!t.last_key) continue;
      if (auto text = key_value_text(key_type, *t.last_key))
        x.sample_text({{"feed", t.name}}, *text);
    }
  }
}

// Per fleet, whatever its number of members: per-member series are the
// feed families above, and only with member_metrics.
void render_fleets(Exposition& x, const MetricsSnapshot& snapshot) {
  if (snapshot.fleets.empty()) return;
  auto each = [&](std::string_view name, std::string_view type, std::string_view help, auto field) {
    x.family(name, type, help);
    for (const FleetSnapshot& f : snapshot.fleets) x.sample({{"fleet", f.name}}, f.*field);
  };
  each("chronomerge_fleet_members", "gauge", "Members of the fleet with a producer connected.",
       &FleetSnapshot::connected);
  each("chronomerge_fleet_members_known", "gauge",
       "Members the fleet keeps: connected, or gone for less than linger_ms.",
       &FleetSnapshot::known);
  each("chronomerge_fleet_members_joined_total", "counter",
       "Members that joined the fleet (a name not known at the time).", &FleetSnapshot::joined);
  each("chronomerge_fleet_members_left_total", "counter",
       "Member connections that ended (the member lingers for linger_ms).", &FleetSnapshot::left);
  each("chronomerge_fleet_members_replaced_total", "counter",
       "Member connections replaced by a new connection under the same name.",
       &FleetSnapshot::replaced);
  each("chronomerge_fleet_members_retired_total", "counter",
       "Members freed after linger_ms without a reconnect (or to make room).",
       &FleetSnapshot::retired);
  x.family("chronomerge_fleet_refused_total", "counter",
           "Producer connections the fleet refused, by reason.");
  for (const FleetSnapshot& f : snapshot.fleets) {
    for (const auto& [reason, count] : f.refused) {
      x.sample({{"fleet", f.name}, {"reason", reason}}, count);
    }
  }
  each("chronomerge_fleet_records_total", "counter",
       "Records received from the fleet's members (heartbeats excluded).",
       &FleetSnapshot::records_in);
  each("chronomerge_fleet_bytes_total", "counter", "Bytes read from the fleet's members.",
       &FleetSnapshot::bytes_read);
  each("chronomerge_fleet_malformed_total", "counter",
       "Lines of the fleet's members skipped because they are not records.",
       &FleetSnapshot::malformed);
  each("chronomerge_fleet_late_total", "counter",
       "Records of the fleet's members older than the merge frontier when they reached the "
       "head of their queue.",
       &FleetSnapshot::late);
  each("chronomerge_fleet_members_paused", "gauge",
       "Members whose reading is paused (their queue is full, or over their share of "
       "max_bytes).",
       &FleetSnapshot::paused);
  each("chronomerge_fleet_members_idle", "gauge", "Members idle: the merge does not wait for them.",
       &FleetSnapshot::idle);
  each("chronomerge_fleet_queue_bytes", "gauge",
       "Bytes of records the fleet's members have queued for merging.",
       &FleetSnapshot::queue_bytes);
  x.family("chronomerge_fleet_oldest_member_lag", "gauge",
           "How far (key units) the last key of the connected member furthest behind is "
           "behind that of the member furthest ahead: a bus whose link or clock lags.");
  for (const FleetSnapshot& f : snapshot.fleets) {
    if (f.oldest_member_lag) x.sample({{"fleet", f.name}}, *f.oldest_member_lag);
  }
}

void render_tls(Exposition& x, const MetricsSnapshot& snapshot, double wall_clock_seconds) {
  if (snapshot.tls.empty()) return;
  x.family("chronomerge_tls_connections_total", "counter",
           "TLS handshakes completed (and peers verified), by listener.");
  for (const auto& [listener, tls] : snapshot.tls) {
    x.sample({{"listener", listener}}, tls.connections);
  }
  x.family("chronomerge_tls_refused_total", "counter",
           "TLS connections refused, by reason: handshake (not TLS, a protocol error, a "
           "timeout), cert (a peer certificate missing, expired or from another CA) or token "
           "(no valid token in the request line, hello or Authorization header).");
  for (const auto& [listener, tls] : snapshot.tls) {
    for (TlsFailure reason : {TlsFailure::handshake, TlsFailure::cert, TlsFailure::token}) {
      x.sample({{"listener", listener}, {"reason", to_string(reason)}},
               tls.refused[static_cast<size_t>(reason)]);
    }
  }
  x.family("chronomerge_tls_handshakes_in_flight", "gauge", "TLS handshakes in progress.");
  for (const auto& [listener, tls] : snapshot.tls) {
    x.sample({{"listener", listener}}, tls.in_flight);
  }
  x.family("chronomerge_tls_certificate_expiry_seconds", "gauge",
           "Seconds until the certificate the listener presents expires (negative: expired).");
  for (const auto& [listener, tls] : snapshot.tls) {
    if (tls.certificate_expiry) {
      x.sample({{"listener", listener}},
               static_cast<double>(*tls.certificate_expiry) - wall_clock_seconds);
    }
  }
}

void render_merger(Exposition& x, const MetricsSnapshot& snapshot, double wall_clock_seconds) {
  const KeyType key_type = snapshot.key_type;

  x.family("chronomerge_records_out_total", "counter",
           "Records written to the merged stream (late records emitted by policy included).");
  x.sample(snapshot.records_out);
  x.family("chronomerge_output_bytes_total", "counter", "Bytes written to the merged stream.");
  x.sample(snapshot.output_bytes);

  const std::optional<Key>& frontier = snapshot.frontier;
  if (frontier && keys_are_times(snapshot)) {
    if (std::optional<double> time = key_timestamp(snapshot, *frontier)) {
      x.family("chronomerge_frontier_timestamp_seconds", "gauge",
               "Key of the last record emitted in order, as Unix time (keys are times: "
               "rfc3339, or key_unit).");
      x.sample(*time);
      x.family("chronomerge_frontier_lag_seconds", "gauge",
               "Wall clock minus the merge frontier, in seconds (keys are times).");
      x.sample(wall_clock_seconds - *time);
    }
  } else if (frontier && key_type != KeyType::string) {
    x.family("chronomerge_frontier", "gauge",
             "Key of the last record emitted in order: integer keys as they are, number keys "
             "as numbers (set key_unit for Unix time).");
    if (auto text = key_value_text(key_type, *frontier)) x.sample_text({}, *text);
    if (std::optional<double> time = guessed_timestamp(snapshot, *frontier)) {
      x.family("chronomerge_frontier_lag_seconds", "gauge",
               "Wall clock minus the merge frontier, in seconds. Without key_unit, only for "
               "integer keys between 1e12 and 1e13, taken as Unix epoch milliseconds.");
      x.sample(wall_clock_seconds - *time);
    }
  }

  // Who the merge waits for while other feeds have records ready: one
  // sample while a feed holds it, none otherwise.
  x.family("chronomerge_feed_holding_seconds", "gauge",
           "Seconds the named feed has held the merge without a break: the merge waits for it "
           "(empty, not yet idle) while other feeds have records ready. Absent while no feed "
           "holds it.");
  if (snapshot.holder) x.sample({{"feed", *snapshot.holder}}, snapshot.holder_seconds);

  x.family("chronomerge_output_discarded_bytes_total", "counter",
           "Bytes of the merged stream (or dead letters) that outputs replaced or removed by a "
           "reload had not yet written.");
  x.sample(snapshot.discarded_output_bytes);

  x.family("chronomerge_output_log_retained_bytes", "gauge",
           "Bytes of the retained output log (records and their index) held for readers and "
           "for clients that resume: at least retention_bytes once that much was merged.");
  x.sample(snapshot.output_retained_bytes);
  x.family("chronomerge_output_log_retained_records", "gauge",
           "Records in the retained output log.");
  x.sample(snapshot.output_retained_records);
  x.family("chronomerge_output_log_oldest_offset", "gauge",
           "Offset of the oldest retained record: a resume from an older one is a gap.");
  x.sample(snapshot.output_oldest_offset);
  if (snapshot.output_oldest_key && key_type != KeyType::string) {
    x.family("chronomerge_output_log_oldest_key", "gauge",
             "Key of the oldest retained record (as chronomerge_frontier).");
    if (auto text = key_value_text(key_type, *snapshot.output_oldest_key)) x.sample_text({}, *text);
  }
  x.family("chronomerge_output_clients", "gauge",
           "Readers of the merged stream: one per file or stdout output, one per client of a "
           "listening output.");
  x.sample(snapshot.output_readers);
}

void render_sinks(Exposition& x, const MetricsSnapshot& snapshot) {
  const auto& sinks = snapshot.sinks;
  auto family = [&](std::string_view name, std::string_view type, std::string_view help,
                    auto value) {
    x.family(name, type, help);
    for (const auto& [output, counters] : sinks) x.sample({{"output", output}}, value(counters));
  };
  // Client families only for outputs that can have clients (0 while none
  // is connected); files, standard output and Kafka have none.
  auto server_family = [&](std::string_view name, std::string_view type, std::string_view help,
                           auto value) {
    x.family(name, type, help);
    for (const auto& [output, counters] : sinks) {
      if (counters.server) x.sample({{"output", output}}, value(counters));
    }
  };
  server_family("chronomerge_output_sink_clients", "gauge",
                "Clients connected to the output now (listening outputs).",
                [](const SinkCounters& c) { return c.clients; });
  server_family("chronomerge_output_sink_connections_total", "counter",
                "Clients accepted by the output since it started (listening outputs).",
                [](const SinkCounters& c) { return c.clients_total; });
  family("chronomerge_output_sink_bytes_total", "counter", "Bytes written by the output.",
         [](const SinkCounters& c) { return c.bytes_out; });
  family("chronomerge_output_sink_queue_bytes", "gauge",
         "Bytes of the merged stream the output's slowest reader has yet to write.",
         [](const SinkCounters& c) { return static_cast<uint64_t>(c.queue_bytes); });
  x.family(
      "chronomerge_output_sink_disconnects_total", "counter",
      "Clients that went away before the end of the stream, by reason: too_slow, "
      "out_of_window, stalled, write_failed, peer_closed, gap, bad_request, hello_timeout, token.");
  for (const auto& [output, counters] : sinks) {
    if (!counters.server) continue;
    for (size_t r = 0; r < disconnect_reason_count; ++r) {
      x.sample({{"output", output}, {"reason", to_string(static_cast<DisconnectReason>(r))}},
               counters.disconnects_by[r]);
    }
  }
  family("chronomerge_output_sink_pending_bytes", "gauge",
         "Bytes of the merged stream the output's readers have yet to write, summed over them.",
         [](const SinkCounters& c) { return static_cast<uint64_t>(c.lag_sum); });
  family("chronomerge_output_sink_resumes_total", "counter", "Resume requests the output served.",
         [](const SinkCounters& c) { return c.resumes; });
  family("chronomerge_output_sink_gaps_total", "counter",
         "Resume requests for records no longer retained (or of another run).",
         [](const SinkCounters& c) { return c.gaps; });
  family("chronomerge_output_sink_held_seconds_total", "counter",
         "Time the output's block readers held the merge (at their hold point).",
         [](const SinkCounters& c) { return static_cast<double>(c.held_ms) / 1000.0; });
  server_family("chronomerge_output_sink_refused_total", "counter",
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

// Kafka partition feeds and kafka outputs: families only when there are any.
void render_kafka(Exposition& x, const MetricsSnapshot& snapshot) {
  std::vector<std::pair<std::string_view, const KafkaPartitionCounters*>> partitions;
  for (const FeedSnapshot& t : snapshot.feeds) {
    if (t.kafka) partitions.emplace_back(t.name, &*t.kafka);
  }
  std::vector<std::pair<std::string_view, const KafkaProducerCounters*>> producers;
  for (const auto& [output, counters] : snapshot.sinks) {
    if (counters.kafka) producers.emplace_back(output, &*counters.kafka);
  }
  auto partition = [&](std::string_view name, std::string_view type, std::string_view help,
                       auto value) {
    if (partitions.empty()) return;
    x.family(name, type, help);
    for (const auto& [feed, c] : partitions) {
      if (value(*c) >= 0) x.sample({{"feed", feed}}, value(*c));
    }
  };
  partition("chronomerge_kafka_partition_lag_messages", "gauge",
            "Messages in the partition not yet read (high watermark minus the next offset).",
            [](const KafkaPartitionCounters& c) { return c.lag(); });
  partition("chronomerge_kafka_partition_next_offset", "gauge",
            "The offset after the last message read from the partition.",
            [](const KafkaPartitionCounters& c) { return c.next_offset; });
  partition("chronomerge_kafka_partition_committable_offset", "gauge",
            "Every message before this offset has been written by every block output (or "
            "needed no writing).",
            [](const KafkaPartitionCounters& c) { return c.committable; });
  partition("chronomerge_kafka_partition_committed_offset", "gauge",
            "The offset last committed for the partition, as the broker confirmed.",
            [](const KafkaPartitionCounters& c) { return c.committed; });
  partition("chronomerge_kafka_partition_at_end", "gauge",
            "1 once the partition has been read up to its high watermark; 0 while fetching.",
            [](const KafkaPartitionCounters& c) { return int64_t{c.at_end}; });
  partition("chronomerge_kafka_partition_pending_messages", "gauge",
            "Messages read whose records are not yet written by every block output.",
            [](const KafkaPartitionCounters& c) { return static_cast<int64_t>(c.pending); });
  partition("chronomerge_kafka_partition_errors_total", "counter",
            "Errors the Kafka client reported for the partition or its client.",
            [](const KafkaPartitionCounters& c) { return static_cast<int64_t>(c.errors); });

  auto producer = [&](std::string_view name, std::string_view type, std::string_view help,
                      auto value) {
    if (producers.empty()) return;
    x.family(name, type, help);
    for (const auto& [output, c] : producers) x.sample({{"output", output}}, value(*c));
  };
  producer("chronomerge_kafka_output_produced_total", "counter",
           "Records handed to the Kafka producer (again after a failed delivery).",
           [](const KafkaProducerCounters& c) { return c.produced; });
  producer("chronomerge_kafka_output_delivered_total", "counter",
           "Records the brokers acknowledged (acks=all).",
           [](const KafkaProducerCounters& c) { return c.delivered; });
  producer("chronomerge_kafka_output_failed_total", "counter",
           "Delivery reports with an error; those records are produced again.",
           [](const KafkaProducerCounters& c) { return c.failed; });
  producer("chronomerge_kafka_output_in_flight", "gauge",
           "Records produced and not yet acknowledged or failed.",
           [](const KafkaProducerCounters& c) { return static_cast<uint64_t>(c.in_flight); });
  producer("chronomerge_kafka_output_queue_full_total", "counter",
           "Times the producer's queue was full and producing paused.",
           [](const KafkaProducerCounters& c) { return c.queue_full; });
  producer("chronomerge_kafka_output_errors_total", "counter",
           "Errors the Kafka producer reported (failed deliveries included).",
           [](const KafkaProducerCounters& c) { return c.errors; });
}

// Every listening socket: feeds, outputs, and the metrics port serving this
// (when render_metrics runs in its handler). Only reasons that occurred.
void render_accept_errors(Exposition& x, const MetricsSnapshot& snapshot) {
  x.family("chronomerge_accept_errors_total", "counter",
           "Connections a listener could not accept, by listener (feed/NAME, output/NAME, "
           "metrics) and reason (the error; EMFILE: the process is out of file descriptors, "
           "and the connections waiting were closed at once).");
  auto samples = [&](const std::string& listener, const AcceptErrors& errors) {
    for (const auto& [reason, count] : errors) {
      x.sample({{"listener", listener}, {"reason", reason}}, count);
    }
  };
  for (const auto& [listener, errors] : snapshot.accept_errors) samples(listener, errors);
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
void render_deadletter(Exposition& x, const MetricsSnapshot& snapshot) {
  if (!snapshot.deadletter) return;
  const DeadLetter::Counters& c = *snapshot.deadletter;
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
  x.family("chronomerge_systemd_notify_failures_total", "counter",
           "Notifications (READY, STOPPING, RELOADING, WATCHDOG) that could not be sent to the "
           "socket NOTIFY_SOCKET names.");
  x.sample(extras.notify_failures);
  x.family("chronomerge_draining", "gauge",
           "1 while the daemon drains after SIGTERM or SIGINT: no more input is read, what is "
           "queued is still written.");
  x.sample(extras.draining);
  x.family("chronomerge_start_time_seconds", "gauge", "Unix time the daemon started.");
  x.sample(extras.start_time_seconds);
  x.family("chronomerge_build_info", "gauge",
           "Always 1; the version of chronomerge, and the instruction set its JSON validation "
           "uses (avx512, avx2, sse2 or scalar; CHRONOMERGE_SIMD), as labels.");
  x.sample({{"version", CHRONOMERGE_VERSION},
            {"validation", std::string(to_string(default_simd_level()))}},
           uint64_t{1});
}

// The standard process_* families of Prometheus client libraries, from
// /proc (Linux).
void render_process(Exposition& x, const MetricsExtras& extras) {
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (close != std::string::npos) {
    // Fields after "(comm)": state is field 3; utime 14, stime 15, vsize
    // 23, rss 24 (pages).
    std::istringstream fields(stat.substr(close + 2));
    std::vector<std::string> f((std::istream_iterator<std::string>(fields)),
                               std::istream_iterator<std::string>());
    if (f.size() > 21) {
      const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
      const double cpu = (std::stod(f[11]) + std::stod(f[12])) / ticks;
      x.family("process_cpu_seconds_total", "counter", "User and system CPU time, in seconds.");
      x.sample(cpu);
      x.family("process_virtual_memory_bytes", "gauge", "Virtual memory size, in bytes.");
      x.sample(std::stod(f[20]));
      x.family("process_resident_memory_bytes", "gauge", "Resident memory size, in bytes.");
      x.sample(std::stod(f[21]) * static_cast<double>(::sysconf(_SC_PAGESIZE)));
    }
  }
  std::error_code error;
  size_t fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    ++fds;
  }
  if (!error) {
    x.family("process_open_fds", "gauge", "Open file descriptors.");
    x.sample(static_cast<uint64_t>(fds > 0 ? fds - 1 : 0));  // less the directory's own
  }
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    x.family("process_max_fds", "gauge", "The open-files limit (soft).");
    x.sample(static_cast<uint64_t>(limit.rlim_cur));
  }
  x.family("process_start_time_seconds", "gauge", "Unix time the process started.");
  x.sample(extras.start_time_seconds);
}

}  // namespace

std::string render_metrics(const MetricsSnapshot& snapshot, const MetricsExtras& extras,
                           double wall_clock_seconds) {
  Exposition x;
  render_feeds(x, snapshot);
  render_fleets(x, snapshot);
  render_tls(x, snapshot, wall_clock_seconds);
  render_merger(x, snapshot, wall_clock_seconds);
  render_sinks(x, snapshot);
  render_kafka(x, snapshot);
  render_accept_errors(x, snapshot);
  render_deadletter(x, snapshot);
  render_http(x);
  render_daemon(x, extras);
  render_process(x, extras);
  return x.take();
}

}  // namespace chronomerge
