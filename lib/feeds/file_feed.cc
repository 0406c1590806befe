#include "feeds/file_feed.h"

#include <fcntl.h>

#include "log/log.h"
#include "uv/uv_error.h"

namespace chronomerge {

FileFeed::FileFeed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes, int fd)
    : Feed(host, id, std::move(config), max_line_bytes),
      fd_(fd),
      owns_fd_(fd < 0),
      buffer_(new char[read_bytes]) {}

FileFeed::~FileFeed() { close(); }

void FileFeed::start() {
  if (fd_ >= 0) {
    set_connected(true);
    read_next();
    return;
  }
  auto* request = new Request{{}, this, nullptr};
  int rc = uv_fs_open(host_.loop(), &request->req, config_.path.c_str(), O_RDONLY, 0, on_open);
  if (rc < 0) {
    delete request;
    fail("cannot open", rc);
    return;
  }
  in_flight_ = request;
}

void FileFeed::on_open(uv_fs_t* req) {
  auto* request = reinterpret_cast<Request*>(req);
  FileFeed* self = request->feed;
  auto result = static_cast<int>(req->result);
  uv_fs_req_cleanup(req);
  delete request;
  if (self == nullptr) {  // closed while opening
    if (result >= 0) {
      uv_fs_t close_req;
      uv_fs_close(nullptr, &close_req, result, nullptr);
      uv_fs_req_cleanup(&close_req);
    }
    return;
  }
  self->in_flight_ = nullptr;
  if (result < 0) {
    self->fail("cannot open", result);
    return;
  }
  self->fd_ = result;
  self->set_connected(true);
  self->read_next();
}

void FileFeed::read_next() {
  if (closed_ || paused_ || in_flight_ != nullptr || ended_) return;
  auto* request = new Request{{}, this, std::move(buffer_)};
  uv_buf_t buf = uv_buf_init(request->buffer.get(), read_bytes);
  // Standard input is read from wherever the shell left it (-1); files at
  // explicit offsets.
  int64_t offset = owns_fd_ ? offset_ : -1;
  int rc = uv_fs_read(host_.loop(), &request->req, fd_, &buf, 1, offset, on_read);
  if (rc < 0) {
    buffer_ = std::move(request->buffer);
    delete request;
    fail("cannot read", rc);
    return;
  }
  in_flight_ = request;
}

void FileFeed::on_read(uv_fs_t* req) {
  auto* request = reinterpret_cast<Request*>(req);
  FileFeed* self = request->feed;
  ssize_t result = req->result;
  uv_fs_req_cleanup(req);
  if (self == nullptr) {
    delete request;
    return;
  }
  self->in_flight_ = nullptr;
  self->buffer_ = std::move(request->buffer);
  delete request;
  if (result < 0) {
    self->fail("cannot read", static_cast<int>(result));
  } else if (result == 0) {
    self->finish();
  } else {
    self->offset_ += result;
    self->deliver(std::string_view(self->buffer_.get(), static_cast<size_t>(result)));
    self->read_next();
  }
}

void FileFeed::fail(const char* what, int code) {
  log::error("feed {}: {} {}: {}", name(), what, config_.path.empty() ? "stdin" : config_.path,
             uv_error_text(code));
  counters_.io_error = true;
  finish();
}

void FileFeed::finish() {
  close();
  deliver_eof();
  host_.feed_finished(id_);
}

void FileFeed::pause() { paused_ = true; }

void FileFeed::resume() {
  paused_ = false;
  read_next();
}

void FileFeed::close() {
  if (closed_) return;
  closed_ = true;
  if (in_flight_) in_flight_->feed = nullptr;
  in_flight_ = nullptr;
  if (owns_fd_ && fd_ >= 0) {
    uv_fs_t req;
    uv_fs_close(nullptr, &req, fd_, nullptr);
    uv_fs_req_cleanup(&req);
  }
  fd_ = -1;
}

}  // namespace chronomerge
