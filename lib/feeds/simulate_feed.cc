#include "feeds/simulate_feed.h"

#include <chrono>
#include <cmath>

#include <fmt/format.h>

namespace chronomerge {
namespace {
double wall_clock_ms() {
  using namespace std::chrono;
  return static_cast<double>(
      duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}
}  // namespace

SimulateFeed::SimulateFeed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes)
    : Feed(host, id, std::move(config), max_line_bytes), rng_(config_.seed), lines_(make_batch()) {
  std::uniform_real_distribution<double> u(0, 1);
  for (uint32_t i = 0; i < std::max<uint32_t>(1, config_.vehicles); ++i) {
    buses_.push_back(Bus{52.30 + 0.1 * u(rng_), 4.80 + 0.15 * u(rng_), 30 * u(rng_),
                         0.4 + 0.6 * u(rng_), 100000 + 50000 * u(rng_)});
  }
}

SimulateFeed::~SimulateFeed() {
  close();
}

bool SimulateFeed::start() {
  uv_timer_init(host_.loop(), timer_.get());
  timer_.initialized(this);
  next_ms_ = wall_clock_ms();
  set_connected(true);
  if (config_.count && *config_.count == 0) {
    end_and_close();  // every generated line ends with '\n'
    return true;
  }
  uv_timer_start(timer_.get(), on_tick, 0, tick_ms);
  return true;
}

void SimulateFeed::on_tick(uv_timer_t* timer) {
  if (auto* self = static_cast<SimulateFeed*>(timer->data)) self->tick();
}

void SimulateFeed::append_record(int64_t time_ms) {
  std::uniform_real_distribution<double> u(0, 1);
  size_t index = static_cast<size_t>(rng_() % buses_.size());
  Bus& bus = buses_[index];
  bus.speed = std::clamp(bus.speed + (u(rng_) - 0.5) * 6, 0.0, 80.0);
  bus.lat += (u(rng_) - 0.5) * 0.0004;
  bus.lon += (u(rng_) - 0.5) * 0.0006;
  bus.soc = std::max(0.05, bus.soc - 0.00002 * bus.speed);
  bus.odometer += bus.speed / 3600.0;
  fmt::format_to(std::back_inserter(chunk_),
                 "{{\"time\":{},\"vehicle\":\"{}-{:04}\",\"lat\":{:.5f},\"lon\":{:.5f},"
                 "\"speed_kmh\":{:.1f},\"soc\":{:.3f},\"odometer_km\":{:.1f}}}\n",
                 time_ms, config_.name, index, bus.lat, bus.lon, bus.speed, bus.soc, bus.odometer);
}

void SimulateFeed::tick() {
  if (paused_ || closed_) return;
  double now = wall_clock_ms();
  // Delivery lags generation by up to jitter_ms, decided per tick: the
  // records generated meanwhile arrive together, as over a mobile link.
  double delay = config_.jitter_ms ? static_cast<double>(rng_() % (config_.jitter_ms + 1)) : 0.0;
  deliver_ms_ = std::max(deliver_ms_, now - delay);
  double interval = 1000.0 / config_.rate;
  chunk_.clear();
  size_t made = 0;
  while (next_ms_ <= deliver_ms_ && made < max_burst) {
    if (config_.count && generated_ >= *config_.count) break;
    append_record(static_cast<int64_t>(std::floor(next_ms_)));
    next_ms_ += interval;
    ++generated_;
    ++made;
  }
  if (!chunk_.empty()) deliver(*lines_, chunk_);  // may pause us
  if (config_.count && generated_ >= *config_.count && !closed_) {
    end_and_close();  // every generated line ends with '\n'
  }
}

void SimulateFeed::pause() {
  paused_ = true;
}
void SimulateFeed::resume() {
  paused_ = false;
}

void SimulateFeed::close() {
  if (closed_) return;
  closed_ = true;
  timer_.close();
}

}  // namespace chronomerge
