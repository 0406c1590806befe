#include "feeds/stream_feed.h"

#include <sys/ioctl.h>

#include <vector>

#include "feeds/file_feed.h"
#include "log/log.h"
#include "uv/stdio_stream.h"
#include "uv/uv_error.h"

namespace chronomerge {

namespace {

// Read blocks, shared by every stream feed of this thread's loop: a feed
// between reads holds none, however many producers are connected. The
// count of references stays exact because blocks are only referenced and
// let go on this thread (workers move the batch's reference, see
// LineBatch::frame).
RecordBlockPool& read_pool() {
  thread_local RecordBlockPool pool(StreamFeed::read_bytes, StreamFeed::spare_read_blocks);
  return pool;
}

}  // namespace

// Reads on their way through the thread pool: collected while the feed
// reads (the idle batch), then framed on the pool. While it is in flight
// the request owns it; the feed keeps a pointer (busy()) and a feed
// destroyed meanwhile clears `feed`, so that the callback only frees the
// batch.
struct StreamFeed::Batch {
  std::unique_ptr<LineBatch> lines;  // the framer's state lives here
  using Read = BatchRead;
  std::vector<Read> reads;
  size_t nread = 0;        // bytes of all reads
  size_t block_bytes = 0;  // what their blocks count against the water marks

  // Frames the reads, in order; any thread.
  void frame() {
    for (Read& read : reads) {
      const size_t bytes = read.block->capacity;
      lines->frame(std::move(read.block), read.nread, bytes);
    }
  }
  void clear() {
    reads.clear();
    nread = 0;
    block_bytes = 0;
  }
};

StreamFeed::StreamFeed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes)
    : Feed(host, id, std::move(config), max_line_bytes), batch_(std::make_unique<Batch>()) {
  batch_->lines = make_batch();
}

StreamFeed::~StreamFeed() {
  // A batch still on the pool is freed with its request: sent_ detaches.
  if (connection_) connection_->close();
}

void StreamFeed::attach(std::unique_ptr<Connection> connection, std::string_view first_bytes) {
  connection_ = std::move(connection);
  connection_->get()->handle.data = this;
  set_connected(true);
  last_read_ms_ = host_.now();
  if (!first_bytes.empty()) {
    add_read(RecordBlock::copy_of(first_bytes), first_bytes.size());
    // No read event is coming for these bytes: they go now.
    send();
  }
  read_on();
}

void StreamFeed::frame_pending() {
  if (sent_.pending() || pending_.empty() || !batch_) return;
  Batch& batch = *batch_;
  batch.reads.swap(pending_);
  pending_nread_ = 0;
  pending_bytes_ = 0;
  refresh(*batch.lines);
  batch.frame();
  take_batch(batch);
}

void StreamFeed::read_on() {
  if (connection_ && !reading_ && !paused_ && !closed_ && !deferred_end_ &&
      pending_.size() < reads_per_batch) {
    start_reading();
  }
}

void StreamFeed::start_reading() {
  int rc = uv_read_start(connection_->stream(), on_alloc, on_read);
  if (rc < 0) {
    log::warn("feed {}: cannot read: {}", name(), uv_error_text(rc));
    end_connection(rc);
    check_drained();
    return;
  }
  reading_ = true;
}

void StreamFeed::stop_reading() {
  if (reading_ && connection_) uv_read_stop(connection_->stream());
  reading_ = false;
}

void StreamFeed::detach() {
  if (!connection_) return;
  connection_->close();
  connection_.reset();
  read_block_.reset();
  reading_ = false;
  connection_lost();
}

size_t StreamFeed::discard_partial_line() {
  // A connection ends only once no batch is in flight (end_connection()):
  // the framer is here.
  return batch_ ? batch_->lines->discard_partial() : 0;
}

void StreamFeed::on_alloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
  auto* self = static_cast<StreamFeed*>(handle->data);
  if (self == nullptr) {
    *buf = uv_buf_init(nullptr, 0);
    return;
  }
  if (!self->read_block_) self->read_block_ = read_pool().acquire();
  *buf = uv_buf_init(self->read_block_->data.get(),
                     static_cast<unsigned>(self->read_block_->capacity));
}

