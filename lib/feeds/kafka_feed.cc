#include "feeds/kafka_feed.h"

#include <librdkafka/rdkafka.h>

#include "log/log.h"

namespace chronomerge {

KafkaFeed::KafkaFeed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes,
                     std::shared_ptr<KafkaConsumer> client)
    : Feed(host, id, std::move(config), max_line_bytes),
      client_(std::move(client)),
      max_line_bytes_(max_line_bytes) {}

KafkaFeed::~KafkaFeed() {
  close();
}

bool KafkaFeed::start() {
  if (!client_) return false;  // the pipeline logged why
  std::string error;
  queue_ = client_->attach(config_.kafka->partition, this, error);
  if (queue_ == nullptr) {
    log::error("feed {}: cannot read partition {} of {}: {}", name(), config_.kafka->partition,
               config_.kafka->topic, error);
    return false;
  }
  set_connected(true);
  log::info("feed {}: reading {} partition {} from {} ({}, group {})", name(), config_.kafka->topic,
            config_.kafka->partition, config_.kafka->brokers, to_string(config_.kafka->start),
            config_.kafka->group);
  client_->wake();  // messages may be waiting already
  return true;
}

void KafkaFeed::pause() {
  paused_ = true;
}

void KafkaFeed::resume() {
  if (!paused_) return;
  paused_ = false;
  // The queue did not go from empty to non-empty while paused, so no
  // event will come: ask for a turn.
  if (queue_ != nullptr) client_->wake();
}

void KafkaFeed::close() {
  if (closed_) return;
  closed_ = true;
  set_connected(false);
  if (queue_ != nullptr) client_->detach(config_.kafka->partition);
  queue_ = nullptr;
  // The last partition to let go closes the client (its handles, and the
  // final commit on the thread pool).
  client_.reset();
}

void KafkaFeed::drain() {
  paused_ = true;
  if (!ended_) {
    ended_ = true;
    host_.feed_ended(id_);
  }
}

void KafkaFeed::readable() {
  while (!paused_ && !closed_ && !ended_) {
    rd_kafka_message_t* message = rd_kafka_consume_queue(queue_, 0);
    if (message == nullptr) return;
    if (!take_message(message)) return;
  }
}

void KafkaFeed::stray(rd_kafka_message_t* message) {
  if (closed_ || ended_) {
    rd_kafka_message_destroy(message);
    return;
  }
  take_message(message);  // queued even while paused: it is here already
}

bool KafkaFeed::take_message(rd_kafka_message_t* message) {
  if (message->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
    rd_kafka_message_destroy(message);
    set_at_end(true);
    return true;
  }
  if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    ++errors_;
    errors_log_.log(host_.now(), LogLevel::warn, {"feed", name()}, "Kafka partition errors",
                    "feed {}: Kafka: {}", name(), rd_kafka_message_errstr(message));
    rd_kafka_message_destroy(message);
    return true;
  }
  set_at_end(false);
  const int64_t offset = message->offset;
  std::string_view line(static_cast<const char*>(message->payload),
                        message->payload != nullptr ? message->len : 0);
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  counters_.bytes_read += message->len;
  next_offset_ = offset + 1;
  bool more = true;
  if (line.empty()) {
    ledger_.taken(offset, true);  // an empty line, skipped as any other
  } else if (line.size() > max_line_bytes_) {
    ledger_.taken(offset, true);
    reject(LineError::too_long, line.substr(0, 256));
  } else if (line.find('\n') != std::string_view::npos) {
    // One message, one line: a line break inside would split the record
    // in the merged stream.
    ledger_.taken(offset, true);
    reject(LineError::not_json, line);
  } else {
    ParsedRecord parsed;
    if (auto error = parser().parse(line, parsed)) {
      ledger_.taken(offset, true);
      reject(*error, line);
    } else {
      ledger_.taken(offset, parsed.heartbeat);
      parsed.origin = static_cast<uint64_t>(offset) + 1;
      more = host_.queue_record(id_, line, std::move(parsed));
    }
  }
  rd_kafka_message_destroy(message);
  if (!more) paused_ = true;
  return more;
}

void KafkaFeed::set_at_end(bool at_end) {
  if (at_end == at_end_) return;
  at_end_ = at_end;
  host_.may_idle(id_, at_end);
}

KafkaPartitionCounters KafkaFeed::kafka_counters() const {
  KafkaPartitionCounters counters;
  counters.next_offset = next_offset_;
  counters.committable = ledger_.committable().value_or(-1);
  if (client_) {
    counters.committed = client_->committed(config_.kafka->partition);
    counters.high_watermark = client_->watermarks(config_.kafka->partition).high;
    counters.errors = client_->errors();
  }
  counters.at_end = at_end_;
  counters.errors += errors_;
  counters.pending = ledger_.pending();
  return counters;
}

}  // namespace chronomerge
