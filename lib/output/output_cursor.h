// OutputCursor: one reader's position in the merged Output, and the only
// way a sink reads it.
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

#include "output/output.h"

namespace chronomerge {

class OutputCursor {
 public:
  // `notify` runs when there is something to read (or the output ended, or
  // this reader overflowed); see Output::subscribe.
  OutputCursor(Output& output, size_t max_buffer, bool blocking, std::function<void()> notify)
      : output_(&output), id_(output.subscribe(max_buffer, blocking, std::move(notify))) {}
  ~OutputCursor() { close(); }
  OutputCursor(const OutputCursor&) = delete;
  OutputCursor& operator=(const OutputCursor&) = delete;

  // Gives up the position: the output no longer waits for this reader.
  void close();
  bool open() const { return output_ != nullptr; }

  // Appends up to `max_bytes` of what this reader has not taken to `out`
  // (views that keep their chunks alive); returns the bytes added.
  size_t peek(std::vector<Output::Slice>& out, size_t max_bytes) const;
  // The reader has taken `bytes` (written them, or dropped them by
  // policy). May run the output's demand callback.
  void consume(size_t bytes);
  // Bytes pending for this reader; 0 once closed.
  size_t lag() const;
  // A non-blocking reader that fell more than its max_buffer behind.
  bool overflowed() const;
  // The output ended and this reader has taken everything.
  bool at_end() const;
  bool output_ended() const;

 private:
  Output* output_;
  Output::SubscriberId id_;
};

}  // namespace chronomerge