void StreamFeed::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<StreamFeed*>(stream->data);
  if (self == nullptr) return;
  if (nread > 0) {
    const auto n = static_cast<size_t>(nread);
    std::shared_ptr<RecordBlock> block = std::move(self->read_block_);
    if (block == nullptr || block->data.get() != buf->base) return;  // cannot happen
    if (!self->ended_ && self->connection_) self->add_read(std::move(block), n);
  } else if (nread == 0) {
    // Nothing more to read for now (EAGAIN): what was read goes.
    if (!self->sent_.pending()) self->send();
  } else {
    self->read_block_.reset();
    auto status = static_cast<int>(nread);
    if (status != UV_EOF) {
      log::warn("feed {}: read failed: {}", self->name(), uv_error_text(status));
    }
    self->end_connection(status);
  }
  // The feed object outlives this callback (the pipeline destroys feeds
  // only from a timer of its own), but may have closed or ended above.
  self->check_drained();
}

// A full read means more is probably waiting: libuv reads again at once,
// and the next batch takes it too, up to reads_per_batch, so that a busy
// feed crosses to the pool once per few reads rather than once per read.
// A short read (or none) sends the batch; while one is in flight, reads
// wait behind it, in order, and go when it is back.
void StreamFeed::add_read(std::shared_ptr<RecordBlock> block, size_t n) {
  counters_.bytes_read += n;
  last_read_ms_ = host_.now();
  const bool full = n == block->capacity;
  if (n < block->capacity / 2) {
    // A short read (a slow producer) gets a block of its own size; the
    // read buffer goes back to the pool at once.
    block = RecordBlock::copy_of(std::string_view(block->data.get(), n));
  }
  pending_bytes_ += block->capacity;
  pending_nread_ += n;
  pending_.push_back(Batch::Read{std::move(block), n});
  // Read and not yet queued: it counts toward the water marks from now on.
  const size_t unqueued = pending_bytes_ + (sent_.pending() ? sent_.payload()->block_bytes : 0);
  if (!host_.in_flight(id_, unqueued)) {
    pause();  // sends what it can
  } else if (sent_.pending()) {
    if (pending_.size() >= reads_per_batch) stop_reading();  // until it is back
  } else if (!full || pending_.size() >= reads_per_batch) {
    send();
  }
}

void StreamFeed::send() {
  if (sent_.pending() || !batch_ || pending_.empty()) return;
  Batch& batch = *batch_;
  batch.reads.swap(pending_);
  batch.nread = pending_nread_;
  batch.block_bytes = pending_bytes_;
  pending_nread_ = 0;
  pending_bytes_ = 0;
  refresh(*batch.lines);
  // Framed here when the trip to the pool and back would cost more than
  // the work: a few hundred bytes (a slow producer's record) at any level,
  // and every batch the vector scanner reads (see frames_here()).
  if (frames_here(batch.nread, batch.lines->parser())) {
    batch.frame();
    take_batch(batch);
    return;
  }
  int rc = sent_.queue_work<&Batch::frame>(host_.loop(), std::move(batch_));
  if (rc < 0) {
    // Only invalid arguments make it fail; rather than lose the reads,
    // frame them here.
    log::warn("feed {}: cannot queue a batch: {}", name(), uv_error_text(rc));
    batch_->frame();
    take_batch(*batch_);
  }
}

// Closed meanwhile: close() counted the batch as discarded, and it is freed
// with its request (its blocks with it).
void StreamFeed::batch_done(std::unique_ptr<Batch>& batch) {
  if (closed_) return;
  take_batch(*batch);
  batch_ = std::move(batch);
  if (deferred_end_) {
    // The connection ended behind the batch: now its turn.
    const int status = *deferred_end_;
    deferred_end_.reset();
    end_connection(status);
  } else {
    send();  // the reads that waited behind it
    read_on();
  }
  check_drained();
}

void StreamFeed::take_batch(Batch& batch) {
  batch.clear();
  take(*batch.lines);
  // What the batch did not queue (malformed lines, a partial line the
  // framer carries) no longer counts; reads behind it still do.
  if (!ended_) host_.in_flight(id_, pending_bytes_);
}

// EOF (UV_EOF) or a failure. Taken in order: after the batch in flight,
// and after the reads behind it, which are framed here (once per
// connection, a few blocks at most).
void StreamFeed::end_connection(int status) {
  if (sent_.pending()) {
    deferred_end_ = status;
    stop_reading();
    return;
  }
  frame_pending();
  reading_ = false;
  if (status == UV_EOF) {
    // A clean EOF. Whether a cut last line counts is the transport's call
    // (connection_ended): stdin and exec end the feed, delivering it;
    // network feeds wait for the next producer and discard it.
    connection_->close();
    connection_.reset();
    read_block_.reset();
    set_connected(false);
  } else {
    detach();
  }
  connection_ended(status);
}

