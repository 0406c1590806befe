#include "sinks/kafka_sink.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <cstring>

#include "log/log.h"
#include "uv/uv_request.h"

namespace chronomerge {

namespace {

using Link = KafkaSink::Link;

// The producer goes on the thread pool to be closed: what is in flight is
// flushed and the producer destroyed, which blocks, for up to
// flush_timeout_ms. Destroyed on the loop thread afterwards.
struct ClosingProducer {
  rd_kafka_t* rk;
  std::unique_ptr<Link> link;  // cleared: callbacks run into nothing
  std::string name;
  int remaining = 0;

  ClosingProducer(rd_kafka_t* rk, std::unique_ptr<Link> link, std::string name)
      : rk(rk), link(std::move(link)), name(std::move(name)) {}
  ClosingProducer(const ClosingProducer&) = delete;
  ClosingProducer& operator=(const ClosingProducer&) = delete;

  void run() {
    rd_kafka_flush(rk, static_cast<int>(KafkaSink::flush_timeout_ms));
    remaining = rd_kafka_outq_len(rk);
    rd_kafka_destroy(rk);
  }

  ~ClosingProducer() {
    if (remaining > 0) {
      log::warn("output {}: {} messages still unconfirmed when the producer closed", name,
                remaining);
    }
  }
};

}  // namespace

KafkaSink::KafkaSink(uv_loop_t* loop, OutputLog& output, OutputConfig config,
                     std::function<void()> changed)
    : Sink(std::move(config)), loop_(loop), output_(output), changed_(std::move(changed)) {
  if (!config_.kafka->key_pointer.empty()) {
    KeySpec spec;
    spec.path = config_.kafka->key_pointer;
    spec.type = KeyType::string;
    key_parser_.emplace(spec);
  }
}

KafkaSink::~KafkaSink() {
  close();
}

bool KafkaSink::start() {
  const KafkaConfig& kafka = *config_.kafka;
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char text[512];
  const size_t queue_kib =
      std::max<size_t>(1024, config_.max_buffer.value_or(output_.high_water_mark()) >> 10);
  std::vector<std::pair<std::string, std::string>> settings = {
      {"linger.ms", "5"},
      {"queue.buffering.max.kbytes", std::to_string(queue_kib)},
      {"log.queue", "true"},
  };
  settings.insert(settings.end(), kafka.properties.begin(), kafka.properties.end());
  settings.insert(
      settings.end(),
      {{"bootstrap.servers", kafka.brokers}, {"enable.idempotence", "true"}, {"acks", "all"}});
  for (const auto& [name, value] : settings) {
    if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), text, sizeof text) !=
        RD_KAFKA_CONF_OK) {
      log::error("output {}: {}: {}", this->name(), name, text);
      rd_kafka_conf_destroy(conf);
      return false;
    }
  }
  auto link = std::make_unique<Link>(Link{this});
  rd_kafka_conf_set_opaque(conf, link.get());
  rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
  rd_kafka_conf_set_error_cb(conf, [](rd_kafka_t* rk, int err, const char* reason, void* opaque) {
    KafkaSink* self = static_cast<Link*>(opaque)->sink;
    if (self == nullptr) return;
    const auto code = static_cast<rd_kafka_resp_err_t>(err);
    if (code == RD_KAFKA_RESP_ERR__FATAL) {
      char fatal[512];
      rd_kafka_fatal_error(rk, fatal, sizeof fatal);
      self->fail(fatal);
      return;
    }
    self->fail_soft(fmt::format("{}: {}", rd_kafka_err2name(code), reason));
  });
  rd_kafka_conf_set_log_cb(
      conf, [](const rd_kafka_t* rk, int level, const char* facility, const char* message) {
        KafkaSink* self = static_cast<Link*>(rd_kafka_opaque(rk))->sink;
        if (self == nullptr) return;
        if (level <= 4) {
          log::warn("output {}: librdkafka {}: {}", self->name(), facility, message);
        } else {
          log::debug("output {}: librdkafka {}: {}", self->name(), facility, message);
        }
      });
  rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, text, sizeof text);
  if (rk_ == nullptr) {
    log::error("output {}: cannot create a Kafka producer: {}", name(), text);
    rd_kafka_conf_destroy(conf);
    return false;
  }
  link_ = std::move(link);
  rd_kafka_set_log_queue(rk_, nullptr);
  topic_ = rd_kafka_topic_new(rk_, kafka.topic.c_str(), nullptr);
  std::string error;
  if (!wakeup_.open(
          loop_, [this] { serve(); }, error)) {
    log::error("output {}: {}", name(), error);
    return false;
  }
  rd_kafka_queue_t* main_queue = rd_kafka_queue_get_main(rk_);
  wakeup_.watch(main_queue);
  rd_kafka_queue_destroy(main_queue);
  uv_timer_init(loop_, retry_timer_.get());
  retry_timer_.initialized(this);
  cursor_ = std::make_unique<OutputCursor>(
      output_,
      OutputLog::ConsumerOptions::lossless(config_.max_buffer.value_or(SIZE_MAX),
                                           config_.heartbeats.has_value()),
      [this] {
        produce();
        check_finished();
      });
  log::info("output {}: producing to {} partition {} at {}", name(), kafka.topic, kafka.partition,
            kafka.brokers);
  return true;
}

