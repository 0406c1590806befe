#include "feeds/feed.h"

#include "log/log.h"

namespace chronomerge {

// Adapts LineFramer's visitor interface to the feed's private methods.
struct FeedLineSink {
  Feed& feed;
  void line(std::string_view line) { feed.line(line); }
  void overlong(std::string_view head, size_t total) { feed.overlong(head, total); }
};

namespace {
KeySpec spec_for(const KeySpec& shared, const FeedConfig& feed) {
  KeySpec spec = shared;
  spec.heartbeat_field = feed.heartbeat_field;
  return spec;
}
}  // namespace

Feed::Feed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes)
    : host_(host),
      id_(id),
      config_(std::move(config)),
      framer_(max_line_bytes),
      parser_(spec_for(host.parser().spec(), config_)) {}

void Feed::line(std::string_view line) {
  std::optional<LineError> error = parser_.parse(line, parsed_);
  if (error) {
    reject(*error, line);
  } else {
    accept(line, std::move(parsed_));
  }
}

void Feed::accept(std::string_view line, ParsedRecord&& parsed) {
  if (!host_.queue_record(id_, line, std::move(parsed))) pause();
}

void Feed::accept(std::span<BlockRecord> records, const BlockOwner& block) {
  if (!host_.queue_records(id_, records, block)) pause();
}

void Feed::reject(LineError error, std::string_view line) {
  ++counters_.malformed;
  ++counters_.malformed_by[static_cast<size_t>(error)];
  host_.malformed(id_, error, line);
}

void Feed::overlong(std::string_view head, size_t total) {
  log::debug("feed {}: line of {} bytes over max_line_bytes", name(), total);
  reject(LineError::too_long, head);
}

void Feed::deliver(std::string_view bytes) {
  if (ended_) return;
  counters_.bytes_read += bytes.size();
  FeedLineSink sink{*this};
  framer_.push(bytes, sink);
}

void Feed::deliver_eof(bool finish_framer) {
  if (ended_) return;
  FeedLineSink sink{*this};
  if (finish_framer) framer_.finish(sink);
  end_in_merger();
}

void Feed::end_in_merger() {
  if (ended_) return;
  ended_ = true;
  set_connected(false);
  host_.feed_ended(id_);
}

void Feed::drain() {
  stop();
}

void Feed::stop() {
  close();
  end_in_merger();
}

void Feed::update(const FeedConfig& config) {
  config_ = config;
  parser_ = RecordParser(spec_for(host_.parser().spec(), config_));
}

bool Feed::same_transport(const FeedConfig& a, const FeedConfig& b) {
  // Everything but the tuning that update() applies.
  FeedConfig x = a;
  x.high_water_mark = b.high_water_mark;
  x.low_water_mark = b.low_water_mark;
  x.idle_timeout_ms = b.idle_timeout_ms;
  x.reorder_window = b.reorder_window;
  x.heartbeat_field = b.heartbeat_field;
  x.max_lag = b.max_lag;
  x.late = b.late;
  return x == b;
}

void Feed::connection_lost() {
  if (size_t bytes = framer_.discard_partial()) {
    ++counters_.partial_discarded;
    ++counters_.malformed;
    ++counters_.malformed_by[static_cast<size_t>(LineError::not_json)];
    log::warn("feed {}: producer disconnected mid-line, {} bytes discarded", name(), bytes);
  }
  set_connected(false);
}

void Feed::set_connected(bool connected) {
  if (connected && !counters_.connected) ++counters_.connections;
  counters_.connected = connected;
}

}  // namespace chronomerge
