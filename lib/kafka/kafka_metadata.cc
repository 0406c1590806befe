#include "kafka/kafka_metadata.h"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <iterator>
#include <memory>
#include <optional>
#include <vector>

#include <fmt/format.h>

namespace chronomerge {

namespace {

// The partition ids of `feed`'s topic, sorted.
std::optional<std::vector<int32_t>> topic_partitions(const FeedConfig& feed, uint64_t timeout_ms,
                                                     std::string& error) {
  const KafkaConfig& kafka = *feed.kafka;
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char text[512];
  std::vector<std::pair<std::string, std::string>> settings = kafka.properties;
  settings.emplace_back("bootstrap.servers", kafka.brokers);
  settings.emplace_back("log_level", "3");
  for (const auto& [name, value] : settings) {
    if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), text, sizeof text) !=
        RD_KAFKA_CONF_OK) {
      error = fmt::format("{}: {}", name, text);
      rd_kafka_conf_destroy(conf);
      return std::nullopt;
    }
  }
  std::unique_ptr<rd_kafka_t, decltype(&rd_kafka_destroy)> rk(
      rd_kafka_new(RD_KAFKA_CONSUMER, conf, text, sizeof text), rd_kafka_destroy);
  if (!rk) {
    rd_kafka_conf_destroy(conf);
    error = text;
    return std::nullopt;
  }
  std::unique_ptr<rd_kafka_topic_t, decltype(&rd_kafka_topic_destroy)> topic(
      rd_kafka_topic_new(rk.get(), kafka.topic.c_str(), nullptr), rd_kafka_topic_destroy);
  const rd_kafka_metadata_t* metadata = nullptr;
  const rd_kafka_resp_err_t err =
      rd_kafka_metadata(rk.get(), 0, topic.get(), &metadata, static_cast<int>(timeout_ms));
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    error = rd_kafka_err2str(err);
    return std::nullopt;
  }
  std::optional<std::vector<int32_t>> partitions;
  for (int t = 0; t < metadata->topic_cnt; ++t) {
    const rd_kafka_metadata_topic_t& about = metadata->topics[t];
    if (kafka.topic != about.topic) continue;
    if (about.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      error = rd_kafka_err2str(about.err);
      break;
    }
    partitions.emplace();
    for (int p = 0; p < about.partition_cnt; ++p) partitions->push_back(about.partitions[p].id);
    std::sort(partitions->begin(), partitions->end());
  }
  rd_kafka_metadata_destroy(metadata);
  if (partitions && partitions->empty()) {
    error = "the topic has no partitions";
    partitions.reset();
  } else if (!partitions && error.empty()) {
    error = "no such topic";
  }
  return partitions;
}

}  // namespace

bool has_unresolved_kafka_feeds(const Config& config) {
  return std::any_of(config.feeds.begin(), config.feeds.end(), [](const FeedConfig& feed) {
    return feed.kafka && feed.kafka->all_partitions;
  });
}

bool resolve_kafka_partitions(Config& config, uint64_t timeout_ms, std::string& error) {
  std::vector<FeedConfig> feeds;
  for (FeedConfig& feed : config.feeds) {
    if (!feed.kafka || !feed.kafka->all_partitions) {
      feeds.push_back(std::move(feed));
      continue;
    }
    std::string why;
    auto partitions = topic_partitions(feed, timeout_ms, why);
    if (!partitions) {
      error = fmt::format("feed {}: cannot list the partitions of {} at {}: {}", feed.name,
                          feed.kafka->topic, feed.kafka->brokers, why);
      return false;
    }
    std::vector<FeedConfig> expanded = expand_kafka_feed(feed, *partitions);
    std::move(expanded.begin(), expanded.end(), std::back_inserter(feeds));
  }
  config.feeds = std::move(feeds);
  return true;
}

}  // namespace chronomerge