void KafkaSink::close() {
  cursor_.reset();
  retry_timer_.close();
  if (rk_ != nullptr) {
    if (topic_ != nullptr) rd_kafka_topic_destroy(topic_);
    rd_kafka_queue_t* main_queue = rd_kafka_queue_get_main(rk_);
    KafkaWakeup::unwatch(main_queue);
    rd_kafka_queue_destroy(main_queue);
    link_->sink = nullptr;  // from now on callbacks run on the pool, into nothing
    run_on_pool(loop_, std::make_unique<ClosingProducer>(rk_, std::move(link_), name()));
    rk_ = nullptr;
    topic_ = nullptr;
  }
  wakeup_.close();
}

void KafkaSink::serve() {
  if (serving_ || rk_ == nullptr) return;
  serving_ = true;
  rd_kafka_poll(rk_, 0);  // delivery reports, errors, logs
  serving_ = false;
  if (rk_ == nullptr) return;
  if (cursor_ && confirmed_bytes_ > consumed_bytes_) {
    const uint64_t bytes = confirmed_bytes_ - consumed_bytes_;
    consumed_bytes_ = confirmed_bytes_;
    cursor_->consume(bytes);  // may produce() through the demand path
  }
  if (failing_ && kafka_.in_flight == 0 && !uv_is_active(retry_timer_.base())) {
    // Everything reported: start again after the last record confirmed.
    uv_timer_start(
        retry_timer_.get(),
        [](uv_timer_t* timer) {
          auto* self = static_cast<KafkaSink*>(timer->data);
          if (self == nullptr) return;
          self->failing_ = false;
          self->produced_bytes_ = self->consumed_bytes_;
          self->confirm_limit_ = UINT64_MAX;
          self->produce();
        },
        retry_delay_ms, 0);
  }
  produce();
  check_finished();
}

void KafkaSink::on_delivery(rd_kafka_t* /*rk*/, const rd_kafka_message_t* message, void* opaque) {
  if (KafkaSink* self = static_cast<Link*>(opaque)->sink) self->delivered(message);
}

void KafkaSink::delivered(const rd_kafka_message_t* message) {
  --kafka_.in_flight;
  const auto end = reinterpret_cast<uintptr_t>(message->_private);
  const uint64_t start = end - message->len - 1;
  if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    ++kafka_.failed;
    confirm_limit_ = std::min(confirm_limit_, start);
    if (!failing_) {
      failing_ = true;
      fail_soft(
          fmt::format("delivery failed: {}; producing again from the first record not "
                      "confirmed",
                      rd_kafka_err2str(message->err)));
    }
    return;
  }
  ++kafka_.delivered;
  bytes_out_ += message->len + 1;
  confirmed_bytes_ = std::max(confirmed_bytes_, std::min<uint64_t>(end, confirm_limit_));
}

