#include "feeds/stream_feed.h"

#include <sys/ioctl.h>

#include <cstring>
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
  uv_work_t req;
  StreamFeed* feed = nullptr;
  std::unique_ptr<LineBatch> lines;  // the framer's state lives here
  struct Read {
    std::shared_ptr<RecordBlock> block;
    size_t nread;
  };
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
  if (in_flight_) in_flight_->feed = nullptr;
  if (connection_) connection_->close();
}

void StreamFeed::attach(std::unique_ptr<Connection> connection) {
  connection_ = std::move(connection);
  connection_->get()->handle.data = this;
  set_connected(true);
  read_on();
}

void StreamFeed::read_on() {
  if (connection_ && !paused_ && !closed_ && in_flight_ == nullptr) start_reading();
}

void StreamFeed::start_reading() {
  int rc = uv_read_start(connection_->stream(), on_alloc, on_read);
  if (rc < 0) {
    log::warn("feed {}: cannot read: {}", name(), uv_error_text(rc));
    detach();
    connection_ended(rc);
    check_drained();
  }
}

void StreamFeed::detach() {
  if (!connection_) return;
  connection_->close();
  connection_.reset();
  read_block_.reset();
  connection_lost();
}

size_t StreamFeed::discard_partial_line() {
  // Disconnects are seen only while reading, never with a batch in flight:
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
    if (!self->ended_ && self->batch_) self->add_read(std::move(block), n);
  } else if (nread == 0) {
    // Nothing more to read for now (EAGAIN).
    self->queue_batch();
  } else {
    self->read_block_.reset();
    if (self->batch_ && !self->batch_->reads.empty()) {
      // What was read before the end is framed first, here: this happens
      // once per connection.
      self->batch_->frame();
      self->take_batch(*self->batch_);
    }
    auto status = static_cast<int>(nread);
    if (status == UV_EOF) {
      // A clean EOF. Whether a cut last line counts is the transport's
      // call (connection_ended): stdin and exec end the feed, delivering
      // it; network feeds wait for the next producer and discard it.
      self->connection_->close();
      self->connection_.reset();
      self->set_connected(false);
    } else {
      log::warn("feed {}: read failed: {}", self->name(), uv_error_text(status));
      self->detach();
    }
    self->connection_ended(status);
  }
  // The feed object outlives this callback (the pipeline destroys feeds
  // only from a timer of its own), but may have closed or ended above.
  self->check_drained();
}

// A full read means more is probably waiting: libuv reads again at once,
// and the batch takes it too, up to reads_per_batch, so that a busy feed
// crosses to the pool once per few reads rather than once per read. A
// short read (or none) ends the batch.
void StreamFeed::add_read(std::shared_ptr<RecordBlock> block, size_t n) {
  counters_.bytes_read += n;
  const bool full = n == block->capacity;
  if (n < block->capacity / 2) {
    // A short read (a slow producer) gets a block of its own size; the
    // read buffer goes back to the pool at once.
    auto own = std::make_shared<RecordBlock>(n);
    std::memcpy(own->data.get(), block->data.get(), n);
    block = std::move(own);
  }
  batch_->block_bytes += block->capacity;
  batch_->nread += n;
  batch_->reads.push_back(Batch::Read{std::move(block), n});
  // The reads count toward the water marks from now on.
  if (!host_.in_flight(id_, batch_->block_bytes)) {
    pause();  // sends the batch
  } else if (!full || batch_->reads.size() >= reads_per_batch) {
    queue_batch();
  }
}

void StreamFeed::queue_batch() {
  if (!batch_ || batch_->reads.empty()) return;
  // Reading waits for the batch: what comes next (bytes, EOF, an error)
  // must be framed after it.
  if (connection_) uv_read_stop(connection_->stream());
  Batch* batch = batch_.release();
  refresh(*batch->lines);
  batch->feed = this;
  batch->req.data = batch;
  in_flight_ = batch;
  int rc = uv_queue_work(host_.loop(), &batch->req, work, after_work);
  if (rc < 0) {
    // Only invalid arguments make it fail; rather than lose the read,
    // frame it here.
    log::warn("feed {}: cannot queue a batch: {}", name(), uv_error_text(rc));
    in_flight_ = nullptr;
    batch_.reset(batch);
    batch->frame();
    take_batch(*batch);
    read_on();
  }
}

void StreamFeed::work(uv_work_t* req) {
  static_cast<Batch*>(req->data)->frame();
}

void StreamFeed::after_work(uv_work_t* req, int) {
  std::unique_ptr<Batch> batch(static_cast<Batch*>(req->data));
  StreamFeed* self = batch->feed;
  if (self == nullptr) return;  // destroyed meanwhile: the blocks go with the batch
  self->in_flight_ = nullptr;
  // Closed meanwhile: close() counted the batch as discarded.
  if (self->closed_) return;
  self->take_batch(*batch);
  self->batch_ = std::move(batch);
  self->read_on();
  self->check_drained();
}

void StreamFeed::take_batch(Batch& batch) {
  batch.clear();
  take(*batch.lines);
  // Whatever the batch did not queue (malformed lines, a partial line the
  // framer carries) no longer counts.
  if (!ended_) host_.in_flight(id_, 0);
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
  // A batch on the thread pool is merged first; its completion comes back
  // here.
  if (in_flight_ || (batch_ && !batch_->reads.empty())) return;
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
          if (self->in_flight_) return;                               // it comes back
          if (self->connection_ && self->unread_bytes() > 0) return;  // reads come
          self->finish_drain();
        },
        drain_quiet_ms, 0);
    return;
  }
  finish_drain();
}

void StreamFeed::finish_drain() {
  detach();  // a cut last line is discarded and counted
  end_in_merger();
  close();
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
  end_in_merger();
  close();
}

void StreamFeed::pause() {
  if (paused_) return;
  paused_ = true;
  if (connection_) uv_read_stop(connection_->stream());
  queue_batch();  // what was read goes on
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
  if (size_t unmerged = (in_flight_ ? in_flight_->nread : 0) + (batch_ ? batch_->nread : 0)) {
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
