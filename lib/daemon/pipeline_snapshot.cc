// Pipeline::metrics_snapshot(): the pipeline's parts, summed by name into
// plain values for the metrics.
#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "daemon/pipeline.h"
#include "feeds/connect_feed.h"
#include "feeds/exec_feed.h"
#include "feeds/kafka_feed.h"
#include "feeds/listen_feed.h"
#include "feeds/member_feed.h"
#include "output/output_cursor.h"
#include "sinks/dead_letter.h"
#include "sinks/server_sink.h"

namespace chronomerge {
namespace {

// Feeds by name, in the order first seen.
class FeedTotals {
 public:
  explicit FeedTotals(std::vector<FeedSnapshot>& feeds) : feeds_(feeds) {}
  FeedSnapshot& operator[](std::string_view name) {
    auto [it, added] = index_.try_emplace(std::string(name), feeds_.size());
    if (added) {
      feeds_.push_back(FeedSnapshot{});
      feeds_.back().name = std::string(name);
    }
    return feeds_[it->second];
  }

 private:
  std::vector<FeedSnapshot>& feeds_;
  std::unordered_map<std::string, size_t> index_;
};

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
  t.start_failures += counters.start_failures;
}

}  // namespace

FleetSnapshot Pipeline::fleet_snapshot(const Fleet& fleet) const {
  FleetSnapshot f;
  f.name = fleet.name();
  const FleetCounters& c = fleet.counters();
  f.connected = fleet.connected();
  f.known = fleet.known();
  f.joined = c.joined;
  f.left = c.left;
  f.replaced = c.replaced;
  f.retired = c.retired;
  for (FleetRefusal reason : fleet_refusals) {
    f.refused.emplace_back(std::string(to_string(reason)), c.refused[static_cast<size_t>(reason)]);
  }
  f.records_in = c.retired_stats.records_in;
  f.bytes_read = c.retired_counters.bytes_read;
  f.malformed = c.retired_counters.malformed;
  f.late = c.retired_stats.late;
  std::optional<Key> oldest, newest;
  for (const FleetMemberView& member : fleet.members()) {
    const FeedId id = member.feed->id();
    const FeedStats& stats = merger_.stats(id);
    const FeedCounters& counters = member.feed->counters();
    f.records_in += stats.records_in;
    f.bytes_read += counters.bytes_read;
    f.malformed += counters.malformed;
    f.late += stats.late;
    f.queue_bytes += merger_.queue_bytes(id);
    f.paused += member.feed->paused() ? 1 : 0;
    f.idle += merger_.state(id) == FeedState::idle ? 1 : 0;
    if (member.connected && stats.last_key) {
      if (!oldest || *stats.last_key < *oldest) oldest = stats.last_key;
      if (!newest || *newest < *stats.last_key) newest = stats.last_key;
    }
  }
  if (oldest && config_.key_type != KeyType::string) {
    f.oldest_member_lag = key_distance(config_.key_type, *oldest, *newest);
  }
  return f;
}

// Written by hand: names are the name rule's characters, peers are
// addresses, keys come from key_json().
std::string Pipeline::fleet_json() const {
  std::string out = "{\"fleets\":[";
  for (size_t i = 0; i < fleets_.size(); ++i) {
    const Fleet& fleet = *fleets_[i];
    fmt::format_to(std::back_inserter(out),
                   "{}{{\"name\":\"{}\",\"listen\":\"{}\",\"connected\":{},\"known\":{},"
                   "\"members\":[",
                   i ? "," : "", fleet.name(), fleet.address(), fleet.connected(), fleet.known());
    bool first = true;
    for (const FleetMemberView& member : fleet.members()) {
      const FeedId id = member.feed->id();
      const FeedStats& stats = merger_.stats(id);
      fmt::format_to(std::back_inserter(out),
                     "{}{{\"name\":\"{}\",\"feed\":\"{}\",\"peer\":\"{}\",\"connected\":{},"
                     "\"state\":\"{}\",\"records\":{},\"last_key\":{},\"paused\":{}}}",
                     first ? "" : ",", member.name, member.feed->name(), member.feed->peer(),
                     member.connected, to_string(merger_.state(id)), stats.records_in,
                     key_json(config_.key_type, stats.last_key), member.feed->paused());
      first = false;
    }
    out += "]}";
  }
  out += "]}\n";
  return out;
}

