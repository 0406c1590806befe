// Pipeline::metrics_snapshot(): the pipeline's parts, summed by name into
// plain values for the metrics.
#include <algorithm>

#include "daemon/pipeline.h"
#include "feeds/listen_feed.h"
#include "sinks/dead_letter.h"
#include "sinks/server_sink.h"

namespace chronomerge {
namespace {

FeedSnapshot& by_name(std::vector<FeedSnapshot>& feeds, std::string_view name) {
  auto it = std::find_if(feeds.begin(), feeds.end(),
                         [&](const FeedSnapshot& f) { return f.name == name; });
  if (it != feeds.end()) return *it;
  feeds.push_back(FeedSnapshot{});
  feeds.back().name = std::string(name);
  return feeds.back();
}

void add_counts(FeedSnapshot& t, const FeedStats& stats, const FeedCounters& counters) {
  t.records_in += stats.records_in;
  t.records_out += stats.records_out;
  t.late += stats.late;
  t.heartbeats += stats.heartbeats;
  t.pauses += stats.pauses;
  t.bytes_read += counters.bytes_read;
  for (size_t i = 0; i < t.malformed_by.size(); ++i) t.malformed_by[i] += counters.malformed_by[i];
  t.partial_discarded += counters.partial_discarded;
  t.discarded_bytes += counters.discarded_bytes;
  t.refused += counters.refused;
  t.refused_bytes += counters.refused_bytes;
  t.connections += counters.connections;
}

}  // namespace

MetricsSnapshot Pipeline::metrics_snapshot() const {
  MetricsSnapshot s;
  const uint64_t now = uv_now(loop_);
  s.key_type = config_.key_type;

  // Live instances, in id order: where a name has two (a restart by
  // reload), the newest comes last and its state wins.
  std::vector<std::string_view> reported;
  for (const auto& feed : feeds_) {
    if (!feed) continue;
    const FeedId id = feed->id();
    const FeedStats& stats = merger_.stats(id);
    FeedCounters counters = feed->counters();
    counters.paused_ms = counters.paused_ms_at(now, merger_.paused(id));
    FeedSnapshot& t = by_name(s.feeds, feed->name());
    add_counts(t, stats, counters);
    t.paused_ms += counters.paused_ms;
    t.queue_bytes += merger_.queue_bytes(id);
    t.listens = t.listens || dynamic_cast<const ListenFeed*>(feed.get()) != nullptr;
    t.paused = t.paused || merger_.paused(id);
    t.connected = t.connected || counters.connected;
    t.io_error = t.io_error || counters.io_error;
    t.state = merger_.state(id);
    if (stats.last_key) t.last_key = stats.last_key;
    if (t.state != FeedState::ended) reported.push_back(feed->name());
  }
  // Retired instances (removed, drained and freed) still count: counters
  // never go backwards.
  for (const auto& [name, retired] : retired_) {
    FeedSnapshot& t = by_name(s.feeds, name);
    const bool had_key = t.last_key.has_value();
    add_counts(t, retired.stats, retired.counters);
    t.paused_ms += retired.counters.paused_ms;
    if (!had_key && retired.stats.last_key) t.last_key = retired.stats.last_key;
  }
  // Ended feeds stay visible while the configuration names them.
  for (const FeedConfig& feed : config_.feeds) reported.push_back(feed.name);
  std::erase_if(s.feeds, [&](const FeedSnapshot& t) {
    return std::find(reported.begin(), reported.end(), t.name) == reported.end();
  });

  s.records_out = merger_.records_out();
  s.output_bytes = output_.head();
  s.frontier = merger_.frontier();
  if (std::optional<FeedId> holder = merger_.holder(); holder && feeds_[*holder]) {
    s.holder = feeds_[*holder]->name();
    s.holder_seconds = static_cast<double>(now - merger_.held_since()) / 1000.0;
  }
  s.discarded_output_bytes = discarded_output_bytes_;
  s.output_retained_bytes = output_.retained_bytes();
  s.output_retained_records = output_.retained_records();
  s.output_oldest_offset = output_.oldest_offset();
  s.output_oldest_key = output_.oldest_key();
  s.output_readers = output_.consumer_count();

  // Accept errors by listener; a feed restarted by reload has two
  // instances for a moment: one series.
  std::map<std::string, AcceptErrors> by_feed;
  for (const auto& feed : feeds_) {
    if (const auto* listen = dynamic_cast<const ListenFeed*>(feed.get())) {
      for (const auto& [reason, count] : listen->accept_errors()) {
        by_feed["feed/" + feed->name()][reason] += count;
      }
    }
  }
  for (auto& [listener, errors] : by_feed) s.accept_errors.emplace_back(listener, errors);
  for (const auto& sink : sinks_) {
    s.sinks.emplace_back(sink->name(), sink->counters());
    if (const auto* server = dynamic_cast<const ServerSink*>(sink.get())) {
      s.accept_errors.emplace_back("output/" + server->name(), server->accept_errors());
    }
  }
  if (deadletter_) s.deadletter = deadletter_->counters();
  return s;
}

}  // namespace chronomerge