size_t StreamFeed::unread_bytes() const {
  uv_os_fd_t fd;
  if (!connection_ || uv_fileno(connection_->base(), &fd) != 0) return 0;
  int bytes = 0;
  if (::ioctl(fd, FIONREAD, &bytes) != 0 || bytes < 0) return 0;
  return static_cast<size_t>(bytes);
}

void StreamFeed::drain() {
  if (ended_ || closed_) {
    Feed::drain();
    return;
  }
  draining_ = true;
  close_transport_once();  // no new producer, no reconnect
  check_drained();
}

void StreamFeed::check_drained() {
  if (!draining_ || ended_ || closed_) return;
  // A batch on the thread pool, and what waits behind it, is merged first;
  // its completion comes back here.
  if (sent_.pending() || !pending_.empty() || deferred_end_) return;
  if (connection_) {
    // More to read: the read callbacks (or a resume) come back here.
    if (unread_bytes() > 0) return;
    // Nothing to read right now, but what the producer has written may
    // still be on its way: bytes its kernel held while our window was
    // closed go out once reading reopened it. The connection must stay
    // quiet for drain_quiet_ms before it counts as drained.
    if (!quiet_timer_.open()) {
      if (uv_timer_init(host_.loop(), quiet_timer_.get()) != 0) return finish_drain();
      quiet_timer_.initialized(this);
    }
    uv_timer_start(
        quiet_timer_.get(),
        [](uv_timer_t* timer) {
          auto* self = static_cast<StreamFeed*>(timer->data);
          if (self == nullptr || self->ended_ || self->closed_) return;
          if (self->sent_.pending() || !self->pending_.empty()) return;  // it comes back
          if (self->connection_ && self->unread_bytes() > 0) return;     // reads come
          self->finish_drain();
        },
        drain_quiet_ms, 0);
    return;
  }
  finish_drain();
}

void StreamFeed::finish_drain() {
  detach();  // a cut last line is discarded and counted
  end_and_close();
}

void StreamFeed::close_transport_once() {
  if (transport_closed_) return;
  transport_closed_ = true;
  close_transport();
}

void StreamFeed::connection_ended(int) {
  end_feed();
}

void StreamFeed::end_feed() {
  if (ended_) return;
  if (batch_) {
    batch_->lines->finish();
    take(*batch_->lines);
  }
  end_and_close();
}

void StreamFeed::pause() {
  if (paused_) return;
  paused_ = true;
  stop_reading();
  send();  // what was read goes on
}

void StreamFeed::resume() {
  if (!paused_) return;
  paused_ = false;
  read_on();
}

void StreamFeed::close() {
  if (closed_) return;
  closed_ = true;
  // Read, not merged: a batch in flight is freed when it comes back
  // (busy() until then).
  if (size_t unmerged = (sent_.pending() ? sent_.payload()->nread : 0) + pending_nread_) {
    counters_.discarded_bytes += unmerged;
    log::warn("feed {}: closed with {} bytes read but not yet merged", name(), unmerged);
  }
  if (connection_) {
    if (size_t unread = unread_bytes()) {
      counters_.discarded_bytes += unread;
      log::warn("feed {}: closed with {} bytes unread in its connection", name(), unread);
    }
    connection_->close();
    connection_.reset();
  }
  read_block_.reset();  // no read comes after the close
  reading_ = false;
  pending_.clear();
  pending_nread_ = 0;
  pending_bytes_ = 0;
  batch_.reset();
  quiet_timer_.close();
  close_transport_once();
}

bool StdinStreamFeed::start() {
  auto connection = std::make_unique<Connection>();
  int rc = open_stdio_stream(host_.loop(), *connection, 0, this);
  if (rc < 0) {
    log::error("feed {}: cannot read standard input: {}", name(), uv_error_text(rc));
    counters_.io_error = true;
    end_feed();
    return true;
  }
  attach(std::move(connection));
  return true;
}

std::unique_ptr<Feed> make_stdin_feed(FeedHost& host, FeedId id, FeedConfig config,
                                      size_t max_line_bytes) {
  if (uv_guess_handle(0) == UV_FILE) {
    return std::make_unique<FileFeed>(host, id, std::move(config), max_line_bytes, 0);
  }
  return std::make_unique<StdinStreamFeed>(host, id, std::move(config), max_line_bytes);
}

}  // namespace chronomerge
