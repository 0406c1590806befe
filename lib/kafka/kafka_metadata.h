// Listing a Kafka topic's partitions, for feeds with "partitions": "all".
//
// Blocking (a metadata request, bounded by `timeout_ms`): called before
// the event loop runs, or on libuv's thread pool.
#pragma once

#include <cstdint>
#include <string>

#include "config/config.h"

namespace chronomerge {

// Whether `config` has kafka feeds with "partitions": "all".
bool has_unresolved_kafka_feeds(const Config& config);

// Replaces each kafka feed with "partitions": "all" by one feed per
// partition the topic has now, in partition order. False, with `error`
// naming the feed, if a topic cannot be listed (brokers unreachable, no
// such topic).
bool resolve_kafka_partitions(Config& config, uint64_t timeout_ms, std::string& error);

}  // namespace chronomerge
