#include "merge/feed_queue.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <cstring>

namespace chronomerge {

std::shared_ptr<RecordBlock> RecordBlockPool::acquire() {
  // A linear scan: a pool holds a handful of blocks (a queue's high-water
  // mark divided by the block size, plus one or two in flight), and this
  // runs once per block, not per record. Free blocks beyond max_free are
  // let go on the way.
  std::shared_ptr<RecordBlock> found;
  size_t spare = 0;
  std::erase_if(blocks_, [&](const std::shared_ptr<RecordBlock>& block) {
    if (block.use_count() != 1) return false;
    if (!found) {
      found = block;
      return false;
    }
    return ++spare > max_free_;
  });
  if (found) return found;
  blocks_.push_back(std::make_shared<RecordBlock>(block_bytes_));
  return blocks_.back();
}

namespace {

// Smaller blocks are not compacted (see compact_front()): not worth it.
constexpr size_t min_compact_bytes = 4 << 10;

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
  hold(BlockOwner(copy_owner_), pushed_, bytes.size());
  make_room(1);
  const size_t i = (head_ + count_) & (ring_.size() - 1);
  Slot& slot = ring_[i];
  slot.ordinal = parsed.key.ordinal;
  slot.data = at;
  slot.length = static_cast<uint32_t>(bytes.size());
  slot.key_offset = parsed.key_offset;
  slot.key_length = parsed.key_length;
  slot.heartbeat = parsed.heartbeat;
  if (!parsed.key.text.empty() && texts_.empty()) texts_.resize(ring_.size());
  if (!texts_.empty()) texts_[i] = std::move(parsed.key.text);
  if (parsed.origin != 0 && origins_.empty()) origins_.resize(ring_.size());
  if (!origins_.empty()) origins_[i] = parsed.origin;
  added(1, bytes.size());
}

// The slots as the run brings them, in one copy (two where the ring
// wraps): a run is a whole read, hundreds of records.
void FeedQueue::push(const RecordRun& run) {
  const size_t n = run.records.size();
  if (n == 0) return;
  assert(run.texts.empty() || run.texts.size() == n);
  make_room(n);
  const size_t mask = ring_.size() - 1;
  const size_t at = (head_ + count_) & mask;
  const size_t first = std::min(n, ring_.size() - at);
  std::copy_n(run.records.begin(), first, ring_.begin() + static_cast<ptrdiff_t>(at));
  std::copy_n(run.records.begin() + static_cast<ptrdiff_t>(first), n - first, ring_.begin());
  size_t bytes = 0;
  for (const BlockRecord& record : run.records) bytes += record.length;
  if (texts_.empty() && run.any_text()) texts_.resize(ring_.size());
  if (!texts_.empty()) {
    for (size_t i = 0; i < n; ++i) {
      std::string& text = texts_[(at + i) & mask];
      if (run.texts.empty()) {
        text.clear();
      } else {
        text = std::move(run.texts[i]);
      }
    }
  }
  if (!origins_.empty()) {
    for (size_t i = 0; i < n; ++i) origins_[(at + i) & mask] = 0;  // runs track none
  }
  added(n, bytes);
  hold(run.block, pushed_ - 1, bytes);
}

// After `n` records of `bytes` bytes were stored behind the others.
void FeedQueue::added(size_t n, size_t bytes) {
  bytes_ += bytes;
  count_ += n;
  peak_count_ = std::max(peak_count_, count_);
  pushed_ += n;
}

// Records the records up to sequence number `last` as living in `owner`'s
// block: consecutive records of one block share one reference.
void FeedQueue::hold(const BlockOwner& owner, uint64_t last, size_t record_bytes) {
  if (!blocks_.empty() && blocks_.back().owner == owner.memory) {
    BlockRef& back = blocks_.back();
    back.last = last;
    back.record_bytes += record_bytes;
    if (!back.sized) pinned_ += record_bytes;
    return;
  }
  BlockRef ref{owner.memory, last, 0, record_bytes, owner.bytes != 0};
  if (!ref.sized) {
    pinned_ += record_bytes;
  } else {
    // A block counts once. Runs of one block are split only by a few
    // records of another (a line that spanned two reads), so the last few
    // entries are enough to look at; the newest entry of a block carries
    // its charge, so that the block counts until its last record is popped.
    auto earlier =
        std::find_if(blocks_.rbegin(), blocks_.rbegin() + std::min<size_t>(blocks_.size(), 4),
                     [&](const BlockRef& other) { return other.owner == owner.memory; });
    if (earlier != blocks_.rbegin() + std::min<size_t>(blocks_.size(), 4)) {
      std::swap(ref.charge, earlier->charge);
    } else {
      ref.charge = owner.bytes;
      pinned_ += owner.bytes;
      // Those bytes were in flight until now.
      in_flight_ -= std::min(in_flight_, owner.bytes);
    }
  }
  blocks_.push_back(std::move(ref));
}

// Grows the ring (doubling) until `more` records fit.
void FeedQueue::make_room(size_t more) {
  if (count_ + more <= ring_.size()) return;
  size_t size = std::max(min_ring_slots, ring_.size());
  while (size < count_ + more) size *= 2;
  resize_ring(size);
}

// A ring of `size` slots (a power of two, at least count_) with the
// queued records from its start.
void FeedQueue::resize_ring(size_t size) {
  std::vector<Slot> slots(size);
  std::vector<std::string> texts(texts_.empty() ? 0 : size);
  std::vector<uint64_t> origins(origins_.empty() ? 0 : size);
  for (size_t i = 0; i < count_; ++i) {
    size_t from = (head_ + i) & (ring_.size() - 1);
    slots[i] = ring_[from];
    if (!texts.empty()) texts[i] = std::move(texts_[from]);
    if (!origins.empty()) origins[i] = origins_[from];
  }
  ring_ = std::move(slots);
  texts_ = std::move(texts);
  origins_ = std::move(origins);
  head_ = 0;
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

// What pop() leaves to here: the oldest block's last record popped, the
// queue run empty, or a lone block that may be compacted.
void FeedQueue::popped_rare(bool block_done) {
  if (block_done) {
    pinned_ -= blocks_.front().charge;
    blocks_.pop_front();
  }
  if (count_ != 0) {
    compact_front();
  } else {
    assert(pinned_ == 0);
    ran_empty();
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

// The queue ran empty. A ring grown for a burst (a producer's backlog
// after a reconnect) would otherwise keep its slots for as long as the
// feed lives: a fleet member that once queued 600 records keeps 32 KiB,
// a thousand of them 32 MiB. recent_peak_ remembers the largest spell
// between two empty queues, halving at each, and the ring shrinks once it
// is over four times what that needs: a feed whose queue drains between
// bursts of one size keeps its ring (no regrowth, with its page faults,
// at every burst), and one back to a record at a time gives its slots
// back within a few records. Empty, the ring is replaced, not copied.
void FeedQueue::ran_empty() {
  recent_peak_ = std::max(peak_count_, recent_peak_ / 2);
  peak_count_ = 0;
  const size_t want = std::max(min_ring_slots, std::bit_ceil(2 * recent_peak_));
  if (ring_.size() > 4 * want) resize_ring(want);
}

// The only block left, of known size, down to a few records: they are
// copied into memory of their own, exactly their size, and the block is
// let go. A block with others queued (or in flight) behind it is being
// merged through and goes soon anyway; the one left behind is what a
// producer that sent a burst and went quiet would otherwise pin for as
// long as its records wait.
// Each block is copied from at most once, and then only an eighth of it.
void FeedQueue::compact_front() {
  if (blocks_.size() != 1 || in_flight_ != 0) return;
  BlockRef& front = blocks_.front();
  if (!front.sized || front.charge < min_compact_bytes ||
      front.record_bytes * compact_share > front.charge) {
    return;
  }
  auto copy = std::make_shared<RecordBlock>(front.record_bytes);
  char* at = copy->data.get();
  for (uint64_t seq = popped_; seq <= front.last; ++seq) {
    Slot& slot = ring_[(head_ + (seq - popped_)) & (ring_.size() - 1)];
    std::memcpy(at, slot.data, slot.length);
    slot.data = at;
    at += slot.length;
  }
  pinned_ = pinned_ - front.charge + front.record_bytes;
  front.owner = std::move(copy);
  front.charge = 0;
  front.sized = false;
}

}  // namespace chronomerge
