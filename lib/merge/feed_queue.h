// FeedQueue: the records of one feed waiting to be merged, in arrival order.
//
// Bounded by the caller through two water marks: memory() reaching the
// high mark means "pause the transport", dropping to the low mark means
// "resume". The queue itself never refuses a push (a transport may deliver
// a whole read chunk past the mark); the marks only drive the decision.
//
// Memory, not record bytes, is what the marks compare: a queued record
// keeps its whole block alive, so a block of known size counts with all
// its bytes from its first queued record to its last one's pop, and the
// bytes a transport has read but not yet queued (a block being framed on
// another thread) count as "in flight", and every queued record adds its
// slot in the ring (slot_bytes), so that a feed of very short lines is
// bounded too. A block reduced to a few records
// (an eighth of its bytes or less, none queued or in flight behind it) has
// them copied into memory of their own and is let go, so that a queue left
// with a handful of records does not pin a whole read buffer.
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

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "record/record_parser.h"

namespace chronomerge {

// Shared ownership of the memory some records' bytes live in, and how many
// bytes that memory occupies. The memory's type does not matter to the
// queue; it only keeps it alive. `bytes` 0 means "unknown": such a block
// counts with the bytes of its queued records only.
struct BlockOwner {
  BlockOwner() = default;
  template <typename T>
  BlockOwner(std::shared_ptr<T> memory, size_t bytes = 0)  // NOLINT: implicit by design
      : memory(std::move(memory)), bytes(bytes) {}
  std::shared_ptr<const void> memory;
  size_t bytes = 0;
};

// A reusable fixed-size byte buffer for record data.
struct RecordBlock {
  explicit RecordBlock(size_t capacity) : data(new char[capacity]), capacity(capacity) {}
  // A block of exactly their size holding a copy of `bytes`: what a short
  // read or a few assembled lines get, so as to pin no more than they need.
  static std::shared_ptr<RecordBlock> copy_of(std::string_view bytes) {
    auto block = std::make_shared<RecordBlock>(bytes.size());
    std::memcpy(block->data.get(), bytes.data(), bytes.size());
    return block;
  }
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
  // Keeps at most `max_free` blocks nobody uses besides the one acquire()
  // returns next.
  explicit RecordBlockPool(size_t block_bytes, size_t max_free = SIZE_MAX)
      : block_bytes_(block_bytes), max_free_(max_free) {}
  size_t block_bytes() const { return block_bytes_; }
  // A block referenced by nobody else, new if none is free. The pool keeps
  // a reference to every block it made (it holds at most as many as were
  // in use at once, trimmed to max_free free ones), so the caller's is the
  // second.
  std::shared_ptr<RecordBlock> acquire();
  // Blocks the pool holds, in use or not.
  size_t size() const { return blocks_.size(); }
  // Lets go of every block; those still in use are freed by their users.
  void release() { blocks_.clear(); }

 private:
  size_t block_bytes_;
  size_t max_free_;
  std::vector<std::shared_ptr<RecordBlock>> blocks_;
};

// Consecutive records of one block, in arrival order, as a transport
// hands over a whole read of them.
struct RecordRun {
  std::span<BlockRecord> records;
  BlockOwner block;
  // The keys' texts, parallel to `records`, or empty where no key has one
  // (every key type but string).
  std::span<std::string> texts = {};

  size_t size() const { return records.size(); }
  // Whether any key has text (string keys; an empty string has none).
  bool any_text() const {
    return std::any_of(texts.begin(), texts.end(), [](const std::string& t) { return !t.empty(); });
  }
  // The key of records[i], and all that was parsed of it (copies: for
  // rare paths).
  Key key(size_t i) const {
    return Key{records[i].ordinal, texts.empty() ? std::string() : texts[i]};
  }
  ParsedRecord parsed(size_t i) const {
    ParsedRecord parsed;
    parsed.key = key(i);
    parsed.key_offset = records[i].key_offset;
    parsed.key_length = records[i].key_length;
    parsed.heartbeat = records[i].heartbeat;
    return parsed;
  }
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
  // their bytes, which must lie in memory that `run.block` keeps alive and
  // that nobody changes while a reference to it exists. The queue holds a
  // reference until the last of them is popped. Key texts are moved out.
  // A block of known size counts once however many runs it is pushed in;
  // its bytes are taken from those in flight (set_in_flight()), which they
  // were until now.
  void push(const RecordRun& run);

  // Bytes the transport has read for this queue and not yet pushed (a
  // block framed and validated on another thread). Pushing a block of
  // known size lowers it by that size; the transport sets it to 0 once a
  // batch is fully pushed. The caller re-checks pause/resume.
  void set_in_flight(size_t bytes) { in_flight_ = bytes; }
  size_t in_flight() const { return in_flight_; }

  bool empty() const { return count_ == 0; }
  size_t size() const { return count_; }
  // Bytes of record data held.
  size_t bytes() const { return bytes_; }
  // What the water marks compare against: the bytes of every block of
  // known size a queued record pins, the record bytes of the others (the
  // queue's own copy blocks, blocks of unknown size), the bytes in flight,
  // and slot_bytes for every queued record's slot in the ring.
  size_t memory() const { return pinned_ + in_flight_ + count_ * slot_bytes; }
  // What a queued record costs the queue besides its bytes and its block.
  static constexpr size_t slot_bytes = sizeof(BlockRecord);
  // How many blocks queued records pin (one per run of consecutive records
  // in one block).
  size_t pinned_blocks() const { return blocks_.size(); }
  // Records the ring has room for now (see ring_): a power of two, at
  // least min_ring_slots once anything was pushed.
  size_t ring_slots() const { return ring_.size(); }
  static constexpr size_t min_ring_slots = 16;

