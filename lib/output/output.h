// Output: the merged stream as a "readable" with a high-water mark, shared
// by every sink.
//
// The merger push()es records; every subscriber (a sink, or one client of a
// server sink) reads the same bytes from its own cursor, so a record is
// stored once however many clients there are. Memory is held only for bytes
// some subscriber still has to take.
//
// Flow control, as in a Node readable piped into several writables:
// - push() returns false once a *blocking* subscriber is `limit` bytes or
//   more behind the head (limit = min(high_water_mark, its max_buffer)).
//   The merger stops its conveyor belt then.
// - When consume() brings every blocking subscriber back under its limit,
//   the demand callback runs (the merger's "_read").
// - A *non-blocking* (slow_client: disconnect) subscriber that falls more
//   than its max_buffer behind is marked overflowed and stops holding
//   memory; its owner disconnects it. The fastest non-blocking subscriber
//   paces the output: push() also returns false once it is
//   min(high_water_mark, max_buffer / 2) behind.
//
// Pure: no I/O. Loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace chronomerge {

class Output {
 public:
  using SubscriberId = uint64_t;

  // A fixed-size block of the stream. Shared with in-flight writes so a
  // write may outlive its subscriber.
  struct Chunk {
    uint64_t start = 0;  // stream offset of data[0]
    std::unique_ptr<char[]> data;
    size_t size = 0;
    size_t capacity = 0;
  };
  struct Slice {
    std::shared_ptr<const Chunk> chunk;  // keeps `bytes` alive
    std::string_view bytes;
  };

  static constexpr size_t default_chunk_bytes = 64 << 10;

  explicit Output(size_t high_water_mark, size_t chunk_bytes = default_chunk_bytes);
  Output(const Output&) = delete;
  Output& operator=(const Output&) = delete;

  // --- producer side (the merger) ---

  // Appends `record` and a '\n'. Returns false when the output is full:
  // the caller should stop pushing until the demand callback runs. Pushing
  // while full is allowed (nothing is lost) but defeats backpressure.
  bool push(std::string_view record);
  // Appends several pieces as one record, then '\n' (combine mode).
  bool push_parts(std::initializer_list<std::string_view> parts);
  bool full() const { return head_ >= full_at_; }

  // No more records will come. Subscribers drain what they have, then see
  // ended() && lag == 0.
  void end();
  bool ended() const { return ended_; }

  // Called (from consume() or unsubscribe()) when the output stops being
  // full. Must not destroy the Output.
  void set_demand_callback(std::function<void()> callback) { on_demand_ = std::move(callback); }

  // --- consumer side (sinks) ---

  // A new subscriber starts at the current head, which is always a record
  // boundary. `notify` runs from flush() when it has bytes to take or the
  // output has ended.
  SubscriberId subscribe(size_t max_buffer, bool blocking, std::function<void()> notify);
  void unsubscribe(SubscriberId id);

  // Appends up to `max_bytes` (at least one slice if any is pending) of the
  // subscriber's pending bytes to `out`; returns the bytes added. Does not
  // move the cursor.
  size_t peek(SubscriberId id, std::vector<Slice>& out, size_t max_bytes) const;
  // The subscriber has taken `bytes` (its write completed).
  void consume(SubscriberId id, size_t bytes);
  size_t lag(SubscriberId id) const;
  bool overflowed(SubscriberId id) const;

  // Notifies every subscriber with pending bytes (or at the end). The
  // owner calls it after a merger run, so sinks start writing in batches
  // rather than once per record.
  void flush();

  // --- observation ---
  uint64_t head() const { return head_; }  // bytes pushed in total
  uint64_t records() const { return records_; }
  size_t buffered_bytes() const;  // bytes held in chunks
  size_t subscriber_count() const { return subscribers_.size(); }
  size_t high_water_mark() const { return high_water_mark_; }

 private:
  struct Subscriber {
    uint64_t cursor = 0;
    size_t limit = 0;
    bool blocking = true;
    bool overflowed = false;
    std::function<void()> notify;
  };

  void append(std::string_view bytes);
  void after_push();
  void recompute();
  void trim();

  size_t high_water_mark_;
  size_t chunk_bytes_;
  uint64_t head_ = 0;
  uint64_t records_ = 0;
  bool ended_ = false;
  std::deque<std::shared_ptr<Chunk>> chunks_;
  static constexpr size_t max_spare_chunks = 32;
  std::vector<std::unique_ptr<char[]>> spare_;
  std::unordered_map<SubscriberId, Subscriber> subscribers_;
  SubscriberId next_id_ = 1;
  // push() is O(1): it compares the head with two precomputed positions.
  uint64_t full_at_ = UINT64_MAX;      // min over blocking of cursor + limit
  uint64_t overflow_at_ = UINT64_MAX;  // min over non-blocking of cursor + limit + 1
  std::function<void()> on_demand_;
};

}  // namespace chronomerge
