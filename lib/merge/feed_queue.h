// FeedQueue: the records of one feed waiting to be merged, in arrival order.
//
// Bounded by the caller through two water marks: bytes() reaching the high
// mark means "pause the transport", dropping to the low mark means "resume".
// The queue itself never refuses a push (a transport may deliver a whole
// read chunk past the mark); the marks only drive the decision.
//
// Storage. A record's bytes are never moved once queued: each record is a
// view into a *block*, and the queue holds a reference to every block that
// still has a queued record, releasing blocks in FIFO order as their last
// record is popped. A transport that reads into blocks of its own (a file
// feed's read buffers) hands whole runs of records over with the zero-copy
// push(); the copying push() appends into blocks the queue allocates and
// recycles.
//
// Loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "record/record_parser.h"

namespace chronomerge {

// Shared ownership of the memory some records' bytes live in. The owner's
// type does not matter to the queue; it only keeps the memory alive.
using BlockOwner = std::shared_ptr<const void>;

// A reusable fixed-size byte buffer for record data.
struct RecordBlock {
  explicit RecordBlock(size_t capacity) : data(new char[capacity]), capacity(capacity) {}
  std::unique_ptr<char[]> data;
  size_t capacity;
};

// Hands out blocks of one size, reusing those nobody references any more.
// Fresh memory costs a page fault per 4 KiB on first touch, which at
// hundreds of MB/s is as expensive as the copy it replaced; a block comes
// back once every queue that referenced it has dropped it.
//
// The count of references is exact only because every copy of a block's
// pointer is made and dropped on one thread (the loop thread); other
// threads may use a block's memory while a reference is held for them.
class RecordBlockPool {
 public:
  explicit RecordBlockPool(size_t block_bytes) : block_bytes_(block_bytes) {}
  size_t block_bytes() const { return block_bytes_; }
  // A block referenced by nobody else, new if none is free. The pool keeps
  // a reference to every block it made (it holds at most as many as were
  // in use at once), so the caller's is the second.
  std::shared_ptr<RecordBlock> acquire();
  // Lets go of every block; those still in use are freed by their users.
  void release() { blocks_.clear(); }

 private:
  size_t block_bytes_;
  std::vector<std::shared_ptr<RecordBlock>> blocks_;
};

// A record inside a block, as a transport hands over a whole read of them.
struct BlockRecord {
  std::string_view bytes;
  ParsedRecord parsed;
};

// A queued record, as front() shows it.
struct QueuedRecord {
  Key key;
  const char* data = nullptr;  // in a block the queue holds a reference to
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
  // Zero-copy, for a run of records in arrival order: queues views of
  // their bytes, which must lie in memory that `owner` keeps alive and that
  // nobody changes while a reference to `owner` exists. The queue holds a
  // reference until the last of them is popped. Keys are moved out.
  void push(std::span<BlockRecord> records, const BlockOwner& owner);

  bool empty() const { return count_ == 0; }
  size_t size() const { return count_; }
  // Bytes of record data held (what the water marks compare against). The
  // memory held is larger by at most the popped part of the oldest block.
  size_t bytes() const { return bytes_; }

  // The oldest record. REQUIRES: !empty(). A copy, for tests and rare
  // paths; the merge loop uses the accessors below, which copy nothing.
  QueuedRecord front() const;
  // REQUIRES: !empty(). The views and the reference stay valid until this
  // record is popped.
  int64_t front_ordinal() const { return ring_[head_].ordinal; }
  const std::string& front_text() const;  // the key's text (string keys)
  bool front_heartbeat() const { return ring_[head_].heartbeat; }
  std::string_view front_bytes() const;
  std::string_view front_key_text() const;  // the key as written
  void pop();

  bool at_or_above_high() const { return bytes_ >= high_; }
  bool at_or_below_low() const { return bytes_ <= low_; }
  size_t high_water_mark() const { return high_; }
  size_t low_water_mark() const { return low_; }
  // A reload may change the marks; the caller re-checks pause/resume.
  // REQUIRES: low_water_mark < high_water_mark.
  void set_water_marks(size_t high_water_mark, size_t low_water_mark) {
    high_ = high_water_mark;
    low_ = low_water_mark;
  }

 private:
  // A queued record as stored: a QueuedRecord without the key's text, half
  // its size (32 bytes). Key texts (string keys only) live in texts_.
  struct Slot {
    int64_t ordinal;
    const char* data;
    uint32_t length;
    uint32_t key_offset;
    uint32_t key_length;
    bool heartbeat;
  };
  // A block some queued records point into, with the sequence number of
  // the last of them: once that record is popped the reference is dropped.
  // Consecutive records of one block share one entry.
  struct BlockRef {
    BlockOwner owner;
    uint64_t last;
  };

  void hold(const BlockOwner& owner, uint64_t last);
  void make_room(size_t more);
  void store(std::string_view bytes, ParsedRecord& parsed);
  char* copy_space(size_t n);

  size_t high_;
  size_t low_;
  size_t bytes_ = 0;
  // The records, a ring: ring_[head_] is the oldest of count_. A ring
  // rather than a std::deque because a deque allocates and frees a node
  // every few records, which showed up as malloc/free and page faults on
  // the loop thread; compact slots because the ring of a 1 MiB queue holds
  // some 10,000 records and first touches of its memory are page faults
  // too. Its size is a power of two; it grows, never shrinks.
  std::vector<Slot> ring_;
  // Parallel to ring_ once a key with text has been pushed, empty before
  // (until then every key's text is empty).
  std::vector<std::string> texts_;
  size_t head_ = 0;
  size_t count_ = 0;
  std::deque<BlockRef> blocks_;
  uint64_t pushed_ = 0;  // sequence number of the next record pushed
  uint64_t popped_ = 0;  // records popped so far
  // The copying push() appends into copy_block_ until it is full;
  // copy_owner_ is the same block as the type blocks_ holds.
  RecordBlockPool copy_pool_;
  RecordBlock* copy_block_ = nullptr;
  BlockOwner copy_owner_;
  size_t copy_used_ = 0;
};

}  // namespace chronomerge
