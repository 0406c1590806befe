#include "feeds/feed.h"

#include "log/log.h"

namespace chronomerge {

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
      max_line_bytes_(max_line_bytes),
      parser_(spec_for(host.parser().spec(), config_)) {}

std::unique_ptr<LineBatch> Feed::make_batch() const {
  auto batch = std::make_unique<LineBatch>(max_line_bytes_, parser_);
  batch->set_parser(parser_, parser_version_);
  return batch;
}

void Feed::refresh(LineBatch& batch) const {
  if (batch.parser_version() != parser_version_) batch.set_parser(parser_, parser_version_);
}

void Feed::deliver(LineBatch& batch, std::string_view bytes) {
  if (ended_) return;
  counters_.bytes_read += bytes.size();
  refresh(batch);
  batch.frame(RecordBlock::copy_of(bytes), bytes.size(), bytes.size());
  take(batch);
}

void Feed::take(LineBatch& batch) {
  if (ended_) {
    batch.clear();
    return;
  }
  bool read_on = true;
  for (const LineBatch::Run& run : batch.runs()) {
    accepted(run);
    read_on = host_.queue_records(id_, run) && read_on;
  }
  for (const LineBatch::Rejected& line : batch.rejected()) {
    if (line.error == LineError::too_long) {
      log::debug("feed {}: line of {} bytes over max_line_bytes", name(), line.length);
    }
    reject(line.error, line.text, line.line_number);
  }
  batch.clear();
  if (!read_on) pause();
}

void Feed::reject(LineError error, std::string_view line, uint64_t line_number) {
  if (counters_.malformed == 0) first_rejected_ = std::string(line.substr(0, 4096));
  ++counters_.malformed;
  ++counters_.malformed_by[static_cast<size_t>(error)];
  host_.malformed(id_, error, line, line_number);
}

void Feed::end_and_close() {
  if (!ended_) {
    ended_ = true;
    set_connected(false);
    host_.feed_ended(id_);
  }
  close();
}

void Feed::drain() {
  stop();
}

void Feed::stop() {
  end_and_close();
}

void Feed::update(const FeedConfig& config) {
  config_ = config;
  parser_ = RecordParser(spec_for(host_.parser().spec(), config_));
  ++parser_version_;
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
  if (size_t bytes = discard_partial_line()) {
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
