// What the metrics report of Kafka feeds and outputs: plain values.
#pragma once

#include <cstddef>
#include <cstdint>

namespace chronomerge {

// One partition feed.
struct KafkaPartitionCounters {
  int64_t next_offset = -1;     // after the last message taken; -1: none yet
  int64_t committable = -1;     // every message before it is done
  int64_t committed = -1;       // last commit confirmed by the broker
  int64_t high_watermark = -1;  // from the last fetch; -1: unknown yet
  bool at_end = false;          // caught up with the high watermark
  uint64_t errors = 0;          // the client's (shared by its partitions) and the partition's
  size_t pending = 0;           // messages taken, not yet done

  // Messages in the partition not yet taken; unknown (-1) until both ends
  // are known.
  int64_t lag() const {
    if (high_watermark < 0 || next_offset < 0) return -1;
    return high_watermark > next_offset ? high_watermark - next_offset : 0;
  }
};

// One kafka output.
struct KafkaProducerCounters {
  uint64_t produced = 0;    // records handed to the producer
  uint64_t delivered = 0;   // acknowledged by every in-sync replica
  uint64_t failed = 0;      // delivery reports with an error (the records are produced again)
  uint64_t queue_full = 0;  // times the producer's queue was full
  uint64_t errors = 0;      // client errors and failed deliveries reported
  size_t in_flight = 0;     // produced, not yet reported
  bool fatal = false;       // the producer failed for good
};

}  // namespace chronomerge
