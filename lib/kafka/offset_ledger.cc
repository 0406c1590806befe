#include "kafka/offset_ledger.h"

#include <algorithm>

namespace chronomerge {

void OffsetLedger::taken(int64_t offset, bool done) {
  if (next_ && offset < *next_) {
    entries_.clear();
    pending_count_ = 0;
  }
  next_ = offset + 1;
  // Only messages behind one that is not done need remembering.
  if (done && entries_.empty()) return;
  entries_.push_back(Entry{offset, done});
  if (!done) ++pending_count_;
}

void OffsetLedger::settle(int64_t offset) {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), offset,
                             [](const Entry& e, int64_t o) { return e.offset < o; });
  if (it == entries_.end() || it->offset != offset || it->done) return;
  it->done = true;
  --pending_count_;
  while (!entries_.empty() && entries_.front().done) entries_.pop_front();
}

std::optional<int64_t> OffsetLedger::committable() const {
  if (!entries_.empty()) return entries_.front().offset;
  return next_;
}

}  // namespace chronomerge
