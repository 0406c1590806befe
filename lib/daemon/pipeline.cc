#include "daemon/pipeline.h"

#include <algorithm>
#include <random>
#include <set>

#include "feeds/connect_feed.h"
#include "feeds/exec_feed.h"
#include "feeds/file_feed.h"
#include "feeds/kafka_feed.h"
#include "feeds/listen_feed.h"
#include "feeds/member_feed.h"
#include "feeds/simulate_feed.h"
#include "feeds/stream_feed.h"
#include "output/heartbeat_record.h"
#include "sinks/dead_letter.h"
#include "sinks/kafka_sink.h"
#include "sinks/server_sink.h"
#include "sinks/stdout_sink.h"
#include "uv/uv_error.h"

namespace chronomerge {
namespace {

KeySpec key_spec(const Config& config) {
  KeySpec spec;
  spec.path = config.key;
  spec.type = config.key_type;
  return spec;
}

MergerOptions merger_options(const Config& config) {
  MergerOptions options;
  options.mode = config.mode;
  options.late = config.late;
  options.key_type = config.key_type;
  // Combine objects name the key by its last path segment ("/meta/ts" ->
  // "ts"), like stream-combine's key option.
  std::string_view key = config.key;
  if (!key.empty() && key.front() == '/') key = key.substr(key.rfind('/') + 1);
  options.combine_key_name = std::string(key);
  return options;
}

// A run id names the numbering of this run's offsets: random, so a client
// holding an offset of an earlier run gets a gap, never the wrong record.
std::string new_run_id() {
  std::random_device random;
  std::uniform_int_distribution<uint64_t> bits;
  const uint64_t id = bits(random);
  return fmt::format("{:016x}", id);
}

OutputLogOptions log_options(const Config& config, bool live) {
  OutputLogOptions options;
  options.high_water_mark = config.output_high_water_mark;
  // A one-shot run has no clients to resume: it keeps only what its
  // outputs have yet to write.
  options.retention_bytes = live ? config.retention_bytes : 0;
  options.retention_ms = config.retention_ms;
  options.run_id = new_run_id();
  options.key_type = config.key_type;
  return options;
}

}  // namespace

Pipeline::Pipeline(uv_loop_t* loop, Config config, bool live)
    : loop_(loop),
      config_(std::move(config)),
      live_(live),
      parser_(key_spec(config_)),
      output_(log_options(config_, live_)),
      merger_(merger_options(config_), output_) {
  output_.set_demand_callback([this] { schedule_pump(); });
  output_.set_written_callback(
      [this](const OutputLog::Origin& origin) { settle(origin.source, origin.position); });
  uv_timer_init(loop_, idle_timer_.get());
  idle_timer_.initialized(this);
  uv_timer_init(loop_, retire_timer_.get());
  retire_timer_.initialized(this);
  uv_timer_init(loop_, heartbeat_timer_.get());
  heartbeat_timer_.initialized(this);
  uv_unref(heartbeat_timer_.base());  // the merge's end is not its business
  if (live_ && config_.retention_ms) {
    uv_timer_init(loop_, retention_timer_.get());
    retention_timer_.initialized(this);
    const uint64_t every = std::clamp<uint64_t>(*config_.retention_ms / 10, 10, 1000);
    uv_timer_start(
        retention_timer_.get(),
        [](uv_timer_t* timer) {
          if (auto* self = static_cast<Pipeline*>(timer->data)) self->schedule_pump();
        },
        every, every);
    uv_unref(retention_timer_.base());
  }
  uv_check_init(loop_, pump_check_.get());
  pump_check_.initialized(this);
  uv_idle_init(loop_, pump_idle_.get());
  pump_idle_.initialized(this);
  // The check handle runs every turn but keeps nothing alive by itself;
  // the idle handle, active only while a pump is due, does.
  uv_check_start(pump_check_.get(), [](uv_check_t* check) {
    auto* self = static_cast<Pipeline*>(check->data);
    if (self != nullptr && self->pump_due_) self->pump();
  });
  uv_unref(pump_check_.base());
}

Pipeline::~Pipeline() {
  close();
}

std::unique_ptr<Sink> Pipeline::make_sink(const OutputConfig& output) {
  // A sink that finishes or fails may complete the run.
  auto changed = [this] { schedule_pump(); };
  switch (output.type) {
    case OutputType::stdout_: {
      auto sink = std::make_unique<StdoutSink>(loop_, output_, output, changed);
      if (!live_) sink->set_one_shot();
      return sink;
    }
    case OutputType::file:
      return std::make_unique<FileSink>(loop_, output_, output, changed);
    case OutputType::tcp_listen:
    case OutputType::unix_listen:
    case OutputType::http_listen:
      return std::make_unique<ServerSink>(loop_, output_, output, changed);
    case OutputType::kafka:
      return std::make_unique<KafkaSink>(loop_, output_, output, changed);
  }
  return nullptr;
}

std::unique_ptr<Feed> Pipeline::make_feed(FeedId id, const FeedConfig& feed) {
  size_t max_line = *feed.max_line_bytes;
  switch (feed.type) {
    case FeedType::file:
      return std::make_unique<FileFeed>(*this, id, feed, max_line);
    case FeedType::stdin_:
      return make_stdin_feed(*this, id, feed, max_line);
    case FeedType::tcp_listen:
    case FeedType::unix_listen:
      return std::make_unique<ListenFeed>(*this, id, feed, max_line);
    case FeedType::tcp_connect:
    case FeedType::unix_connect:
      return std::make_unique<ConnectFeed>(*this, id, feed, max_line);
    case FeedType::exec:
      return std::make_unique<ExecFeed>(*this, id, feed, max_line);
    case FeedType::simulate:
      return std::make_unique<SimulateFeed>(*this, id, feed, max_line);
    case FeedType::kafka: {
      std::string error = "its partitions were never listed";  // "all", not resolved
      auto client =
          feed.kafka->all_partitions ? nullptr : kafka_clients_.acquire(loop_, feed, error);
      if (!client) log::error("feed {}: cannot create a Kafka client: {}", feed.name, error);
      settling_feeds_[output_.source_id(feed.name)] = id;
      // Without a client its start() fails.
      return std::make_unique<KafkaFeed>(*this, id, feed, max_line, std::move(client));
    }
  }
  return nullptr;
}

void Pipeline::settle(OutputLog::SourceId source, uint64_t origin) {
  auto it = settling_feeds_.find(source);
  if (it == settling_feeds_.end() || !feeds_[it->second]) return;
  static_cast<KafkaFeed&>(*feeds_[it->second]).settle(origin);
}

void Pipeline::may_idle(FeedId feed, bool may) {
  if (feeds_[feed]->ended() || feeds_[feed]->removed()) return;
  merger_.update(feed, settings_for(feeds_[feed]->config(), may), uv_now(loop_));
  schedule_pump();
}

// Fills a feed's unset options from the globals: two feeds are "the same"
// across a reload when their effective settings are.
FeedConfig Pipeline::effective(const FeedConfig& feed, const Config& config) {
  FeedConfig e = feed;
  // A fleet's members have small marks of their own: thousands of them.
  e.high_water_mark = feed.high_water_mark.value_or(feed.fleet ? default_member_high_water_mark
                                                               : config.feed_high_water_mark);
  e.low_water_mark = feed.low_water_mark.value_or(feed.fleet ? default_member_low_water_mark
                                                             : config.feed_low_water_mark);
  e.idle_timeout_ms = feed.idle_timeout_ms.value_or(config.idle_timeout_ms);
  e.max_line_bytes = feed.max_line_bytes.value_or(config.max_line_bytes);
  if (!e.max_lag) e.max_lag = config.max_lag;
  e.late = feed.late.value_or(config.late);
  return e;
}

// The merger's view of an effective feed configuration.
FeedSettings Pipeline::settings_for(const FeedConfig& feed, bool may_idle) const {
  FeedSettings settings;
  settings.name = feed.name;
  settings.high_water_mark = *feed.high_water_mark;
  settings.low_water_mark = *feed.low_water_mark;
  bool live_transport = feed.type != FeedType::file || feed.follow;
  if (live_ && live_transport && may_idle) settings.idle_timeout_ms = feed.idle_timeout_ms;
  settings.reorder_window = feed.reorder_window;
  settings.max_lag = feed.max_lag;
  settings.late = feed.late;
  return settings;
}

std::optional<uint32_t> Pipeline::rank_in(const Config& config, std::string_view name) {
  for (size_t i = 0; i < config.feeds.size(); ++i) {
    if (config.feeds[i].name == name) return static_cast<uint32_t>(i);
  }
  return std::nullopt;
}

Fleet* Pipeline::fleet_named(std::string_view name) const {
  for (const auto& fleet : fleets_) {
    if (fleet->name() == name) return fleet.get();
  }
  return nullptr;
}

// A fleet holds the merge open (Merger::hold()) while it exists: with no
// member connected it has no feed in the merger, and the merge must not
// end for that.
bool Pipeline::add_fleet(const FeedConfig& feed, uint32_t rank) {
  auto fleet = std::make_unique<Fleet>(*this, feed, rank);
  if (!fleet->start()) return false;
  merger_.hold();
  fleets_.push_back(std::move(fleet));
  return true;
}

// The fleet object stays until the pipeline closes: its members' TLS
// connections, still draining, live in its listener.
void Pipeline::remove_fleet(Fleet& fleet) {
  fleet.drain();
  merger_.release();
  auto it = std::find_if(fleets_.begin(), fleets_.end(),
                         [&](const auto& f) { return f.get() == &fleet; });
  removed_fleets_.push_back(std::move(*it));
  fleets_.erase(it);
}

FeedSettings Pipeline::member_settings(const MemberFeed& member, bool present) const {
  FeedSettings settings = settings_for(member.config());
  // Its producer is gone: the merge must not wait for it.
  if (!present && settings.idle_timeout_ms) settings.idle_timeout_ms = 0;
  return settings;
}

// Members join idle: with thousands of producers somebody is always
// connecting, and the merge must not wait for each.
MemberFeed& Pipeline::add_member(Fleet& fleet, const std::string& member) {
  FeedConfig config = fleet.config();
  config.name = fleet.name() + "/" + member;
  FeedSettings settings = settings_for(config);
  settings.group = fleet.name();
  FeedId id = merger_.add_feed(std::move(settings), uv_now(loop_), true, fleet.rank());
  if (id >= feeds_.size()) {
    feeds_.resize(id + 1);
    malformed_limiters_.resize(id + 1);
  }
  const size_t max_line = *config.max_line_bytes;
  auto feed = std::make_unique<MemberFeed>(*this, id, std::move(config), max_line, fleet, member);
  MemberFeed& added = *feed;
  feeds_[id] = std::move(feed);
  malformed_limiters_[id] = log::RateLimiter();
  return added;
}

void Pipeline::member_present(MemberFeed& member, bool present) {
  if (member.ended() || member.removed()) return;
  merger_.update(member.id(), member_settings(member, present), uv_now(loop_));
  schedule_pump();
}

void Pipeline::retire_member(MemberFeed& member) {
  remove_feed(member, false);
  schedule_pump();
}

bool Pipeline::add_sink(const OutputConfig& output) {
  auto sink = make_sink(output);
  if (!sink->start()) return false;
  sinks_.push_back(std::move(sink));
  return true;
}

std::optional<FeedId> Pipeline::add_feed(const FeedConfig& feed, bool joins_idle) {
  // A Kafka partition holds the merge until it has caught up: it joins
  // waiting, never idle, whatever `joins_idle` says (see KafkaFeed).
  const bool kafka = feed.type == FeedType::kafka;
  FeedId id = merger_.add_feed(settings_for(feed, !kafka), uv_now(loop_), joins_idle && !kafka);
  if (id >= feeds_.size()) {
    feeds_.resize(id + 1);
    malformed_limiters_.resize(id + 1);
  }
  feeds_[id] = make_feed(id, feed);  // with the globals filled in
  malformed_limiters_[id] = log::RateLimiter();
  if (feeds_[id]->start()) return id;
  // Not left open in the merger, where it would hold the merge until
  // idle_timeout_ms.
  remove_feed(*feeds_[id], false);
  return std::nullopt;
}

bool Pipeline::start() {
  if (config_.deadletter) {
    deadletter_ =
        std::make_unique<DeadLetter>(loop_, *config_.deadletter, [this] { schedule_pump(); });
    if (!deadletter_->start()) {
      close();
      return false;
    }
  }
  // Outputs first, so no record is merged before its sinks exist.
  for (const OutputConfig& output : config_.outputs) {
    if (!add_sink(output)) {
      close();
      return false;
    }
  }
  // A feed that ends inside its start() (a program that cannot run, a
  // simulation of zero records) must not end the merge before the others
  // are added.
  merger_.hold();
  for (size_t i = 0; i < config_.feeds.size(); ++i) {
    const FeedConfig& feed = config_.feeds[i];
    const bool started = feed.fleet ? add_fleet(effective(feed, config_), static_cast<uint32_t>(i))
                                    : add_feed(effective(feed, config_), false).has_value();
    if (!started) {
      close();
      return false;
    }
  }
  merger_.release();
  arm_heartbeats();
  schedule_pump();
  return true;
}

void Pipeline::arm_heartbeats() {
  uint64_t interval = 0;
  for (const OutputConfig& output : config_.outputs) {
    if (output.heartbeats && (interval == 0 || output.heartbeats->interval_ms < interval)) {
      interval = output.heartbeats->interval_ms;
    }
  }
  if (interval == heartbeat_interval_ms_ || closed_) return;
  heartbeat_interval_ms_ = interval;
  uv_timer_stop(heartbeat_timer_.get());
  if (interval == 0) return;
  uv_timer_start(
      heartbeat_timer_.get(),
      [](uv_timer_t* timer) {
        if (auto* self = static_cast<Pipeline*>(timer->data)) self->heartbeat();
      },
      interval, interval);
}

// The merge may have moved past the newest record without a record to
// show it (feeds sending heartbeats of their own, waiting feeds whose
// newest keys rose): one heartbeat record says so downstream.
void Pipeline::heartbeat() {
  if (output_.ended()) return;
  const std::optional<Key> bound = merger_.lower_bound();
  if (!bound) return;
  const std::optional<Key> newest = output_.newest_key();
  if (newest && !(*newest < *bound)) return;
  std::string field;
  for (const OutputConfig& output : config_.outputs) {
    if (output.heartbeats) field = output.heartbeats->field;
  }
  output_.append_heartbeat(heartbeat_record(config_.key, config_.key_type, *bound, field), *bound);
  output_.flush();
}

// What the feed has read is still merged; what its connection holds is
// read first (Feed::drain), for at most drain_timeout_ms.
void Pipeline::remove_feed(Feed& feed, bool keep_counts) {
  if (feed.removed()) return;
  feed.mark_removed();
  retiring_.push_back({feed.id(), uv_now(loop_) + config_.drain_timeout_ms, keep_counts});
  feed.drain();
  arm_retire_timer(10);
}

// A removed feed is done within a few loop turns, or at its deadline:
// look after 10 ms, then every 100 ms, rather than track each one's events.
void Pipeline::arm_retire_timer(uint64_t delay_ms) {
  if (closed_ || retiring_.empty() || uv_is_active(retire_timer_.base())) return;
  uv_timer_start(
      retire_timer_.get(),
      [](uv_timer_t* timer) {
        if (auto* self = static_cast<Pipeline*>(timer->data)) self->retire_feeds();
      },
      delay_ms, 0);
}

void Pipeline::retire_feeds() {
  const uint64_t now = uv_now(loop_);
  bool stopped = false;
  for (const Retiring& entry : retiring_) {
    Feed& feed = *feeds_[entry.id];
    if (!feed.ended() && now >= entry.deadline) {
      log::warn("feed {}: still draining after drain_timeout_ms ({} ms): stopped", feed.name(),
                config_.drain_timeout_ms);
      feed.stop();
      stopped = true;
    }
  }
  if (stopped) schedule_pump();
  if (closed_) return;
  std::erase_if(retiring_, [&](const Retiring& entry) {
    const FeedId id = entry.id;
    Feed& feed = *feeds_[id];
    if (!feed.ended() || !merger_.retired(id) || feed.busy()) return false;
    // Its counts live on under its name if it restarted; the object and
    // its slot go.
    RetiredFeed unused;
    RetiredFeed& totals = entry.keep_counts ? retired_[feed.name()] : unused;
    const FeedStats& stats = merger_.stats(id);
    const FeedCounters& counters = feed.counters();
    if (Fleet* fleet = fleet_of(feed)) fleet->member_retired(stats, counters);
    totals.stats.add(stats);
    totals.counters.add(counters);
    // The current pause, if any, ends with the feed.
    totals.counters.paused_ms +=
        counters.paused_ms_at(now, merger_.paused(id)) - counters.paused_ms;
    merger_.remove(id);
    if (auto it = settling_feeds_.find(output_.source_id(feed.name()));
        it != settling_feeds_.end() && it->second == id) {
      settling_feeds_.erase(it);
    }
    feeds_[id].reset();
    malformed_limiters_[id] = log::RateLimiter();
    return true;
  });
  arm_retire_timer(100);
}

namespace {

// Where a part listens ("tcp 127.0.0.1:7001", "unix /run/in.sock"), so a
// reload can tell whether a new part needs what an old one holds. Empty
// for parts that listen on nothing, and for port 0 (any free port).
std::string listen_key(bool tcp, bool unix_socket, const HostPort& address,
                       const std::string& path) {
  if (tcp && address.port != 0) return "tcp " + to_string(address);
  if (unix_socket) return "unix " + path;
  return {};
}
std::string listen_key(const FeedConfig& f) {
  return listen_key(f.type == FeedType::tcp_listen, f.type == FeedType::unix_listen, f.address,
                    f.path);
}
std::string listen_key(const OutputConfig& o) {
  return listen_key(o.type == OutputType::tcp_listen, o.type == OutputType::unix_listen, o.address,
                    o.path);
}

}  // namespace

// Atomic: every new part that can start before the old ones go (a new
// listener, file or dead-letter file) is started first; if one fails,
// those are closed again and nothing changes. Only a part that needs an
// address an old part releases (the same port, the same socket path)
// starts after the old part is gone.
bool Pipeline::reload(const Config& next, std::string& error) {
  // These shape every record already queued: changing them live would mix
  // two merges in one stream.
  if (next.key != config_.key || next.key_type != config_.key_type || next.mode != config_.mode ||
      next.output_high_water_mark != config_.output_high_water_mark ||
      next.retention_bytes != config_.retention_bytes ||
      next.retention_ms != config_.retention_ms) {
    error = "key, key_type, mode, output_high_water_mark and retention take effect only on restart";
    return false;
  }

  // The plan: which running parts go, which change in place, what is new.
  std::set<std::string> released;  // listen keys of the parts that go
  std::vector<size_t> closing_sinks;
  std::vector<std::pair<Sink*, const OutputConfig*>> updated_sinks;
  std::set<std::string> kept_outputs;  // names of the outputs that stay
  std::vector<const OutputConfig*> new_outputs;
  for (size_t i = 0; i < sinks_.size(); ++i) {
    const OutputConfig& current = sinks_[i]->config();
    auto match = std::find_if(next.outputs.begin(), next.outputs.end(),
                              [&](const OutputConfig& o) { return o.name == current.name; });
    if (match != next.outputs.end() && *match == current) {
      kept_outputs.insert(current.name);
    } else if (match != next.outputs.end() && sinks_[i]->updatable_to(*match)) {
      kept_outputs.insert(current.name);
      updated_sinks.emplace_back(sinks_[i].get(), &*match);
    } else {
      closing_sinks.push_back(i);
      released.insert(listen_key(current));
    }
  }
  for (const OutputConfig& output : next.outputs) {
    if (kept_outputs.count(output.name) == 0) new_outputs.push_back(&output);
  }
  std::vector<Feed*> removed_feeds, restarted_feeds, updated_feeds;
  for (auto& feed : feeds_) {
    if (!feed || feed->removed() || feed->is_member()) continue;
    auto match = std::find_if(next.feeds.begin(), next.feeds.end(),
                              [&](const FeedConfig& f) { return f.name == feed->name(); });
    if (match == next.feeds.end()) {
      removed_feeds.push_back(feed.get());
    } else if (const FeedConfig changed = effective(*match, next); changed == feed->config()) {
      continue;
    } else if (Feed::same_transport(changed, feed->config())) {
      updated_feeds.push_back(feed.get());
      continue;
    } else {
      restarted_feeds.push_back(feed.get());
    }
    released.insert(listen_key(feed->config()));
  }
  // Fleets keep their members when only their tuning changes; a new
  // address (or no fleet any more) means a new fleet.
  std::vector<Fleet*> removed_fleets, updated_fleets;
  for (const auto& fleet : fleets_) {
    auto match = std::find_if(next.feeds.begin(), next.feeds.end(),
                              [&](const FeedConfig& f) { return f.name == fleet->name(); });
    if (match != next.feeds.end() && match->fleet) {
      const FeedConfig changed = effective(*match, next);
      if (changed == fleet->config()) continue;
      if (changed.type == fleet->config().type && changed.address == fleet->config().address &&
          changed.path == fleet->config().path) {
        updated_fleets.push_back(fleet.get());
        continue;
      }
    }
    removed_fleets.push_back(fleet.get());
    released.insert(listen_key(fleet->config()));
  }
  std::vector<FeedConfig> new_feeds;  // effective configurations
  for (const FeedConfig& feed : next.feeds) {
    bool running = std::any_of(feeds_.begin(), feeds_.end(), [&](const auto& f) {
      return f && !f->removed() && !f->is_member() && f->name() == feed.name &&
             std::find(restarted_feeds.begin(), restarted_feeds.end(), f.get()) ==
                 restarted_feeds.end();
    });
    running = running || std::any_of(fleets_.begin(), fleets_.end(), [&](const auto& f) {
                return f->name() == feed.name && feed.fleet &&
                       std::find(removed_fleets.begin(), removed_fleets.end(), f.get()) ==
                           removed_fleets.end();
              });
    if (!running) new_feeds.push_back(effective(feed, next));
  }
  released.erase(std::string());
  auto deferred = [&](const std::string& key) { return released.count(key) > 0; };

  // Phase 1: start what can start now. A reload may remove every feed
  // before it adds their successors: the merge (and with it every
  // client's stream) must not end in between.
  merger_.hold();
  std::vector<std::unique_ptr<Sink>> started_sinks;
  std::vector<FeedId> started_feeds;
  std::vector<Fleet*> started_fleets;
  std::unique_ptr<DeadLetter> next_deadletter;
  const bool deadletter_changed = !(config_.deadletter == next.deadletter);
  std::string failure;
  for (const OutputConfig* output : new_outputs) {
    if (deferred(listen_key(*output))) continue;
    auto sink = make_sink(*output);
    if (!sink->start()) {
      failure = fmt::format("output {} could not start", output->name);
      break;
    }
    started_sinks.push_back(std::move(sink));
  }
  if (failure.empty() && deadletter_changed && next.deadletter) {
    next_deadletter =
        std::make_unique<DeadLetter>(loop_, *next.deadletter, [this] { schedule_pump(); });
    if (!next_deadletter->start()) failure = "the dead-letter file could not be opened";
  }
  for (const FeedConfig& feed : new_feeds) {
    if (!failure.empty()) break;
    if (deferred(listen_key(feed))) continue;
    if (feed.fleet) {
      if (!add_fleet(feed, *rank_in(next, feed.name))) {
        failure = fmt::format("feed {} could not start", feed.name);
        break;
      }
      started_fleets.push_back(fleets_.back().get());
      continue;
    }
    std::optional<FeedId> id = add_feed(feed, true);  // joins idle
    if (!id) {
      failure = fmt::format("feed {} could not start", feed.name);
      break;
    }
    started_feeds.push_back(*id);
  }
  if (!failure.empty()) {
    // Undo: what phase 1 started goes again, unseen by anyone.
    for (FeedId id : started_feeds) remove_feed(*feeds_[id], false);
    for (Fleet* fleet : started_fleets) remove_fleet(*fleet);
    for (auto& sink : started_sinks) sink->close();
    if (next_deadletter) next_deadletter->close();
    merger_.release();
    schedule_pump();
    error = failure + "; nothing was changed";
    return false;
  }

  // Phase 2: commit.
  bool ok = true;
  config_ = next;
  log::set_level(config_.log_level);
  log::Style style = log::style();
  style.format = config_.log_format;
  log::set_style(style);
  merger_.set_late_policy(config_.late);
  arm_heartbeats();
  for (auto i = closing_sinks.rbegin(); i != closing_sinks.rend(); ++i) {
    Sink& sink = *sinks_[*i];
    bool kept_name = std::any_of(next.outputs.begin(), next.outputs.end(),
                                 [&](const OutputConfig& o) { return o.name == sink.name(); });
    log::info("output {}: {}", sink.name(), kept_name ? "changed, restarting" : "removed");
    discard_unwritten("output " + sink.name(), sink.counters().queue_bytes);
    sink.close();
    sinks_.erase(sinks_.begin() + static_cast<ptrdiff_t>(*i));
  }
  for (auto& [sink, changed] : updated_sinks) sink->update(*changed);
  for (auto& sink : started_sinks) sinks_.push_back(std::move(sink));
  for (const OutputConfig* output : new_outputs) {
    if (!deferred(listen_key(*output))) continue;
    // Its address was just released by the old part: binding it again
    // fails only if another process took it in between.
    if (!add_sink(*output)) {
      error = fmt::format("output {} could not start again on its address", output->name);
      ok = false;
    }
  }

  const uint64_t now = uv_now(loop_);
  for (Feed* feed : updated_feeds) {
    const FeedConfig changed =
        effective(*std::find_if(next.feeds.begin(), next.feeds.end(),
                                [&](const FeedConfig& f) { return f.name == feed->name(); }),
                  next);
    log::info("feed {}: settings changed, applied in place", feed->name());
    feed->update(changed);
    merger_.update(feed->id(), settings_for(changed, feed->may_idle()), now);
  }
  for (Fleet* fleet : updated_fleets) {
    const FeedConfig changed =
        effective(*std::find_if(next.feeds.begin(), next.feeds.end(),
                                [&](const FeedConfig& f) { return f.name == fleet->name(); }),
                  next);
    log::info("feed {}: fleet settings changed, applied in place to {} members", fleet->name(),
              fleet->known());
    fleet->update(changed);
    for (const FleetMemberView& view : fleet->members()) {
      MemberFeed& member = *view.feed;
      FeedConfig config = changed;
      config.name = member.name();
      member.update(config);
      if (!member.ended() && !member.removed()) {
        merger_.update(member.id(), member_settings(member, view.connected), now);
      }
    }
  }
  for (Fleet* fleet : removed_fleets) {
    const bool kept_name =
        std::any_of(next.feeds.begin(), next.feeds.end(),
                    [&](const FeedConfig& f) { return f.name == fleet->name(); });
    log::info("feed {}: {} (its {} members drain what they have read)", fleet->name(),
              kept_name ? "changed, restarting" : "removed", fleet->known());
    remove_fleet(*fleet);
  }
  for (Feed* feed : removed_feeds) {
    log::info("feed {}: removed (draining what it has read)", feed->name());
    remove_feed(*feed, false);
  }
  for (Feed* feed : restarted_feeds) {
    log::info("feed {}: changed, restarting (draining what it has read)", feed->name());
    remove_feed(*feed);
  }
  for (const FeedConfig& feed : new_feeds) {
    if (!deferred(listen_key(feed))) continue;
    if (feed.fleet) {
      if (!add_fleet(feed, *rank_in(next, feed.name))) {
        error = fmt::format("feed {} could not start again on its address", feed.name);
        ok = false;
      }
      continue;
    }
    if (!add_feed(feed, true)) {
      error = fmt::format("feed {} could not start again on its address", feed.name);
      ok = false;
    }
  }

  // Equal keys go in the new configuration's feed order; feeds on their
  // way out (still merging what they queued) come after every open one.
  // A fleet's members share its rank.
  for (auto& fleet : fleets_) fleet->set_rank(*rank_in(next, fleet->name()));
  std::vector<uint32_t> ranks(feeds_.size());
  for (size_t id = 0; id < feeds_.size(); ++id) {
    if (!feeds_[id]) continue;
    const Feed& feed = *feeds_[id];
    const std::string_view name =
        feed.is_member() ? std::string_view(feed.name()).substr(0, feed.name().find('/'))
                         : std::string_view(feed.name());
    std::optional<uint32_t> rank = rank_in(next, name);
    ranks[id] = !feed.removed() && rank ? *rank : static_cast<uint32_t>(next.feeds.size() + id);
  }
  merger_.set_ranks(ranks);
  // Totals of retired feeds are kept for names still configured.
  std::erase_if(retired_, [&](const auto& entry) {
    return std::none_of(next.feeds.begin(), next.feeds.end(),
                        [&](const FeedConfig& f) { return f.name == entry.first; });
  });

  // The dead-letter file: reopened at its (possibly new) path.
  if (deadletter_changed) {
    if (deadletter_) {
      discard_unwritten("dead-letter file", deadletter_->counters().queue_bytes);
      deadletter_->close();
    }
    deadletter_ = std::move(next_deadletter);
  }
  // Certificates, keys, CAs and CRLs are read again, whether or not their
  // paths changed (a renewed certificate keeps its path).
  for (auto& feed : feeds_) {
    if (feed && !feed->removed() && !feed->is_member()) feed->reload_tls();
  }
  for (auto& fleet : fleets_) fleet->reload_tls();
  for (auto& sink : sinks_) sink->reload_tls();
  // A sink that cannot write (a full disk) tries again now.
  for (auto& sink : sinks_) sink->retry();
  if (deadletter_) deadletter_->retry();
  merger_.release();
  schedule_pump();
  return ok;
}

// An output replaced or removed by a reload takes what it had not written
// with it (a new one starts at the merge's present): counted and logged.
void Pipeline::discard_unwritten(std::string_view what, size_t bytes) {
  if (bytes == 0) return;
  discarded_output_bytes_ += bytes;
  log::warn("{}: closed by a reload with {} bytes not yet written; they are discarded", what,
            bytes);
}

void Pipeline::reopen_files() {
  for (auto& sink : sinks_) sink->reopen();
  if (deadletter_) deadletter_->reopen();
}

void Pipeline::close() {
  if (closed_) return;
  closed_ = true;
  for (auto& feed : feeds_) {
    if (feed) feed->close();
  }
  for (auto& sink : sinks_) sink->close();
  fleets_.clear();
  removed_fleets_.clear();
  if (deadletter_) deadletter_->close();
  idle_timer_.close();
  retire_timer_.close();
  retention_timer_.close();
  heartbeat_timer_.close();
  pump_check_.close();
  pump_idle_.close();
}

// Listeners close at once; each open connection is read until it would
// block (Feed::drain), so what producers have written is merged.
void Pipeline::drain() {
  if (closed_) return;
  merger_.hold();  // as in reload(): no end while feeds are being removed
  while (!fleets_.empty()) remove_fleet(*fleets_.back());  // members drain below
  for (auto& feed : feeds_) {
    if (feed) remove_feed(*feed, !feed->is_member());
  }
  merger_.release();
  schedule_pump();
}

void Pipeline::schedule_pump() {
  if (closed_ || pump_due_) return;
  pump_due_ = true;
  uv_idle_start(pump_idle_.get(), [](uv_idle_t*) {});
}

// Runs from the check handle, after the loop turn's I/O callbacks: nothing
// below is ever inside another part's callback, and nothing calls back
// into the merger while it runs (it returns decisions instead).
void Pipeline::pump() {
  pump_due_ = false;
  uv_idle_stop(pump_idle_.get());
  if (closed_) return;
  output_.tick(uv_now(loop_));
  const bool more = merger_.run(uv_now(loop_));
  merger_.take_decisions(decisions_);
  for (const MergerDecision& decision : decisions_) carry_out(decision);
  for (auto& fleet : fleets_) fleet->balance(uv_now(loop_));
  output_.flush();
  if (deadletter_) deadletter_->flush();
  arm_idle_timer();
  log_long_hold();
  check_finished();
  // Budget spent with records left, or a resumed feed that ended at once:
  // once more, after the next poll for I/O.
  if (more || merger_.has_decisions()) schedule_pump();
}

void Pipeline::carry_out(const MergerDecision& decision) {
  Feed* feed = feeds_[decision.feed].get();
  if (feed == nullptr) return;
  switch (decision.kind) {
    case MergerDecision::Kind::pause:
      log::debug("feed {}: paused (queue at high-water mark)", feed->name());
      feed->paused_at(uv_now(loop_));
      feed->pause();
      break;
    case MergerDecision::Kind::resume:
      log::debug("feed {}: resumed (queue at low-water mark)", feed->name());
      feed->resumed_at(uv_now(loop_));
      feed->resume();
      break;
    case MergerDecision::Kind::late:
      late_record(decision.feed, decision.record, decision.emitted);
      if (decision.origin != 0) {
        settle(output_.source_id(feeds_[decision.feed]->name()), decision.origin);
      }
      break;
    case MergerDecision::Kind::idle:
    case MergerDecision::Kind::active:
      feed_idle(decision.feed, decision.kind == MergerDecision::Kind::idle);
      break;
  }
}

bool Pipeline::queue_record(FeedId feed, std::string_view line, ParsedRecord&& parsed) {
  schedule_pump();
  return merger_.push(feed, line, std::move(parsed), uv_now(loop_));
}

bool Pipeline::queue_records(FeedId feed, const RecordRun& run) {
  schedule_pump();
  return merger_.push(feed, run, uv_now(loop_));
}

bool Pipeline::in_flight(FeedId feed, size_t bytes) {
  schedule_pump();  // a resume decision, when the bytes drop
  return merger_.in_flight(feed, bytes);
}

void Pipeline::feed_ended(FeedId feed) {
  log::debug("feed {}: ended", feeds_[feed]->name());
  merger_.end(feed, uv_now(loop_));
  schedule_pump();
}

// One line when a feed has held the merge (others ready, the merge
// waiting for it) longer than its idle timeout: a producer far behind
// the rest, live and in order, sets everyone's pace.
void Pipeline::log_long_hold() {
  std::optional<FeedId> holder = merger_.holder();
  if (!holder) {
    hold_logged_.reset();
    return;
  }
  const uint64_t held = uv_now(loop_) - merger_.held_since();
  const uint64_t limit =
      merger_.settings(*holder).idle_timeout_ms.value_or(config_.idle_timeout_ms);
  if (held <= limit || hold_logged_ == holder) return;
  hold_logged_ = holder;
  log::warn(
      "feed {}: has held the merge for {} ms while other feeds had records ready (set max_lag "
      "to let a feed this far behind stop setting the pace)",
      feeds_[*holder]->name(), held);
}

void Pipeline::arm_idle_timer() {
  std::optional<uint64_t> due = merger_.next_deadline();
  if (!due) {
    if (idle_timer_due_) uv_timer_stop(idle_timer_.get());
    idle_timer_due_ = 0;
    return;
  }
  if (*due == idle_timer_due_) return;
  idle_timer_due_ = *due;
  uint64_t now = uv_now(loop_);
  uv_timer_start(
      idle_timer_.get(),
      [](uv_timer_t* timer) {
        auto* self = static_cast<Pipeline*>(timer->data);
        if (!self) return;
        self->idle_timer_due_ = 0;
        self->schedule_pump();
      },
      *due > now ? *due - now : 0, 0);
}

void Pipeline::check_finished() {
  if (finished_ || closed_) return;
  bool all_failed = !sinks_.empty();
  for (const auto& sink : sinks_) {
    if (!sink->finished()) return;
    all_failed = all_failed && sink->counters().failed;
  }
  // A one-shot merge whose every output failed (its reader went away, as
  // in `chronomerge big.ndjson | head`) stops here rather than reading the
  // rest of its input to merge it into nothing.
  if (!merger_.finished() && !(all_failed && !live_)) return;
  // Late records were written to the dead-letter file up to the end of
  // the merge: it is finished last.
  if (deadletter_) {
    deadletter_->end();  // may finish at once, and call back here
    if (finished_ || !deadletter_->finished()) return;
  }
  finished_ = true;
  if (on_finished_) on_finished_();
}

bool Pipeline::no_feed_opened() const {
  if (!retired_.empty()) return false;
  bool any = false;
  for (const auto& feed : feeds_) {
    if (!feed) continue;
    any = true;
    if (!feed->counters().io_error || feed->counters().bytes_read > 0) return false;
  }
  return any;
}

bool Pipeline::sink_failed() const {
  for (const auto& sink : sinks_) {
    if (sink->counters().failed) return true;
  }
  return false;
}

void Pipeline::malformed(FeedId feed, LineError error, std::string_view line,
                         uint64_t line_number) {
  const std::string& name = feeds_[feed]->name();
  if (!live_ && line_number > 0) {
    // One-shot: the feed is a file; FILE:LINE, as compilers and linters say.
    limiter(feed).log(uv_now(loop_), LogLevel::warn, {"feed", name}, "malformed lines",
                      "{}:{}: line skipped ({}): {}", name, line_number, to_string(error),
                      log::excerpt(line));
  } else if (line_number > 0) {
    limiter(feed).log(uv_now(loop_), LogLevel::warn, {"feed", name}, "malformed lines",
                      "feed {}: line skipped ({}): {} (line {})", name, to_string(error),
                      log::excerpt(line), line_number);
  } else {
    limiter(feed).log(uv_now(loop_), LogLevel::warn, {"feed", name}, "malformed lines",
                      "feed {}: line skipped ({}): {}", name, to_string(error), log::excerpt(line));
  }
  if (deadletter_) deadletter_->write(name, to_string(error), line);
}

void Pipeline::late_record(FeedId feed, std::string_view record, bool emitted) {
  const std::string& name = feeds_[feed]->name();
  limiter(feed).log(uv_now(loop_), LogLevel::warn, {"feed", name}, "late records",
                    "feed {}: late record {}: {}", name,
                    emitted ? "emitted out of order" : "dropped", log::excerpt(record));
  if (feeds_[feed]->config().late.value_or(config_.late) == LatePolicy::deadletter && deadletter_) {
    deadletter_->write(name, "late", record);
  }
}

void Pipeline::feed_idle(FeedId feed, bool idle) {
  if (idle && merger_.lagging(feed)) {
    limiter(feed).log(
        uv_now(loop_), LogLevel::warn, {"feed", feeds_[feed]->name()}, "idle/active transitions",
        "feed {}: more than max_lag behind most feeds: the merge no longer waits for it "
        "(its older records will be late)",
        feeds_[feed]->name());
    return;
  }
  // A fleet's members come and go all the time: their transitions are
  // for debugging.
  const LogLevel level = feeds_[feed]->is_member() ? LogLevel::debug : LogLevel::info;
  limiter(feed).log(uv_now(loop_), level, {"feed", feeds_[feed]->name()}, "idle/active transitions",
                    "feed {}: {}", feeds_[feed]->name(), idle ? "idle" : "active again");
}

// A fleet's members share their fleet's limiter: ten thousand members
// with one malformed line each must not write ten thousand lines.
log::RateLimiter& Pipeline::limiter(FeedId feed) {
  if (Fleet* fleet = fleet_of(*feeds_[feed])) return fleet->feed_log();
  return malformed_limiters_[feed];
}

Fleet* Pipeline::fleet_of(const Feed& feed) const {
  if (!feed.is_member()) return nullptr;
  return fleet_named(std::string_view(feed.name()).substr(0, feed.name().find('/')));
}

}  // namespace chronomerge
