#include "output/output.h"

#include <algorithm>
#include <cstring>

namespace chronomerge {

Output::Output(size_t high_water_mark, size_t chunk_bytes)
    : high_water_mark_(high_water_mark), chunk_bytes_(chunk_bytes) {}

void Output::append(std::string_view bytes) {
  while (!bytes.empty()) {
    if (chunks_.empty() || chunks_.back()->size == chunks_.back()->capacity) {
      auto chunk = std::make_shared<Chunk>();
      chunk->start = head_;
      chunk->capacity = chunk_bytes_;
      if (spare_.empty()) {
        chunk->data.reset(new char[chunk_bytes_]);
      } else {
        chunk->data = std::move(spare_.back());
        spare_.pop_back();
      }
      chunks_.push_back(std::move(chunk));
    }
    Chunk& chunk = *chunks_.back();
    size_t n = std::min(bytes.size(), chunk.capacity - chunk.size);
    std::memcpy(chunk.data.get() + chunk.size, bytes.data(), n);
    chunk.size += n;
    head_ += n;
    bytes.remove_prefix(n);
  }
}

bool Output::push(std::string_view record) {
  // Fast path, nearly every record: it fits in the chunk being filled, so
  // the record and its newline are stored with one copy and no chunk logic.
  Chunk* chunk = chunks_.empty() ? nullptr : chunks_.back().get();
  if (chunk && chunk->capacity - chunk->size > record.size()) {
    char* at = chunk->data.get() + chunk->size;
    std::memcpy(at, record.data(), record.size());
    at[record.size()] = '\n';
    chunk->size += record.size() + 1;
    head_ += record.size() + 1;
  } else {
    append(record);
    append("\n");
  }
  after_push();
  return !full();
}

bool Output::push_parts(std::initializer_list<std::string_view> parts) {
  for (std::string_view part : parts) append(part);
  append("\n");
  after_push();
  return !full();
}

void Output::after_push() {
  ++records_;
  if (subscribers_.empty()) {
    trim();  // nobody listens: the bytes are gone once written
  } else if (head_ >= overflow_at_) {
    recompute();
    trim();
  }
}

void Output::end() {
  ended_ = true;
}

Output::SubscriberId Output::subscribe(size_t max_buffer, bool blocking,
                                       std::function<void()> notify) {
  SubscriberId id = next_id_++;
  Subscriber& sub = subscribers_[id];
  sub.cursor = head_;
  sub.blocking = blocking;
  sub.limit = blocking ? std::min(max_buffer, high_water_mark_) : max_buffer;
  sub.notify = std::move(notify);
  recompute();
  return id;
}

void Output::unsubscribe(SubscriberId id) {
  bool was_full = full();
  subscribers_.erase(id);
  recompute();
  trim();
  if (was_full && !full() && on_demand_) on_demand_();
}

size_t Output::peek(SubscriberId id, std::vector<Slice>& out, size_t max_bytes) const {
  auto it = subscribers_.find(id);
  if (it == subscribers_.end() || it->second.overflowed) return 0;
  uint64_t pos = it->second.cursor;
  size_t added = 0;
  // Chunks are contiguous in stream offsets: find the one holding `pos`.
  auto chunk_it = std::upper_bound(chunks_.begin(), chunks_.end(), pos,
                                   [](uint64_t p, const auto& c) { return p < c->start; });
  if (chunk_it == chunks_.begin()) return 0;
  for (--chunk_it; chunk_it != chunks_.end() && pos < head_; ++chunk_it) {
    const auto& chunk = *chunk_it;
    size_t from = pos - chunk->start;
    size_t n = chunk->size - from;
    if (added > 0 && added + n > max_bytes) break;
    out.push_back(Slice{chunk, std::string_view(chunk->data.get() + from, n)});
    added += n;
    pos += n;
  }
  return added;
}

void Output::consume(SubscriberId id, size_t bytes) {
  auto it = subscribers_.find(id);
  if (it == subscribers_.end()) return;
  bool was_full = full();
  it->second.cursor = std::min<uint64_t>(it->second.cursor + bytes, head_);
  recompute();
  trim();
  if (was_full && !full() && on_demand_) on_demand_();
}

size_t Output::lag(SubscriberId id) const {
  auto it = subscribers_.find(id);
  return it == subscribers_.end() ? 0 : head_ - it->second.cursor;
}

bool Output::overflowed(SubscriberId id) const {
  auto it = subscribers_.find(id);
  return it != subscribers_.end() && it->second.overflowed;
}

void Output::flush() {
  // Collect first: a notify callback may unsubscribe (itself or others).
  std::vector<SubscriberId> ready;
  for (const auto& [id, sub] : subscribers_) {
    if (sub.cursor < head_ || ended_ || sub.overflowed) ready.push_back(id);
  }
  for (SubscriberId id : ready) {
    auto it = subscribers_.find(id);
    if (it != subscribers_.end() && it->second.notify) {
      auto notify = it->second.notify;  // the callback may erase the entry
      notify();
    }
  }
}

size_t Output::buffered_bytes() const {
  size_t total = 0;
  for (const auto& chunk : chunks_) total += chunk->size;
  return total;
}

void Output::recompute() {
  uint64_t blocking_at = UINT64_MAX;
  // Non-blocking subscribers are paced by the fastest of them: the merge
  // stops when even that one is half its max_buffer (or the high-water
  // mark) behind. Without this pace nothing would hold the merge back,
  // bursts would overflow every client, fast ones included; with it, a
  // client that keeps up stays well inside its max_buffer while slower
  // ones fall behind and are dropped.
  uint64_t pace_at = 0;
  bool any_nonblocking = false;
  overflow_at_ = UINT64_MAX;
  for (auto& [id, sub] : subscribers_) {
    if (sub.overflowed) continue;
    if (sub.blocking) {
      blocking_at = std::min(blocking_at, sub.cursor + sub.limit);
    } else if (head_ - sub.cursor > sub.limit) {
      sub.overflowed = true;
    } else {
      any_nonblocking = true;
      size_t pace = std::min(high_water_mark_, std::max<size_t>(1, sub.limit / 2));
      pace_at = std::max(pace_at, sub.cursor + pace);
      overflow_at_ = std::min(overflow_at_, sub.cursor + sub.limit + 1);
    }
  }
  full_at_ = any_nonblocking ? std::min(blocking_at, pace_at) : blocking_at;
}

void Output::trim() {
  uint64_t keep_from = head_;
  for (const auto& [id, sub] : subscribers_) {
    if (!sub.overflowed) keep_from = std::min(keep_from, sub.cursor);
  }
  // Keep the chunk being filled (it is reused for the next push) unless
  // everything in it has been taken.
  while (!chunks_.empty()) {
    const Chunk& front = *chunks_.front();
    bool taken = front.start + front.size <= keep_from;
    bool filling = chunks_.size() == 1 && front.size < front.capacity;
    if (!taken || filling) break;
    // Recycle the block unless an in-flight write still points into it:
    // fresh blocks cost page faults on every chunk of the stream.
    if (chunks_.front().use_count() == 1 && spare_.size() < max_spare_chunks) {
      spare_.push_back(std::move(chunks_.front()->data));
    }
    chunks_.pop_front();
  }
}

}  // namespace chronomerge
