#include "kafka/kafka_consumer.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>

#include "log/log.h"
#include "uv/uv_request.h"

namespace chronomerge {

namespace {

// The client goes on the thread pool to be closed: the last offsets of
// the partitions are committed and the client destroyed, which blocks, for
// up to close_timeout_ms. Destroyed on the loop thread afterwards.
struct ClosingClient {
  rd_kafka_t* rk;
  rd_kafka_topic_partition_list_t* offsets;  // may be null
  std::string name;
  bool committed = false;

  ClosingClient(rd_kafka_t* rk, rd_kafka_topic_partition_list_t* offsets, std::string name)
      : rk(rk), offsets(offsets), name(std::move(name)) {}
  ClosingClient(const ClosingClient&) = delete;
  ClosingClient& operator=(const ClosingClient&) = delete;

  void run() {
    if (offsets != nullptr) {
      rd_kafka_queue_t* results = rd_kafka_queue_new(rk);
      rd_kafka_commit_queue(rk, offsets, results, nullptr, nullptr);
      if (rd_kafka_event_t* event =
              rd_kafka_queue_poll(results, static_cast<int>(KafkaConsumer::close_timeout_ms))) {
        committed = rd_kafka_event_error(event) == RD_KAFKA_RESP_ERR_NO_ERROR;
        rd_kafka_event_destroy(event);
      }
      rd_kafka_queue_destroy(results);
    }
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    rk = nullptr;
  }

  ~ClosingClient() {
    if (offsets != nullptr) {
      if (!committed) {
        log::warn(
            "feed {}: the last offsets could not be committed within {} ms; a restart "
            "reads again from the offsets committed before",
            name, KafkaConsumer::close_timeout_ms);
      }
      rd_kafka_topic_partition_list_destroy(offsets);
    }
    log::debug("feed {}: Kafka client closed", name);
  }
};

int64_t start_offset(KafkaConfig::Start start) {
  switch (start) {
    case KafkaConfig::Start::committed:
      return RD_KAFKA_OFFSET_STORED;
    case KafkaConfig::Start::earliest:
      return RD_KAFKA_OFFSET_BEGINNING;
    case KafkaConfig::Start::latest:
      return RD_KAFKA_OFFSET_END;
  }
  return RD_KAFKA_OFFSET_STORED;
}

// The identity of a client: what the partition feeds of one configured
// feed share.
bool same_client(const FeedConfig& a, const FeedConfig& b) {
  if (a.kafka_source != b.kafka_source || !a.kafka || !b.kafka) return false;
  const KafkaConfig& x = *a.kafka;
  const KafkaConfig& y = *b.kafka;
  return x.brokers == y.brokers && x.topic == y.topic && x.group == y.group && x.start == y.start &&
         x.properties == y.properties && a.high_water_mark == b.high_water_mark;
}

}  // namespace

KafkaConsumer::KafkaConsumer(uv_loop_t* loop, const FeedConfig& config)
    : loop_(loop), config_(config) {}

std::shared_ptr<KafkaConsumer> KafkaConsumer::create(uv_loop_t* loop, const FeedConfig& config,
                                                     std::string& error) {
  std::shared_ptr<KafkaConsumer> consumer(new KafkaConsumer(loop, config));
  if (!consumer->open(error)) return nullptr;
  return consumer;
}

bool KafkaConsumer::serves(const FeedConfig& config) const {
  return same_client(config_, config);
}

bool KafkaConsumer::open(std::string& error) {
  const KafkaConfig& kafka = *config_.kafka;
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char text[512];
  // Defaults the properties may change, then the properties, then what
  // the delivery guarantee rests on (the config check refuses those in
  // the properties).
  const size_t prefetch_kib = std::max<size_t>(1, config_.high_water_mark.value_or(1 << 20) >> 10);
  std::vector<std::pair<std::string, std::string>> settings = {
      {"auto.offset.reset", "earliest"},
      {"auto.commit.interval.ms", "1000"},
      {"queued.max.messages.kbytes", std::to_string(prefetch_kib)},
      {"log.queue", "true"},
  };
  settings.insert(settings.end(), kafka.properties.begin(), kafka.properties.end());
  settings.insert(settings.end(), {{"bootstrap.servers", kafka.brokers},
                                   {"group.id", kafka.group},
                                   {"enable.auto.offset.store", "false"},
                                   {"enable.auto.commit", "true"},
                                   {"enable.partition.eof", "true"}});
  for (const auto& [name, value] : settings) {
    if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), text, sizeof text) !=
        RD_KAFKA_CONF_OK) {
      error = fmt::format("{}: {}", name, text);
      rd_kafka_conf_destroy(conf);
      return false;
    }
  }
  rd_kafka_conf_set_opaque(conf, this);
  rd_kafka_conf_set_error_cb(conf, [](rd_kafka_t*, int err, const char* reason, void* opaque) {
    static_cast<KafkaConsumer*>(opaque)->report(
        fmt::format("{}: {}", rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(err)), reason));
  });
  rd_kafka_conf_set_log_cb(
      conf, [](const rd_kafka_t* rk, int level, const char* facility, const char* message) {
        auto* self = static_cast<KafkaConsumer*>(rd_kafka_opaque(rk));
        if (level <= 4) {  // syslog warning and worse
          log::warn("feed {}: librdkafka {}: {}", self->name(), facility, message);
        } else {
          log::debug("feed {}: librdkafka {}: {}", self->name(), facility, message);
        }
      });
  rd_kafka_conf_set_offset_commit_cb(
      conf, [](rd_kafka_t*, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* offsets,
               void* opaque) {
        auto* self = static_cast<KafkaConsumer*>(opaque);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
          self->report(fmt::format("commit failed: {}", rd_kafka_err2str(err)));
        }
        if (offsets == nullptr) return;
        for (int i = 0; i < offsets->cnt; ++i) {
          const rd_kafka_topic_partition_t& p = offsets->elems[i];
          if (p.err == RD_KAFKA_RESP_ERR_NO_ERROR && p.offset >= 0) {
            self->committed_[p.partition] = p.offset;
          }
        }
      });
  rk_ = rd_kafka_new(RD_KAFKA_CONSUMER, conf, text, sizeof text);
  if (rk_ == nullptr) {
    error = text;
    rd_kafka_conf_destroy(conf);
    return false;
  }
  rd_kafka_set_log_queue(rk_, nullptr);  // logs come through the consumer queue
  rd_kafka_poll_set_consumer(rk_);
  consumer_queue_ = rd_kafka_queue_get_consumer(rk_);
  if (!wakeup_.open(
          loop_, [this] { serve(); }, error))
    return false;
  wakeup_.watch(consumer_queue_);
  uv_timer_init(loop_, store_timer_.get());
  store_timer_.initialized(this);
  uv_timer_start(store_timer_.get(), on_store_timer, store_interval_ms, store_interval_ms);
  // Nothing here keeps the loop alive: the feeds do.
  uv_unref(store_timer_.base());
  return true;
}

