// KafkaConsumer: the librdkafka consumer that the partition feeds of one
// configured kafka feed share, woken through the event loop.
//
// librdkafka does its network I/O on threads of its own. Each partition
// has its own queue (rd_kafka_queue_get_partition, no longer forwarded to
// the consumer queue), so a feed reads its partition only while its
// chronomerge queue has room, and messages it has not read stay in
// librdkafka's prefetch, bounded by queued.max.messages.kbytes. Every
// queue writes a byte to one non-blocking pipe when it goes from empty to
// non-empty; one uv_poll_t on the pipe tells the partitions to read. Since
// that happens only on empty -> non-empty, a partition that stopped with
// messages left asks for a wake-up when it resumes (wake()).
//
// Offsets: a partition feed reports which offset it may commit
// (Partition::committable()); a timer stores those offsets
// (rd_kafka_offsets_store) and librdkafka commits what is stored every
// second. The last consumer reference gone, the client is closed on
// libuv's thread pool: the stored offsets are committed (for at most
// close_timeout_ms), then the client is destroyed. Nothing here blocks the
// loop.
//
// Loop thread only.
#pragma once

#include <uv.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "kafka/kafka_wakeup.h"
#include "log/log.h"
#include "uv/uv_handle.h"

struct rd_kafka_s;
struct rd_kafka_queue_s;
struct rd_kafka_message_s;

namespace chronomerge {

class KafkaConsumer {
 public:
  static constexpr uint64_t store_interval_ms = 200;
  static constexpr uint64_t close_timeout_ms = 5000;

  // What a partition feed does for the consumer.
  class Partition {
   public:
    virtual ~Partition() = default;
    // Its queue may hold messages: read while there is room.
    virtual void readable() = 0;
    // A message that reached the consumer queue instead (before the
    // partition queue was split off); the partition takes it over.
    virtual void stray(rd_kafka_message_s* message) = 0;
    // The offset it may commit, if any.
    virtual std::optional<int64_t> committable() const = 0;
  };

  // A client for `config` (a generated partition feed's configuration:
  // brokers, topic, group, start, properties); nullptr with `error` set if
  // librdkafka refuses it.
  static std::shared_ptr<KafkaConsumer> create(uv_loop_t* loop, const FeedConfig& config,
                                               std::string& error);
  ~KafkaConsumer();
  KafkaConsumer(const KafkaConsumer&) = delete;
  KafkaConsumer& operator=(const KafkaConsumer&) = delete;

  // Whether `config` is read by this client (same source, brokers, topic,
  // group, start and properties).
  bool serves(const FeedConfig& config) const;

  // Starts fetching `partition` at the configured start; returns its queue
  // (owned here), or nullptr with `error` set.
  rd_kafka_queue_s* attach(int32_t partition, Partition* reader, std::string& error);
  // Stops fetching `partition`: its committable offset is stored and
  // committed first. Its queue is gone afterwards.
  void detach(int32_t partition);
  // Runs readable() of every partition from the next loop turn.
  void wake();

  // What librdkafka knows of `partition`: its low and high watermarks
  // (from the last fetch), and the offset last committed (-1: none yet).
  struct Watermarks {
    int64_t low = -1;
    int64_t high = -1;
  };
  Watermarks watermarks(int32_t partition) const;
  int64_t committed(int32_t partition) const;
  uint64_t errors() const { return errors_; }  // client and partition errors reported
  const std::string& topic() const { return config_.kafka->topic; }
  const std::string& name() const { return config_.kafka_source; }

 private:
  KafkaConsumer(uv_loop_t* loop, const FeedConfig& config);
  bool open(std::string& error);
  static void on_store_timer(uv_timer_t* timer);
  void serve();
  void store_offsets(bool commit_now);
  void report(std::string_view what);

  struct Attached {
    Partition* reader;
    rd_kafka_queue_s* queue;
    std::optional<int64_t> stored;
  };

  uv_loop_t* loop_;
  FeedConfig config_;
  rd_kafka_s* rk_ = nullptr;
  rd_kafka_queue_s* consumer_queue_ = nullptr;
  KafkaWakeup wakeup_;
  UvHandle<uv_timer_t> store_timer_;
  std::map<int32_t, Attached> partitions_;
  std::map<int32_t, int64_t> committed_;
  // The last committable offset of each partition detached, committed
  // (again) when the client closes.
  std::map<int32_t, int64_t> final_offsets_;
  uint64_t errors_ = 0;
  log::RateLimiter errors_log_;
  bool serving_ = false;
};

// The clients of a pipeline: partition feeds of one configured feed share
// one; a client lives while a feed holds it.
class KafkaConsumers {
 public:
  std::shared_ptr<KafkaConsumer> acquire(uv_loop_t* loop, const FeedConfig& config,
                                         std::string& error);

 private:
  std::vector<std::weak_ptr<KafkaConsumer>> clients_;
};

}  // namespace chronomerge