  // The oldest record. REQUIRES: !empty(). A copy, for tests and rare
  // paths; the merge loop uses the accessors below, which copy nothing.
  QueuedRecord front() const;
  // REQUIRES: !empty(). The views and the reference stay valid until this
  // record is popped.
  int64_t front_ordinal() const { return ring_[head_].ordinal; }
  const std::string& front_text() const;  // the key's text (string keys)
  bool front_heartbeat() const { return ring_[head_].heartbeat; }
  // ParsedRecord::origin of the oldest record (0 if untracked).
  uint64_t front_origin() const { return origins_.empty() ? 0 : origins_[head_]; }
  std::string_view front_bytes() const;
  // Where front_bytes() begins, without the bounds a view needs.
  const char* front_data() const { return ring_[head_].data; }
  const void* front_slot() const { return &ring_[head_]; }
  std::string_view front_key_text() const;  // the key as written
  // Inline: the merge pops every record it emits, and what a pop usually
  // does is a few counters; letting a block go, a queue run empty and a
  // compaction are left to popped_rare().
  void pop() {
    const size_t length = ring_[head_].length;
    bytes_ -= length;
    head_ = (head_ + 1) & (ring_.size() - 1);
    --count_;
    // The ring's slots were written a whole queue ago (at the marks some
    // ten thousand records, with eight feeds some 4 MiB of slots): gone
    // from the cache, and with every other pop a load of the next slot
    // waited on memory (half of Merger::run()'s samples in the 8-feed
    // live benchmark). Two lines ahead is far enough: the feed's next
    // pops are a merge step or more apart.
    __builtin_prefetch(&ring_[(head_ + 4) & (ring_.size() - 1)]);
    // The popped record was the oldest one of the oldest block.
    BlockRef& front = blocks_.front();
    front.record_bytes -= length;
    if (!front.sized) pinned_ -= length;
    const bool block_done = front.last == popped_;
    ++popped_;
    if (block_done || count_ == 0 ||
        (front.sized && front.record_bytes * compact_share <= front.charge && in_flight_ == 0 &&
         blocks_.size() == 1)) {
      popped_rare(block_done);
    }
  }

  bool at_or_above_high() const { return memory() >= high_; }
  bool at_or_below_low() const { return memory() <= low_; }
  size_t high_water_mark() const { return high_; }
  size_t low_water_mark() const { return low_; }
  // A reload may change the marks; the caller re-checks pause/resume.
  // REQUIRES: low_water_mark < high_water_mark.
  void set_water_marks(size_t high_water_mark, size_t low_water_mark) {
    high_ = high_water_mark;
    low_ = low_water_mark;
  }

 private:
  // A queued record as stored: as a run brings it, a QueuedRecord without
  // the key's text, half its size. Key texts (string keys only) live in
  // texts_.
  using Slot = BlockRecord;
  // A block some queued records point into, with the sequence number of
  // the last of them: once that record is popped the reference is dropped.
  // Consecutive records of one block share one entry. `charge` is what the
  // entry adds to memory() as a whole (a block of known size, counted by
  // the newest entry of that block); entries of blocks of unknown size
  // count their records one by one instead.
  struct BlockRef {
    std::shared_ptr<const void> owner;
    uint64_t last;
    size_t charge = 0;
    size_t record_bytes = 0;  // bytes of its records still queued
    bool sized = false;
  };

  void hold(const BlockOwner& owner, uint64_t last, size_t record_bytes);
  void added(size_t n, size_t bytes);
  // A block reduced to this share of its bytes (or less) by pops, the
  // last one queued, has its remaining records copied out (see
  // compact_front()).
  static constexpr size_t compact_share = 8;
  void popped_rare(bool block_done);
  void compact_front();
  void make_room(size_t more);
  void resize_ring(size_t size);
  void ran_empty();
  char* copy_space(size_t n);

  size_t high_;
  size_t low_;
  size_t bytes_ = 0;
  size_t pinned_ = 0;     // memory() without in_flight_
  size_t in_flight_ = 0;  // see set_in_flight()
  // The records, a ring: ring_[head_] is the oldest of count_. A ring
  // rather than a std::deque because a deque allocates and frees a node
  // every few records, which showed up as malloc/free and page faults on
  // the loop thread; compact slots because the ring of a 1 MiB queue holds
  // some 10,000 records and first touches of its memory are page faults
  // too. Its size is a power of two; it grows as records come and shrinks
  // only once the queue has run empty after far smaller spells than the
  // one it grew for (ran_empty()).
  std::vector<Slot> ring_;
  // Parallel to ring_ once a key with text has been pushed, empty before
  // (until then every key's text is empty).
  std::vector<std::string> texts_;
  // Parallel to ring_ once a record with an origin has been pushed (a
  // Kafka partition's), empty before.
  std::vector<uint64_t> origins_;
  size_t head_ = 0;
  size_t count_ = 0;
  size_t peak_count_ = 0;   // the most records queued since the queue was last empty
  size_t recent_peak_ = 0;  // the largest such peak, halving at every empty queue
  std::deque<BlockRef> blocks_;
  uint64_t pushed_ = 0;  // sequence number of the next record pushed
  uint64_t popped_ = 0;  // records popped so far
  // The copying push() appends into copy_block_ until it is full;
  // copy_owner_ is the same block as the type blocks_ holds.
  RecordBlockPool copy_pool_;
  RecordBlock* copy_block_ = nullptr;
  std::shared_ptr<const void> copy_owner_;
  size_t copy_used_ = 0;
};

}  // namespace chronomerge