KafkaConsumer::~KafkaConsumer() {
  store_timer_.close();
  if (rk_ != nullptr) {
    // Partition feeds detach before they let go of the client; their last
    // offsets are committed while it closes.
    for (auto& [partition, attached] : partitions_) {
      KafkaWakeup::unwatch(attached.queue);
      rd_kafka_queue_destroy(attached.queue);
    }
    KafkaWakeup::unwatch(consumer_queue_);
    rd_kafka_queue_destroy(consumer_queue_);
    rd_kafka_topic_partition_list_t* offsets = nullptr;
    if (!final_offsets_.empty()) {
      offsets = rd_kafka_topic_partition_list_new(static_cast<int>(final_offsets_.size()));
      for (const auto& [partition, offset] : final_offsets_) {
        rd_kafka_topic_partition_list_add(offsets, config_.kafka->topic.c_str(), partition)
            ->offset = offset;
      }
    }
    run_on_pool(loop_, std::make_unique<ClosingClient>(rk_, offsets, config_.kafka_source));
  }
  wakeup_.close();
}

rd_kafka_queue_t* KafkaConsumer::attach(int32_t partition, Partition* reader, std::string& error) {
  const std::string& topic = config_.kafka->topic;
  rd_kafka_queue_t* queue = rd_kafka_queue_get_partition(rk_, topic.c_str(), partition);
  if (queue == nullptr) {
    error = fmt::format("no queue for partition {}", partition);
    return nullptr;
  }
  // Before the assignment: a queue the application forwarded (here:
  // nowhere) is left alone when fetching starts.
  rd_kafka_queue_forward(queue, nullptr);
  wakeup_.watch(queue);
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(list, topic.c_str(), partition)->offset =
      start_offset(config_.kafka->start);
  rd_kafka_error_t* failed = rd_kafka_incremental_assign(rk_, list);
  rd_kafka_topic_partition_list_destroy(list);
  if (failed != nullptr) {
    error = rd_kafka_error_string(failed);
    rd_kafka_error_destroy(failed);
    KafkaWakeup::unwatch(queue);
    rd_kafka_queue_destroy(queue);
    return nullptr;
  }
  partitions_[partition] = Attached{reader, queue, std::nullopt};
  return queue;
}

