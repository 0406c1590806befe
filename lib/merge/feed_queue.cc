#include "merge/feed_queue.h"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace chronomerge {

std::shared_ptr<RecordBlock> RecordBlockPool::acquire() {
  // A linear scan: a pool holds a handful of blocks (a queue's high-water
  // mark divided by the block size, plus one or two in flight), and this
  // runs once per block, not per record.
  for (const auto& block : blocks_) {
    if (block.use_count() == 1) return block;
  }
  blocks_.push_back(std::make_shared<RecordBlock>(block_bytes_));
  return blocks_.back();
}

namespace {

// Copy blocks are a fraction of the high-water mark so that a queue with a
// small budget does not hold much more than that budget; the upper bound
// keeps a block comfortably inside the cache-friendly range.
size_t copy_block_bytes(size_t high_water_mark) {
  return std::clamp<size_t>(high_water_mark / 4, 4 << 10, 64 << 10);
}

}  // namespace

FeedQueue::FeedQueue(size_t high_water_mark, size_t low_water_mark)
    : high_(high_water_mark), low_(low_water_mark), copy_pool_(copy_block_bytes(high_water_mark)) {
  assert(low_ < high_);
}

// Room for `n` more bytes in the current copy block, starting a new block
// when they do not fit. A record larger than a pooled block gets a block of
// its own, freed once the record is popped.
char* FeedQueue::copy_space(size_t n) {
  if (!copy_block_ || copy_block_->capacity - copy_used_ < n) {
    std::shared_ptr<RecordBlock> block =
        n <= copy_pool_.block_bytes() ? copy_pool_.acquire() : std::make_shared<RecordBlock>(n);
    copy_block_ = block.get();
    copy_owner_ = std::move(block);
    copy_used_ = 0;
  }
  char* at = copy_block_->data.get() + copy_used_;
  copy_used_ += n;
  return at;
}

void FeedQueue::push(std::string_view bytes, ParsedRecord&& parsed) {
  char* at = copy_space(bytes.size());
  std::memcpy(at, bytes.data(), bytes.size());
  hold(copy_owner_, pushed_);
  make_room(1);
  store(std::string_view(at, bytes.size()), parsed);
}

void FeedQueue::push(std::span<BlockRecord> records, const BlockOwner& owner) {
  if (records.empty()) return;
  hold(owner, pushed_ + records.size() - 1);
  make_room(records.size());
  for (BlockRecord& record : records) store(record.bytes, record.parsed);
}

// Records the records up to sequence number `last` as living in `owner`'s
// block: consecutive records of one block share one reference.
void FeedQueue::hold(const BlockOwner& owner, uint64_t last) {
  if (blocks_.empty() || blocks_.back().owner != owner) {
    blocks_.push_back(BlockRef{owner, last});
  } else {
    blocks_.back().last = last;
  }
}

// Grows the ring (doubling) until `more` records fit.
void FeedQueue::make_room(size_t more) {
  if (count_ + more <= ring_.size()) return;
  size_t size = std::max<size_t>(16, ring_.size());
  while (size < count_ + more) size *= 2;
  std::vector<Slot> slots(size);
  std::vector<std::string> texts(texts_.empty() ? 0 : size);
  for (size_t i = 0; i < count_; ++i) {
    size_t from = (head_ + i) & (ring_.size() - 1);
    slots[i] = ring_[from];
    if (!texts.empty()) texts[i] = std::move(texts_[from]);
  }
  ring_ = std::move(slots);
  texts_ = std::move(texts);
  head_ = 0;
}

// Appends one record. REQUIRES: room for it (make_room).
void FeedQueue::store(std::string_view bytes, ParsedRecord& parsed) {
  const size_t at = (head_ + count_) & (ring_.size() - 1);
  ring_[at] = Slot{parsed.key.ordinal, bytes.data(),      static_cast<uint32_t>(bytes.size()),
                   parsed.key_offset,  parsed.key_length, parsed.heartbeat};
  if (!parsed.key.text.empty() && texts_.empty()) texts_.resize(ring_.size());
  if (!texts_.empty()) texts_[at] = std::move(parsed.key.text);
  bytes_ += bytes.size();
  ++count_;
  ++pushed_;
}

QueuedRecord FeedQueue::front() const {
  const Slot& slot = ring_[head_];
  QueuedRecord record;
  record.key.ordinal = slot.ordinal;
  record.key.text = front_text();
  record.data = slot.data;
  record.length = slot.length;
  record.key_offset = slot.key_offset;
  record.key_length = slot.key_length;
  record.heartbeat = slot.heartbeat;
  return record;
}

const std::string& FeedQueue::front_text() const {
  static const std::string none;
  return texts_.empty() ? none : texts_[head_];
}

std::string_view FeedQueue::front_bytes() const {
  const Slot& slot = ring_[head_];
  return std::string_view(slot.data, slot.length);
}

std::string_view FeedQueue::front_key_text() const {
  const Slot& slot = ring_[head_];
  return std::string_view(slot.data + slot.key_offset, slot.key_length);
}

void FeedQueue::pop() {
  bytes_ -= ring_[head_].length;
  head_ = (head_ + 1) & (ring_.size() - 1);
  --count_;
  // The popped record was the oldest one of the oldest block.
  if (blocks_.front().last == popped_) blocks_.pop_front();
  ++popped_;
  if (count_ == 0) {
    // Nothing points into the copy block any more: refill it from the
    // start rather than moving on to another (colder) block, unless it is
    // an oversized one made for a single long record.
    copy_used_ = 0;
    if (copy_block_ && copy_block_->capacity > copy_pool_.block_bytes()) {
      copy_block_ = nullptr;
      copy_owner_.reset();
    }
  }
}

}  // namespace chronomerge