std::string Pipeline::tail_json(size_t max_records) {
  // A reader that never holds the merge, from max_records before the head.
  OutputLog& log = output_;
  OutputLog::ConsumerOptions options;
  options.policy = ConsumerPolicy::disconnect;
  const uint64_t head = log.head_offset();
  options.start = std::max(log.oldest_offset(), head > max_records ? head - max_records : 0);
  const uint64_t first = *options.start;
  OutputCursor cursor(log, std::move(options), nullptr);
  std::vector<OutputLog::Slice> slices;
  cursor.peek(slices, 64 << 10);
  nlohmann::json records = nlohmann::json::array();
  uint64_t offset = first;
  for (const OutputLog::Slice& slice : slices) {
    offset = slice.first_offset;
    std::string_view bytes = slice.bytes;
    while (!bytes.empty()) {
      const size_t newline = bytes.find('\n');
      records.push_back({{"offset", offset++}, {"record", std::string(bytes.substr(0, newline))}});
      if (newline == std::string_view::npos) break;
      bytes.remove_prefix(newline + 1);
    }
  }
  nlohmann::json answer = {{"records", std::move(records)}};
  return answer.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

MetricsSnapshot Pipeline::metrics_snapshot() const {
  MetricsSnapshot s;
  const uint64_t now = uv_now(loop_);
  s.key_type = config_.key_type;
  if (config_.key_unit) s.key_unit_seconds = seconds_per(*config_.key_unit);

  // Live instances, in id order: where a name has two (a restart by
  // reload), the newest comes last and its state wins.
  std::unordered_set<std::string_view> reported;
  FeedTotals by_name(s.feeds);
  for (const auto& feed : feeds_) {
    if (!feed) continue;
    // Fleet members have series of their own only if their fleet asks.
    if (feed->is_member() && !feed->config().fleet->member_metrics) continue;
    const FeedId id = feed->id();
    const FeedStats& stats = merger_.stats(id);
    FeedCounters counters = feed->counters();
    counters.paused_ms = counters.paused_ms_at(now, merger_.paused(id));
    FeedSnapshot& t = by_name[feed->name()];
    add_counts(t, stats, counters);
    t.paused_ms += counters.paused_ms;
    t.queue_bytes += merger_.queue_bytes(id);
    t.listens = t.listens || dynamic_cast<const ListenFeed*>(feed.get()) != nullptr;
    t.runs_program = t.runs_program || dynamic_cast<const ExecFeed*>(feed.get()) != nullptr;
    t.paused = t.paused || merger_.paused(id);
    t.connected = t.connected || counters.connected;
    t.io_error = t.io_error || counters.io_error;
    t.state = merger_.state(id);
    if (stats.last_key) t.last_key = stats.last_key;
    if (const auto* kafka = dynamic_cast<const KafkaFeed*>(feed.get())) {
      t.kafka = kafka->kafka_counters();
    }
    if (t.state != FeedState::ended) reported.insert(feed->name());
  }
  // Retired instances (removed, drained and freed) still count: counters
  // never go backwards.
  for (const auto& [name, retired] : retired_) {
    FeedSnapshot& t = by_name[name];
    const bool had_key = t.last_key.has_value();
    add_counts(t, retired.stats, retired.counters);
    t.paused_ms += retired.counters.paused_ms;
    if (!had_key && retired.stats.last_key) t.last_key = retired.stats.last_key;
  }
  // Ended feeds stay visible while the configuration names them.
  for (const FeedConfig& feed : config_.feeds) {
    if (!feed.fleet) reported.insert(feed.name);
  }
  std::erase_if(s.feeds, [&](const FeedSnapshot& t) { return !reported.contains(t.name); });

  for (const auto& fleet : fleets_) s.fleets.push_back(fleet_snapshot(*fleet));

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
  for (const auto& fleet : fleets_) by_feed["feed/" + fleet->name()] = fleet->accept_errors();
  for (const auto& feed : feeds_) {
    if (const auto* listen = dynamic_cast<const ListenFeed*>(feed.get())) {
      for (const auto& [reason, count] : listen->accept_errors()) {
        by_feed["feed/" + feed->name()][reason] += count;
      }
    }
  }
  for (auto& [listener, errors] : by_feed) s.accept_errors.emplace_back(listener, errors);
  for (const auto& fleet : fleets_) {
    if (const TlsCounters* tls = fleet->tls_counters())
      s.tls.emplace_back("feed/" + fleet->name(), *tls);
  }
  for (const auto& feed : feeds_) {
    if (!feed || feed->removed()) continue;
    const TlsCounters* tls = nullptr;
    if (const auto* listen = dynamic_cast<const ListenFeed*>(feed.get()))
      tls = listen->tls_counters();
    if (const auto* connect = dynamic_cast<const ConnectFeed*>(feed.get())) {
      tls = connect->tls_counters();
    }
    if (tls) s.tls.emplace_back("feed/" + feed->name(), *tls);
  }
  for (const auto& sink : sinks_) {
    s.sinks.emplace_back(sink->name(), sink->counters());
    if (const auto* server = dynamic_cast<const ServerSink*>(sink.get())) {
      s.accept_errors.emplace_back("output/" + server->name(), server->accept_errors());
      if (const TlsCounters* tls = server->tls_counters()) {
        s.tls.emplace_back("output/" + server->name(), *tls);
      }
    }
  }
  if (deadletter_) s.deadletter = deadletter_->counters();
  return s;
}

}  // namespace chronomerge
