// StreamWriter: copies the Output to one libuv stream (a stdout pipe or
// terminal, one TCP or Unix client) as one Output subscriber.
//
// One uv_write is in flight at a time, carrying up to max_batch_bytes of
// the subscriber's pending bytes as several buffers; the Output cursor moves
// only when the write completes, which is what makes backpressure reach the
// merger. The write request holds the chunks it points into, so a write may
// outlive this object (libuv completes it with UV_ECANCELED on close).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "output/output_cursor.h"
#include "sinks/write_batch.h"
#include "uv/any_stream.h"
#include "uv/uv_handle.h"
#include "uv/uv_request.h"

namespace chronomerge {

class StreamWriter {
 public:
  static constexpr size_t max_batch_bytes = 1 << 20;
  // Server-Sent Events take three buffers per record: smaller batches.
  static constexpr size_t max_event_batch_bytes = 64 << 10;

  // finished: everything written and the stream shut down; peer_closed:
  // the client went away (reset, broken pipe) — its own choice, not a
  // failure; too_slow, out_of_window: the log dropped this reader (see
  // DropReason).
  enum class Outcome { finished, failed, peer_closed, too_slow, out_of_window, stalled };
  // Runs once when the writer stops for good; the owner may destroy the
  // writer from it only by deferring (it is called from a libuv callback
  // of the writer's own handle, or from the constructor when the reader
  // is dropped at once: the owner may not hold the writer yet).
  using DoneCallback = std::function<void(Outcome, const std::string& reason)>;

  // `stream` must be initialized. `preamble`, if not empty, is written
  // before the stream (a resume answer line, HTTP response headers).
  // Framed streams (HTTP chunks, Server-Sent Events) end with the last
  // chunk.
  StreamWriter(OutputLog& output, OutputLog::ConsumerOptions consumer,
               std::unique_ptr<UvHandle<AnyStream>> stream, uint64_t stall_timeout_ms,
               DoneCallback done, std::string preamble = {},
               WriteBatch::Framing framing = WriteBatch::Framing::raw);
  ~StreamWriter();
  StreamWriter(const StreamWriter&) = delete;
  StreamWriter& operator=(const StreamWriter&) = delete;

  // Stops at once: unsubscribes and closes the stream (no callback).
  void close();
  // Reads from the stream only to notice early that the peer reset the
  // connection (the writer then fails); what arrives is discarded, and an
  // EOF (a half-close) changes nothing.
  void watch_for_reset();
  bool done() const { return done_; }
  uint64_t bytes_written() const { return bytes_written_; }
  size_t lag() const { return cursor_.lag(); }
  uint64_t held_ms() const { return cursor_.held_ms(); }
  uv_stream_t* stream() const { return stream_ ? stream_->stream() : nullptr; }

 private:
  static void on_stall_timer(uv_timer_t* timer);
  size_t unsent_bytes() const;
  // Starts the next write, if none is in flight and anything is pending.
  void write_next();
  void written(WriteBatch& batch, ssize_t status);
  void finish(Outcome outcome, const std::string& reason);

  OutputCursor cursor_;
  std::unique_ptr<UvHandle<AnyStream>> stream_;
  UvHandle<uv_timer_t> stall_timer_;
  uint64_t stall_timeout_ms_;
  // unsent_bytes() when the stall timer was last armed: a write of up to
  // max_batch_bytes may take a slow reader longer than the timeout, and
  // only no progress at all is a stall.
  size_t stall_unwritten_ = 0;
  UvRequest<uv_write_t, WriteBatch> write_;
  WriteBatch spare_;  // the last batch, kept for its capacity
  UvRequest<uv_shutdown_t> shutdown_;
  std::string preamble_;  // goes out with the first write
  WriteBatch::Framing framing_;
  std::string run_;  // framing events: the run id of the event ids
  bool last_chunk_sent_ = false;
  bool done_ = false;
  bool shutting_down_ = false;
  uint64_t bytes_written_ = 0;
  DoneCallback on_done_;
};

}  // namespace chronomerge
