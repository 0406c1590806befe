// SimulateFeed: a built-in source of bus telemetry, so the daemon can be
// tried (and tested) with nothing else running. Emits `rate` records per
// second from `vehicles` simulated buses; `jitter_ms` delays delivery by a
// random amount (records still carry their generation time, in order, like
// a mobile link that batches); `seed` makes runs repeatable; after `count`
// records the feed ends. Keys are wall-clock epoch milliseconds.
//
// It honours backpressure like a real sensor with a buffer: paused, it
// generates nothing; resumed, it catches up in bursts.
#pragma once

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "feeds/feed.h"
#include "uv/uv_handle.h"

namespace chronomerge {

class SimulateFeed final : public Feed {
 public:
  static constexpr uint64_t tick_ms = 10;
  static constexpr size_t max_burst = 4096;  // records per tick while catching up

  SimulateFeed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes);
  ~SimulateFeed() override;

  bool start() override;
  void pause() override;
  void resume() override;
  void close() override;

 private:
  struct Bus {
    double lat, lon, speed, soc, odometer;
  };
  static void on_tick(uv_timer_t* timer);
  void tick();
  void append_record(int64_t time_ms);

  UvHandle<uv_timer_t> timer_;
  std::mt19937_64 rng_;
  std::vector<Bus> buses_;
  double next_ms_ = 0;     // generation time of the next record (epoch ms)
  double deliver_ms_ = 0;  // records up to this time are due
  uint64_t generated_ = 0;
  bool paused_ = false;
  bool closed_ = false;
  std::string chunk_;
  std::unique_ptr<LineBatch> lines_;  // frames chunk_ on the loop thread
};

}  // namespace chronomerge
