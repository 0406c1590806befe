// OffsetLedger: which messages of one Kafka partition are done, and so
// which offset may be committed.
//
// A message is done when its record has been written by every block
// output (OutputLog's written callback), or at once when it makes no
// record (a malformed line, a heartbeat) or its record was dropped as
// late. The committable offset is the first message not yet done: every
// message before it is done, so a restart from it repeats only messages
// after it (at least once). Messages are taken in offset order, as a
// partition delivers them; records may be done out of that order (a
// reorder window sorts them).
//
// Pure. Loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>

namespace chronomerge {

class OffsetLedger {
 public:
  // A message taken from the partition. `done`: it makes no record. An
  // offset not after the last one taken (the consumer was reset to an
  // earlier offset) starts the ledger afresh.
  void taken(int64_t offset, bool done);
  // A message taken earlier is done. Unknown offsets are ignored.
  void settle(int64_t offset);
  // The offset to commit (the first message not done, or the one after
  // the last taken); nullopt before any message was taken.
  std::optional<int64_t> committable() const;
  // Messages taken and not done.
  size_t pending() const { return pending_count_; }

 private:
  struct Entry {
    int64_t offset;
    bool done;
  };
  std::deque<Entry> entries_;    // from the first message not done, in offset order
  std::optional<int64_t> next_;  // the offset after the last taken
  size_t pending_count_ = 0;
};

}  // namespace chronomerge
