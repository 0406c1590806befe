#include "sinks/stream_writer.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <vector>

#include "uv/uv_error.h"

namespace chronomerge {

StreamWriter::StreamWriter(OutputLog& output, OutputLog::ConsumerOptions consumer,
                           std::unique_ptr<UvHandle<AnyStream>> stream, uint64_t stall_timeout_ms,
                           DoneCallback done, std::string preamble, WriteBatch::Framing framing)
    : cursor_(output, std::move(consumer), [this] { write_next(); }),
      stream_(std::move(stream)),
      stall_timeout_ms_(stall_timeout_ms),
      write_([this](WriteBatch& batch, ssize_t status) { written(batch, status); }),
      shutdown_([this](NoPayload&, ssize_t) { finish(Outcome::finished, "end of stream"); }),
      preamble_(std::move(preamble)),
      framing_(framing),
      run_(output.run_id()),
      on_done_(std::move(done)) {
  stream_->get()->handle.data = this;
  if (stall_timeout_ms_ > 0) {
    uv_timer_init(stream_->get()->handle.loop, stall_timer_.get());
    stall_timer_.initialized(this);
  }
  write_next();
}

StreamWriter::~StreamWriter() {
  close();
}

void StreamWriter::close() {
  // A write or shutdown in flight completes into nothing (UV_ECANCELED
  // once the stream is closed) and frees itself with the chunks it holds.
  write_.detach();
  shutdown_.detach();
  cursor_.close();
  stall_timer_.close();
  if (stream_) {
    stream_->close();
    stream_.reset();
  }
  done_ = true;
}

void StreamWriter::watch_for_reset() {
  if (!stream_) return;
  uv_read_start(
      stream_->stream(),
      [](uv_handle_t*, size_t, uv_buf_t* buf) {
        static char discard[512];
        *buf = uv_buf_init(discard, sizeof(discard));
      },
      [](uv_stream_t* stream, ssize_t n, const uv_buf_t*) {
        if (n >= 0) return;
        uv_read_stop(stream);
        auto* self = static_cast<StreamWriter*>(stream->data);  // null once closed
        if (n != UV_EOF && self != nullptr) {
          self->finish(Outcome::peer_closed, uv_error_text(static_cast<int>(n)));
        }
      });
}

void StreamWriter::finish(Outcome outcome, const std::string& reason) {
  if (done_) return;
  DoneCallback done = std::move(on_done_);
  close();
  if (done) done(outcome, reason);
}

void StreamWriter::write_next() {
  if (done_ || shutdown_.pending()) return;
  // Checked before waiting for a write in flight: the write of a frozen
  // client never completes, and its cursor fell behind while it waited.
  if (DropReason reason = cursor_.dropped(); reason != DropReason::none) {
    if (reason == DropReason::too_slow) {
      finish(Outcome::too_slow, "more than max_buffer behind");
    } else {
      finish(Outcome::out_of_window, "fell out of the retained window");
    }
    return;
  }
  if (write_.pending()) return;
  WriteBatch batch = std::move(spare_);
  batch.framing = framing_;
  if (framing_ == WriteBatch::Framing::events) batch.run = run_;
  batch.preamble = std::move(preamble_);
  preamble_.clear();
  const size_t max_bytes =
      framing_ == WriteBatch::Framing::events ? max_event_batch_bytes : max_batch_bytes;
  if (batch.fill(cursor_, max_bytes) == 0 && batch.preamble.empty() && cursor_.output_ended() &&
      framing_ != WriteBatch::Framing::raw && !last_chunk_sent_) {
    // HTTP: the last chunk says the stream is complete.
    last_chunk_sent_ = true;
    batch.preamble = "0\r\n\r\n";
    batch.build();
  }
  if (batch.bytes == 0 && batch.preamble.empty()) {
    spare_ = std::move(batch);
    if (cursor_.output_ended()) {
      // Everything written: flush the kernel side politely, then close.
      int rc = shutdown_.start(NoPayload{}, [&](uv_shutdown_t* req, auto callback) {
        return uv_shutdown(req, stream_->stream(), callback);
      });
      if (rc < 0) finish(Outcome::finished, "end of stream");
    }
    return;
  }
  int rc = write_.start(std::move(batch), [&](uv_write_t* req, auto callback) {
    WriteBatch& b = write_.payload();
    return uv_write(req, stream_->stream(), b.bufs.data(), static_cast<unsigned>(b.bufs.size()),
                    callback);
  });
  if (rc < 0) {
    finish(Outcome::failed, uv_error_text(rc));
    return;
  }
  if (stall_timer_.open()) {
    stall_unwritten_ = unsent_bytes();
    uv_timer_start(stall_timer_.get(), on_stall_timer, stall_timeout_ms_, 0);
  }
}

void StreamWriter::written(WriteBatch& batch, ssize_t status) {
  const size_t bytes = batch.bytes;
  const size_t preamble = batch.preamble.size();
  // The chunks go back to the output before consume() can recycle them;
  // the vectors' capacity stays for the next batch.
  batch.clear();
  spare_ = std::move(batch);
  if (stall_timer_.open()) uv_timer_stop(stall_timer_.get());
  if (status < 0) {
    // The client going away is its choice; anything else is a failure.
    const bool gone = status == UV_EPIPE || status == UV_ECONNRESET;
    finish(gone ? Outcome::peer_closed : Outcome::failed, uv_error_text(static_cast<int>(status)));
    return;
  }
  bytes_written_ += preamble + bytes;
  // consume() may notify this writer (write_next() then finds nothing in flight
  // and writes the next batch) or others.
  cursor_.consume(bytes);
  write_next();
}

// What libuv still holds plus what the kernel has not yet handed to the
// reader: the kernel's send buffer can hold megabytes and signals room only
// once a good part of it is free, so libuv's queue alone may not move for
// seconds while a slow reader keeps reading.
size_t StreamWriter::unsent_bytes() const {
  size_t bytes = uv_stream_get_write_queue_size(stream_->stream());
  uv_os_fd_t fd;
  int queued = 0;
  if (uv_fileno(stream_->base(), &fd) == 0 && ::ioctl(fd, SIOCOUTQ, &queued) == 0 && queued > 0) {
    bytes += static_cast<size_t>(queued);
  }
  return bytes;
}

void StreamWriter::on_stall_timer(uv_timer_t* timer) {
  auto* self = static_cast<StreamWriter*>(timer->data);
  if (self == nullptr) return;
  size_t unwritten = self->unsent_bytes();
  if (unwritten < self->stall_unwritten_) {  // the reader took some: not stalled
    self->stall_unwritten_ = unwritten;
    uv_timer_start(timer, on_stall_timer, self->stall_timeout_ms_, 0);
    return;
  }
  self->finish(Outcome::stalled, "no progress for stall_timeout_ms");
}

}  // namespace chronomerge
