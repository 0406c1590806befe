#include "feeds/stream_feed.h"

#include <sys/ioctl.h>

#include "feeds/file_feed.h"
#include "log/log.h"
#include "uv/stdio_stream.h"
#include "uv/uv_error.h"

namespace chronomerge {

StreamFeed::StreamFeed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes)
    : Feed(host, id, std::move(config), max_line_bytes), buffer_(new char[read_bytes]) {}

StreamFeed::~StreamFeed() {
  if (connection_) connection_->close();
}

void StreamFeed::attach(std::unique_ptr<Connection> connection) {
  connection_ = std::move(connection);
  connection_->get()->handle.data = this;
  set_connected(true);
  if (!paused_) start_reading();
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
  connection_lost();
}

void StreamFeed::on_alloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
  auto* self = static_cast<StreamFeed*>(handle->data);
  // Each read is delivered before the next allocation: one buffer serves.
  *buf = uv_buf_init(self->buffer_.get(), read_bytes);
}

void StreamFeed::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<StreamFeed*>(stream->data);
  if (self == nullptr) return;
  if (nread > 0) {
    self->deliver(std::string_view(buf->base, static_cast<size_t>(nread)));
  } else if (nread < 0) {
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
  deliver_eof();
  close();
}

void StreamFeed::pause() {
  if (paused_) return;
  paused_ = true;
  if (connection_) uv_read_stop(connection_->stream());
}

void StreamFeed::resume() {
  if (!paused_) return;
  paused_ = false;
  if (connection_) start_reading();
}

void StreamFeed::close() {
  if (closed_) return;
  closed_ = true;
  if (connection_) {
    if (size_t unread = unread_bytes()) {
      counters_.discarded_bytes += unread;
      log::warn("feed {}: closed with {} bytes unread in its connection", name(), unread);
    }
    connection_->close();
    connection_.reset();
  }
  buffer_.reset();  // no read comes after the close
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
