// OutputCursor: one consumer's position in the OutputLog, and the only way
// a sink reads it.
//
// Subscribes on construction and unsubscribes on close() or destruction,
// so a reader can neither leak its subscription (which would hold the
// merge) nor read after giving it up. Every writer of the merged stream —
// a client's socket, a file, standard output, the dead-letter file — reads
// through one of these: take what is pending with peek(), write it, and
// consume() it once the write completed.
//
// Pure: no I/O. Loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "output/output_log.h"

namespace chronomerge {

class OutputCursor {
 public:
  // `notify` runs when there is something to read (or the log ended, or
  // this reader was dropped); see OutputLog::subscribe.
  OutputCursor(OutputLog& log, OutputLog::ConsumerOptions options, std::function<void()> notify)
      : log_(&log), id_(log.subscribe(std::move(options), std::move(notify))) {}
  ~OutputCursor() { close(); }
  OutputCursor(const OutputCursor&) = delete;
  OutputCursor& operator=(const OutputCursor&) = delete;

  // Gives up the position: the log no longer waits for this reader.
  void close();
  bool open() const { return log_ != nullptr; }

  // Appends up to `max_bytes` of what this reader has not taken to `out`
  // (views that keep their segments alive); returns the bytes added.
  size_t peek(std::vector<OutputLog::Slice>& out, size_t max_bytes);
  // The reader has taken `bytes`: all of the last peek() (the cursor then
  // moves past records a filter skipped, too), or, without a filter, a
  // prefix of it ending on a record boundary. May run the log's demand
  // callback.
  void consume(size_t bytes);
  // Bytes between this reader and the head; 0 once closed.
  size_t lag() const;
  // Why the log dropped this reader (DropReason::none while it may read).
  DropReason dropped() const;
  uint64_t held_ms() const;
  // The log ended and this reader has taken everything.
  bool at_end() const;
  bool output_ended() const;

 private:
  OutputLog* log_;
  OutputLog::ConsumerId id_;
  size_t peeked_bytes_ = 0;
  uint64_t peeked_end_ = 0;
};

}  // namespace chronomerge
