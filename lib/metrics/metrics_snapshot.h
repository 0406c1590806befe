// MetricsSnapshot: everything `GET /metrics` reports about the pipeline, as
// plain values taken at one moment on the loop thread.
//
// The pipeline fills it (Pipeline::metrics_snapshot()); render_metrics()
// turns it into text. So the metrics know nothing of the pipeline's
// objects, and tests can render any state they can write down.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "kafka/kafka_counters.h"
#include "merge/merger.h"
#include "record/key.h"
#include "record/record_parser.h"
#include "sinks/dead_letter.h"
#include "sinks/sink.h"
#include "uv/listener.h"

namespace chronomerge {

// One configured feed name. A reload that restarts a feed keeps the old
// instance (removed, still merging what it queued) next to the new one,
// and a retired instance's counts live on under its name: the counters
// here are sums over every instance, so they never go backwards.
struct FeedSnapshot {
  std::string name;
  uint64_t records_in = 0;
  uint64_t records_out = 0;
  uint64_t bytes_read = 0;
  LineErrorCounts malformed_by{};
  uint64_t partial_discarded = 0;
  uint64_t discarded_bytes = 0;
  uint64_t late = 0;
  uint64_t heartbeats = 0;
  uint64_t queue_bytes = 0;
  uint64_t pauses = 0;
  uint64_t paused_ms = 0;  // the current pause included
  uint64_t connections = 0;
  bool runs_program = false;  // an exec feed: start failures apply
  uint64_t start_failures = 0;
  bool listens = false;  // a listening feed: refusals apply
  uint64_t refused = 0;
  uint64_t refused_bytes = 0;
  bool paused = false;
  bool connected = false;
  bool io_error = false;
  FeedState state = FeedState::ended;           // of the newest instance
  std::optional<Key> last_key;                  // the newest instance's that has one
  std::optional<KafkaPartitionCounters> kafka;  // a Kafka partition: the newest instance's
};

// One fleet: its members summed, those retired included.
struct FleetSnapshot {
  std::string name;
  uint64_t connected = 0;  // members with a producer connected
  uint64_t known = 0;      // connected or lingering
  uint64_t joined = 0;
  uint64_t left = 0;
  uint64_t replaced = 0;
  uint64_t retired = 0;
  std::vector<std::pair<std::string, uint64_t>> refused;  // by reason
  uint64_t records_in = 0;
  uint64_t bytes_read = 0;
  uint64_t malformed = 0;
  uint64_t late = 0;
  uint64_t paused = 0;  // members paused (water marks or the budget)
  uint64_t idle = 0;    // members idle
  uint64_t queue_bytes = 0;
  // Key units from the last key of the connected member furthest behind
  // to that of the one furthest ahead; unset while none has a key (and for
  // string keys).
  std::optional<double> oldest_member_lag;
};

struct MetricsSnapshot {
  KeyType key_type = KeyType::integer;
  // Seconds per key unit when integer or number keys are times (key_unit).
  std::optional<double> key_unit_seconds;
  // Feeds the configuration names, and removed ones until everything they
  // queued is merged.
  std::vector<FeedSnapshot> feeds;
  std::vector<FleetSnapshot> fleets;
  uint64_t records_out = 0;
  uint64_t output_bytes = 0;
  std::optional<Key> frontier;
  // The feed the merge waits for while others have records ready, and for
  // how long it has held it.
  std::optional<std::string> holder;
  double holder_seconds = 0;
  uint64_t discarded_output_bytes = 0;
  uint64_t output_retained_bytes = 0;  // records and their index
  uint64_t output_retained_records = 0;
  uint64_t output_oldest_offset = 0;
  std::optional<Key> output_oldest_key;  // unset: nothing retained
  uint64_t output_readers = 0;
  std::vector<std::pair<std::string, SinkCounters>> sinks;  // by output name
  // By listener: "feed/NAME", "output/NAME".
  std::vector<std::pair<std::string, AcceptErrors>> accept_errors;
  // TLS, by listener or connector ("feed/NAME", "output/NAME", "metrics").
  std::vector<std::pair<std::string, TlsCounters>> tls;
  std::optional<DeadLetter::Counters> deadletter;  // when configured
};

}  // namespace chronomerge