void KafkaConsumer::detach(int32_t partition) {
  auto it = partitions_.find(partition);
  if (it == partitions_.end()) return;
  const std::string& topic = config_.kafka->topic;
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(list, topic.c_str(), partition);
  if (std::optional<int64_t> offset = it->second.reader->committable()) {
    list->elems[0].offset = *offset;
    rd_kafka_commit(rk_, list, 1);  // asynchronous; again when the client closes
    final_offsets_[partition] = *offset;
  }
  if (rd_kafka_error_t* failed = rd_kafka_incremental_unassign(rk_, list)) {
    report(fmt::format("unassigning partition {}: {}", partition, rd_kafka_error_string(failed)));
    rd_kafka_error_destroy(failed);
  }
  rd_kafka_topic_partition_list_destroy(list);
  KafkaWakeup::unwatch(it->second.queue);
  rd_kafka_queue_destroy(it->second.queue);
  partitions_.erase(it);
}

void KafkaConsumer::wake() {
  wakeup_.wake();
}

KafkaConsumer::Watermarks KafkaConsumer::watermarks(int32_t partition) const {
  Watermarks marks;
  if (rd_kafka_get_watermark_offsets(rk_, config_.kafka->topic.c_str(), partition, &marks.low,
                                     &marks.high) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return Watermarks{};
  }
  return marks;
}

int64_t KafkaConsumer::committed(int32_t partition) const {
  auto it = committed_.find(partition);
  return it == committed_.end() ? -1 : it->second;
}

void KafkaConsumer::on_store_timer(uv_timer_t* timer) {
  if (auto* self = static_cast<KafkaConsumer*>(timer->data)) {
    self->store_offsets(false);
    self->serve();  // commit results, logs and errors, even while no message comes
  }
}

void KafkaConsumer::serve() {
  if (serving_) return;
  serving_ = true;
  wakeup_.drain();
  // Callbacks (errors, logs, commit results) and messages that reached the
  // consumer queue before their partition queue was split off.
  while (rd_kafka_message_t* message = rd_kafka_consumer_poll(rk_, 0)) {
    const bool for_partition = message->err == RD_KAFKA_RESP_ERR_NO_ERROR ||
                               message->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
    auto it = message->rkt != nullptr ? partitions_.find(message->partition) : partitions_.end();
    if (for_partition && it != partitions_.end()) {
      it->second.reader->stray(message);
      continue;
    }
    if (!for_partition) report(rd_kafka_message_errstr(message));
    rd_kafka_message_destroy(message);
  }
  // A reader never detaches inside readable(): the feeds close from the
  // pipeline's timers. The ids are copied all the same.
  std::vector<int32_t> ids;
  ids.reserve(partitions_.size());
  for (const auto& [partition, attached] : partitions_) ids.push_back(partition);
  for (int32_t partition : ids) {
    auto it = partitions_.find(partition);
    if (it != partitions_.end()) it->second.reader->readable();
  }
  serving_ = false;
}

void KafkaConsumer::store_offsets(bool commit_now) {
  rd_kafka_topic_partition_list_t* list = nullptr;
  for (auto& [partition, attached] : partitions_) {
    std::optional<int64_t> offset = attached.reader->committable();
    if (!offset || offset == attached.stored) continue;
    if (list == nullptr) list = rd_kafka_topic_partition_list_new(4);
    rd_kafka_topic_partition_list_add(list, config_.kafka->topic.c_str(), partition)->offset =
        *offset;
    attached.stored = offset;
  }
  if (list == nullptr) return;
  if (rd_kafka_resp_err_t err = rd_kafka_offsets_store(rk_, list);
      err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    report(fmt::format("storing offsets: {}", rd_kafka_err2str(err)));
  }
  if (commit_now) rd_kafka_commit(rk_, list, 1);
  rd_kafka_topic_partition_list_destroy(list);
}

void KafkaConsumer::report(std::string_view what) {
  ++errors_;
  errors_log_.log(uv_now(loop_), LogLevel::warn, {"feed", name()}, "Kafka client errors",
                  "feed {}: Kafka: {}", name(), what);
}

std::shared_ptr<KafkaConsumer> KafkaConsumers::acquire(uv_loop_t* loop, const FeedConfig& config,
                                                       std::string& error) {
  std::erase_if(clients_, [](const auto& weak) { return weak.expired(); });
  for (const auto& weak : clients_) {
    if (auto client = weak.lock(); client && client->serves(config)) return client;
  }
  auto client = KafkaConsumer::create(loop, config, error);
  if (client) clients_.push_back(client);
  return client;
}

}  // namespace chronomerge
