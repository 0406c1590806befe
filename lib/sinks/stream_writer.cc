#include "sinks/stream_writer.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <vector>

#include "uv/uv_error.h"

namespace chronomerge {

struct StreamWriter::WriteRequest {
  uv_write_t req;
  StreamWriter* writer;  // null once the writer is gone
  std::vector<Output::Slice> slices;
  std::vector<uv_buf_t> bufs;
  size_t bytes = 0;
};

StreamWriter::StreamWriter(Output& output, std::unique_ptr<UvHandle<AnyStream>> stream,
                           size_t max_buffer, bool blocking, uint64_t stall_timeout_ms,
                           DoneCallback done)
    : output_(output),
      stream_(std::move(stream)),
      stall_timeout_ms_(stall_timeout_ms),
      on_done_(std::move(done)) {
  stream_->get()->handle.data = this;
  sub_ = output_.subscribe(max_buffer, blocking, [this] { pump(); });
  subscribed_ = true;
  if (stall_timeout_ms_ > 0) {
    uv_timer_init(stream_->get()->handle.loop, stall_timer_.get());
    stall_timer_.initialized(this);
  }
  pump();
}

StreamWriter::~StreamWriter() {
  close();
}

size_t StreamWriter::lag() const {
  return subscribed_ ? output_.lag(sub_) : 0;
}

void StreamWriter::close() {
  if (in_flight_) in_flight_->writer = nullptr;
  in_flight_ = nullptr;
  if (shutdown_) shutdown_->data = nullptr;
  shutdown_ = nullptr;
  if (subscribed_) {
    subscribed_ = false;
    output_.unsubscribe(sub_);
  }
  stall_timer_.close();
  if (stream_) {
    stream_->close();
    stream_.reset();
  }
  done_ = true;
}

void StreamWriter::finish(Outcome outcome, const std::string& reason) {
  if (done_) return;
  DoneCallback done = std::move(on_done_);
  close();
  if (done) done(outcome, reason);
}

void StreamWriter::pump() {
  if (done_ || shutting_down_) return;
  // Checked before waiting for a write in flight: the write of a frozen
  // client never completes, and its cursor fell behind while it waited.
  if (output_.overflowed(sub_)) {
    finish(Outcome::overflowed, "over max_buffer");
    return;
  }
  if (in_flight_ != nullptr) return;
  auto* request = new WriteRequest{};
  request->writer = this;
  request->bytes = output_.peek(sub_, request->slices, max_batch_bytes);
  if (request->bytes == 0) {
    delete request;
    if (output_.ended()) {
      // Everything written: flush the kernel side politely, then close.
      shutting_down_ = true;
      auto* shutdown = new uv_shutdown_t{};
      shutdown->data = this;
      int rc = uv_shutdown(shutdown, stream_->stream(), [](uv_shutdown_t* req, int) {
        auto* self = static_cast<StreamWriter*>(req->data);
        delete req;
        if (self == nullptr) return;
        self->shutdown_ = nullptr;
        self->finish(Outcome::finished, "end of stream");
      });
      if (rc < 0) {
        delete shutdown;
        finish(Outcome::finished, "end of stream");
      } else {
        shutdown_ = shutdown;
      }
    }
    return;
  }
  request->bufs.reserve(request->slices.size());
  for (const auto& slice : request->slices) {
    request->bufs.push_back(uv_buf_init(const_cast<char*>(slice.bytes.data()),
                                        static_cast<unsigned>(slice.bytes.size())));
  }
  int rc = uv_write(&request->req, stream_->stream(), request->bufs.data(),
                    static_cast<unsigned>(request->bufs.size()), on_write);
  if (rc < 0) {
    delete request;
    finish(Outcome::failed, uv_error_text(rc));
    return;
  }
  in_flight_ = request;
  if (stall_timer_.open()) {
    stall_unwritten_ = unsent_bytes();
    uv_timer_start(stall_timer_.get(), on_stall_timer, stall_timeout_ms_, 0);
  }
}

void StreamWriter::on_write(uv_write_t* req, int status) {
  auto* request = reinterpret_cast<WriteRequest*>(req);
  StreamWriter* self = request->writer;
  size_t bytes = request->bytes;
  delete request;  // releases the chunks
  if (self == nullptr) return;
  self->in_flight_ = nullptr;
  if (self->stall_timer_.open()) uv_timer_stop(self->stall_timer_.get());
  if (status < 0) {
    self->finish(Outcome::failed, uv_error_text(status));
    return;
  }
  self->bytes_written_ += bytes;
  // consume() may run the merger (demand), which flushes and re-enters
  // pump(); in_flight_ is clear, so that is a normal next write.
  self->output_.consume(self->sub_, bytes);
  self->pump();
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