void KafkaSink::produce() {
  if (!cursor_ || rk_ == nullptr || failing_ || failed_) return;
  while (true) {
    slices_.clear();
    const uint64_t skip = produced_bytes_ - consumed_bytes_;
    const size_t peeked = cursor_->peek(slices_, skip + max_peek_bytes);
    if (peeked <= skip) break;
    uint64_t at = consumed_bytes_;
    bool stop = false;
    for (const OutputLog::Slice& slice : slices_) {
      std::string_view bytes = slice.bytes;
      if (at + bytes.size() <= produced_bytes_) {
        at += bytes.size();
        continue;
      }
      if (at < produced_bytes_) {
        bytes.remove_prefix(produced_bytes_ - at);
        at = produced_bytes_;
      }
      while (!bytes.empty()) {
        const size_t newline = bytes.find('\n');
        const std::string_view record = bytes.substr(0, newline);
        const uint64_t end = at + record.size() + 1;
        std::string key;
        ParsedRecord parsed;
        if (key_parser_ && !key_parser_->parse(record, parsed)) key = std::move(parsed.key.text);
        const rd_kafka_resp_err_t err = rd_kafka_producev(
            rk_, RD_KAFKA_V_RKT(topic_), RD_KAFKA_V_PARTITION(config_.kafka->partition),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_VALUE(const_cast<char*>(record.data()), record.size()),
            RD_KAFKA_V_KEY(key.empty() ? nullptr : key.data(), key.size()),
            RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<uintptr_t>(end))),
            RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
          ++kafka_.queue_full;  // delivery reports make room and wake serve()
          stop = true;
          break;
        }
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
          fail(fmt::format("cannot produce: {}", rd_kafka_err2str(err)));
          return;
        }
        ++kafka_.produced;
        ++kafka_.in_flight;
        produced_bytes_ = at = end;
        bytes.remove_prefix(std::min(bytes.size(), record.size() + 1));
      }
      if (stop) break;
    }
    if (stop) break;
  }
  // Delivery reports are served by serve() alone: it consumes what they
  // confirmed, which is what lets the merge go on.
  slices_.clear();
}

void KafkaSink::check_finished() {
  if (finished_ || !cursor_ || !cursor_->at_end() || kafka_.in_flight > 0) return;
  finished_ = true;
  log::info("output {}: every record confirmed ({} messages)", name(),
            log::group_digits(kafka_.delivered));
  cursor_.reset();
  changed_();
}

void KafkaSink::fail_soft(const std::string& why) {
  ++kafka_.errors;
  errors_log_.log(uv_now(loop_), LogLevel::warn, {"output", name()}, "Kafka producer errors",
                  "output {}: Kafka: {}", name(), why);
}

void KafkaSink::fail(const std::string& why) {
  if (failed_) return;
  failed_ = true;
  kafka_.fatal = true;
  log::error("output {}: the Kafka producer failed for good: {}; the output stops", name(), why);
  cursor_.reset();  // no longer holds the merge
  changed_();
}

SinkCounters KafkaSink::counters() const {
  SinkCounters counters;
  counters.bytes_out = bytes_out_;
  counters.queue_bytes = cursor_ ? cursor_->lag() : 0;
  counters.lag_sum = counters.queue_bytes;
  counters.held_ms = cursor_ ? cursor_->held_ms() : 0;
  counters.failed = failed_;
  counters.failing = failing_;
  counters.write_errors = kafka_.failed;
  counters.kafka = kafka_;
  return counters;
}

}  // namespace chronomerge
