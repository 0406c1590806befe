// FeedQueue: the records of one feed waiting to be merged, in arrival order.
//
// Bounded by the caller through two water marks: bytes() reaching the high
// mark means "pause the transport", dropping to the low mark means "resume".
// The queue itself never refuses a push (a transport may deliver a whole
// read chunk past the mark); the marks only drive the decision.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

#include "record/record_parser.h"

namespace chronomerge {

struct QueuedRecord {
  Key key;
  size_t offset = 0;  // into the queue's byte store
  uint32_t length = 0;
  uint32_t key_offset = 0;  // the key's JSON text within the record
  uint32_t key_length = 0;
  bool heartbeat = false;
};

class FeedQueue {
 public:
  // REQUIRES: 0 <= low_water_mark < high_water_mark.
  FeedQueue(size_t high_water_mark, size_t low_water_mark);

  // Copies `bytes` in; the key is moved out of `parsed`.
  void push(std::string_view bytes, ParsedRecord&& parsed);

  bool empty() const { return entries_.empty(); }
  size_t size() const { return entries_.size(); }
  // Bytes of record data held (what the water marks compare against).
  size_t bytes() const { return bytes_; }

  // REQUIRES: !empty(). Views stay valid until the next push() or pop().
  const QueuedRecord& front() const { return entries_.front(); }
  std::string_view front_bytes() const;
  std::string_view front_key_text() const;
  void pop();

  bool at_or_above_high() const { return bytes_ >= high_; }
  bool at_or_below_low() const { return bytes_ <= low_; }
  size_t high_water_mark() const { return high_; }
  size_t low_water_mark() const { return low_; }

 private:
  size_t high_;
  size_t low_;
  size_t bytes_ = 0;
  std::deque<QueuedRecord> entries_;
  // Record bytes back to back; data_[head_..] is live. Compacted once the
  // dead prefix outgrows the live part, so each byte moves O(1) times.
  std::string data_;
  size_t head_ = 0;
};

}  // namespace chronomerge
