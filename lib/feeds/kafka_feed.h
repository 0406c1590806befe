// KafkaFeed: one partition of a Kafka topic as a feed ("<feed>/<partition>").
//
// Each message value is one line, validated and keyed like any other (a
// trailing "\n" or "\r\n" is dropped; a value with a line break inside is
// malformed). The feed reads its partition's queue only while its own
// queue has room (pull), so a partition that runs ahead in time stays in
// librdkafka's bounded prefetch while the others are read.
//
// Idle only at the end of the partition: until librdkafka reports that the
// feed has caught up with the high watermark, the partition is fetching
// (or its leader is away) and holds the merge, so a backlog never turns
// late. At the end it may go idle after idle_timeout_ms like any live
// feed.
//
// Offsets, at least once: every message is entered in an OffsetLedger.
// Malformed lines, empty values and heartbeats are done at once; a record
// carries its offset through the merge (ParsedRecord::origin) and is done
// when the output log reports it written by every block output, or when
// it was dropped as late (settle()). The client stores and commits what
// the ledger allows.
//
// Loop thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "feeds/feed.h"
#include "kafka/kafka_consumer.h"
#include "kafka/kafka_counters.h"
#include "kafka/offset_ledger.h"
#include "log/log.h"

namespace chronomerge {

class KafkaFeed final : public Feed, private KafkaConsumer::Partition {
 public:
  KafkaFeed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes,
            std::shared_ptr<KafkaConsumer> client);
  ~KafkaFeed() override;

  bool start() override;
  void pause() override;
  void resume() override;
  void close() override;
  // Stops reading and ends; what was read is still merged and written,
  // and the partition stays assigned until then so that its offsets are
  // stored (the feed is busy() meanwhile). Unread messages are read again
  // by the next run.
  void drain() override;
  bool busy() const override { return !closed_ && ledger_.pending() > 0; }
  // Never idle until the end of the partition (see above).
  bool may_idle() const override { return at_end_; }

  // A record of this feed was written (or dropped as late): its origin.
  void settle(uint64_t origin) { ledger_.settle(static_cast<int64_t>(origin) - 1); }
  KafkaPartitionCounters kafka_counters() const;

 private:
  // KafkaConsumer::Partition
  void readable() override;
  void stray(rd_kafka_message_s* message) override;
  std::optional<int64_t> committable() const override { return ledger_.committable(); }

  // Takes one message over (and destroys it); false once the host wants
  // no more for now.
  bool take_message(rd_kafka_message_s* message);
  void set_at_end(bool at_end);

  std::shared_ptr<KafkaConsumer> client_;
  rd_kafka_queue_s* queue_ = nullptr;
  OffsetLedger ledger_;
  int64_t next_offset_ = -1;
  bool paused_ = false;
  bool closed_ = false;
  bool at_end_ = false;
  uint64_t errors_ = 0;
  log::RateLimiter errors_log_;
  size_t max_line_bytes_;
};

}  // namespace chronomerge
