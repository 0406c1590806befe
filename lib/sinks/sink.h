// Sink: one configured output destination fed from the shared Output.
#pragma once

#include <cstdint>
#include <string>

#include "config/config.h"

namespace chronomerge {

struct SinkCounters {
  uint64_t bytes_out = 0;
  uint64_t clients = 0;        // connected now (servers)
  uint64_t clients_total = 0;  // accepted since start
  uint64_t disconnects = 0;    // dropped: slow, stalled, failed, refused
  uint64_t refused = 0;        // over max_clients
  size_t queue_bytes = 0;      // bytes pending for the slowest reader
  bool failed = false;         // stopped writing for good
  // File outputs (see FileWriter): a write failed and the sink retries.
  bool failing = false;          // cannot write now
  uint64_t blocked_ms = 0;       // time spent failing while holding the merge (block)
  uint64_t write_errors = 0;     // failed writes, retries included
  uint64_t dropped_records = 0;  // dropped while failing (on_error: skip)
  uint64_t dropped_bytes = 0;
};

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

  const OutputConfig& config() const { return config_; }
  const std::string& name() const { return config_.name; }

 protected:
  OutputConfig config_;
};

}  // namespace chronomerge
