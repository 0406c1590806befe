// Sink: one configured output destination fed from the shared Output.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.h"
#include "kafka/kafka_counters.h"

namespace chronomerge {

// Why a client of a server output went away before the end of the stream.
enum class DisconnectReason {
  too_slow,       // disconnect policy: more than max_buffer behind
  out_of_window,  // its cursor left the retained output log
  stalled,        // block policy: no progress for stall_timeout_ms
  write_failed,   // a write failed for another reason
  peer_closed,    // the client closed or reset the connection
  gap,            // its resume request asked for what is no longer retained
  bad_request,    // its resume request was malformed
  hello_timeout,  // it sent no resume request within hello_timeout_ms
  token,          // its request carried no valid token (tokens_sha256)
};
inline constexpr size_t disconnect_reason_count = 9;
std::string_view to_string(DisconnectReason reason);

struct SinkCounters {
  uint64_t bytes_out = 0;
  uint64_t clients = 0;        // connected now (servers)
  uint64_t clients_total = 0;  // accepted since start
  uint64_t disconnects = 0;    // went away before the end, every reason
  std::array<uint64_t, disconnect_reason_count> disconnects_by{};  // by DisconnectReason
  uint64_t refused = 0;                                            // over max_clients
  size_t queue_bytes = 0;  // bytes pending for the slowest reader
  size_t lag_sum = 0;      // bytes pending, summed over the readers
  uint64_t resumes = 0;    // resume requests served
  uint64_t gaps = 0;       // resume requests for what is no longer retained
  uint64_t held_ms = 0;    // time its block readers held the merge
  bool server = false;     // has clients (tcp, unix, http listeners)
  bool failed = false;     // stopped writing for good
  // File outputs (see FileWriter): a write failed and the sink retries.
  bool failing = false;          // cannot write now
  uint64_t blocked_ms = 0;       // time spent failing while holding the merge (block)
  uint64_t write_errors = 0;     // failed writes, retries included
  uint64_t dropped_records = 0;  // dropped while failing (on_error: skip)
  uint64_t dropped_bytes = 0;
  std::optional<KafkaProducerCounters> kafka;  // kafka outputs
};

inline std::string_view to_string(DisconnectReason reason) {
  constexpr std::array<std::string_view, disconnect_reason_count> names = {
      "too_slow", "out_of_window", "stalled",       "write_failed", "peer_closed",
      "gap",      "bad_request",   "hello_timeout", "token"};
  return names[static_cast<size_t>(reason)];
}

class Sink {
 public:
  explicit Sink(OutputConfig config) : config_(std::move(config)) {}
  virtual ~Sink() = default;
  Sink(const Sink&) = delete;
  Sink& operator=(const Sink&) = delete;

  // Opens files, binds listeners. False (after logging why) on failure.
  virtual bool start() = 0;
  // Stops at once; no callbacks afterwards.
  virtual void close() = 0;
  // Everything pushed has been written and the sink has closed itself
  // after the Output ended (servers: all clients flushed).
  virtual bool finished() const = 0;
  virtual SinkCounters counters() const = 0;
  // SIGUSR1: file sinks reopen their path (and retry, as below).
  virtual void reopen() {}
  // SIGHUP: a sink that cannot write at the moment tries again now rather
  // than at its next backoff.
  virtual void retry() {}
  // SIGHUP: TLS material is read again (see Feed::reload_tls()).
  virtual void reload_tls() {}
  // SIGHUP: whether `next` (the same output, changed) can be applied in
  // place by update(); otherwise the output restarts, which closes every
  // client.
  virtual bool updatable_to(const OutputConfig& /*next*/) const { return false; }
  virtual void update(const OutputConfig& next) { config_ = next; }

  const OutputConfig& config() const { return config_; }
  const std::string& name() const { return config_.name; }

 protected:
  OutputConfig config_;
};

}  // namespace chronomerge
