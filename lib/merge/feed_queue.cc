#include "merge/feed_queue.h"

#include <cassert>

namespace chronomerge {

FeedQueue::FeedQueue(size_t high_water_mark, size_t low_water_mark)
    : high_(high_water_mark), low_(low_water_mark) {
  assert(low_ < high_);
}

void FeedQueue::push(std::string_view bytes, ParsedRecord&& parsed) {
  if (head_ > 0 && head_ >= data_.size() - head_) {
    data_.erase(0, head_);
    for (auto& entry : entries_) entry.offset -= head_;
    head_ = 0;
  }
  QueuedRecord entry;
  entry.key = std::move(parsed.key);
  entry.offset = data_.size();
  entry.length = static_cast<uint32_t>(bytes.size());
  entry.key_offset = parsed.key_offset;
  entry.key_length = parsed.key_length;
  entry.heartbeat = parsed.heartbeat;
  data_.append(bytes);
  bytes_ += bytes.size();
  entries_.push_back(std::move(entry));
}

std::string_view FeedQueue::front_bytes() const {
  const QueuedRecord& entry = entries_.front();
  return std::string_view(data_).substr(entry.offset, entry.length);
}

std::string_view FeedQueue::front_key_text() const {
  const QueuedRecord& entry = entries_.front();
  return std::string_view(data_).substr(entry.offset + entry.key_offset, entry.key_length);
}

void FeedQueue::pop() {
  const QueuedRecord& entry = entries_.front();
  bytes_ -= entry.length;
  head_ += entry.length;
  entries_.pop_front();
  if (entries_.empty()) {
    data_.clear();
    head_ = 0;
  }
}

}  // namespace chronomerge
