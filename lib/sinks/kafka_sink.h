// KafkaSink: the merged stream appended to one partition of a Kafka topic
// (partition 0 by default: one total order needs one partition).
//
// A block reader of the output log, lossless: each record becomes one
// message (its bytes without the '\n'), produced by an idempotent producer
// (enable.idempotence, acks=all), so retries neither reorder nor duplicate.
// The cursor moves only when a delivery report confirms a record, which is
// what makes the record "written" for the offsets a Kafka feed commits and
// what holds the merge when the topic cannot keep up. When the producer's
// queue is full (RD_KAFKA_RESP_ERR__QUEUE_FULL) producing stops until
// delivery reports drain it. A failed delivery (the message timed out,
// the broker refused it) is counted and logged; once nothing is in
// flight, production starts again from the first record not confirmed,
// after a second (at least once: records after it may appear twice).
//
// librdkafka reports on its main queue, which writes a byte to a pipe
// when it becomes non-empty; one uv_poll_t on the pipe serves it. On close
// the producer is flushed and destroyed on libuv's thread pool.
//
// Loop thread only.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kafka/kafka_wakeup.h"
#include "log/log.h"
#include "output/output_cursor.h"
#include "output/output_log.h"
#include "record/record_parser.h"
#include "sinks/sink.h"
#include "uv/uv_handle.h"

struct rd_kafka_s;
struct rd_kafka_topic_s;
struct rd_kafka_message_s;

namespace chronomerge {

class KafkaSink final : public Sink {
 public:
  static constexpr size_t max_peek_bytes = 1 << 20;
  static constexpr uint64_t retry_delay_ms = 1000;
  static constexpr uint64_t flush_timeout_ms = 5000;

  // `changed` runs when the sink finishes or fails (from a loop callback).
  KafkaSink(uv_loop_t* loop, OutputLog& output, OutputConfig config, std::function<void()> changed);
  ~KafkaSink() override;
  bool start() override;
  void close() override;
  bool finished() const override { return finished_; }
  SinkCounters counters() const override;

  // librdkafka's opaque: reaches the sink while it is open, nothing once
  // the producer has gone to the thread pool to be flushed.
  struct Link {
    KafkaSink* sink;
  };

 private:
  static void on_delivery(rd_kafka_s* rk, const rd_kafka_message_s* message, void* opaque);
  // Serves delivery reports, logs and errors, then produces what it can.
  void serve();
  void produce();
  void delivered(const rd_kafka_message_s* message);
  void check_finished();
  // A failure it recovers from (counted, logged rate-limited), and one it
  // does not (the output stops).
  void fail_soft(const std::string& why);
  void fail(const std::string& why);

  uv_loop_t* loop_;
  OutputLog& output_;
  std::function<void()> changed_;
  std::unique_ptr<OutputCursor> cursor_;
  std::optional<RecordParser> key_parser_;  // "key": the message key's field
  rd_kafka_s* rk_ = nullptr;
  std::unique_ptr<Link> link_;
  rd_kafka_topic_s* topic_ = nullptr;
  KafkaWakeup wakeup_;
  UvHandle<uv_timer_t> retry_timer_;
  std::vector<OutputLog::Slice> slices_;
  // Bytes of the stream since this sink subscribed: consumed (the cursor
  // moved past them), confirmed by delivery reports, produced (in flight
  // or confirmed). A message carries the position where its record ends.
  uint64_t consumed_bytes_ = 0;
  uint64_t confirmed_bytes_ = 0;
  uint64_t produced_bytes_ = 0;
  // After a failed delivery: where the first failed record starts (no
  // confirmation moves past it).
  uint64_t confirm_limit_ = UINT64_MAX;
  KafkaProducerCounters kafka_;
  uint64_t bytes_out_ = 0;
  bool failing_ = false;  // a delivery failed: waiting for the rest to report
  bool serving_ = false;
  bool finished_ = false;
  bool failed_ = false;
  log::RateLimiter errors_log_;
};

}  // namespace chronomerge
