#include "sinks/file_writer.h"

#include <fcntl.h>

#include <vector>

#include "log/log.h"
#include "uv/uv_error.h"

namespace chronomerge {

struct FileWriter::WriteRequest {
  uv_fs_t req;
  FileWriter* writer;
  std::vector<Output::Slice> slices;
  std::vector<uv_buf_t> bufs;
  size_t bytes = 0;
  size_t done = 0;       // bytes already written (short writes continue)
  int close_after = -1;  // descriptor to close once this write returns
};

FileWriter::FileWriter(uv_loop_t* loop, Output& output, std::string path, int fd, size_t max_buffer,
                       DoneCallback done)
    : loop_(loop),
      output_(output),
      path_(std::move(path)),
      fd_(fd),
      owns_fd_(fd < 0),
      max_buffer_(max_buffer),
      on_done_(std::move(done)) {}

FileWriter::~FileWriter() {
  close();
}

bool FileWriter::open() {
  if (owns_fd_) {
    uv_fs_t req;
    int rc = uv_fs_open(nullptr, &req, path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                        0644, nullptr);
    uv_fs_req_cleanup(&req);
    if (rc < 0) {
      log::error("output file {}: cannot open: {}", path_, uv_error_text(rc));
      return false;
    }
    fd_ = rc;
  }
  sub_ = output_.subscribe(max_buffer_, true, [this] { pump(); });
  subscribed_ = true;
  return true;
}

bool FileWriter::reopen() {
  if (!owns_fd_ || done_) return true;
  uv_fs_t req;
  int rc = uv_fs_open(nullptr, &req, path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644,
                      nullptr);
  uv_fs_req_cleanup(&req);
  if (rc < 0) {
    log::error("output file {}: cannot reopen: {}", path_, uv_error_text(rc));
    return false;
  }
  if (in_flight_) {
    retired_fd_ = fd_;
  } else {
    close_fd(fd_);
  }
  fd_ = rc;
  log::info("output file {}: reopened", path_);
  return true;
}

void FileWriter::close_fd(int fd) {
  if (fd < 0) return;
  uv_fs_t req;
  uv_fs_close(nullptr, &req, fd, nullptr);
  uv_fs_req_cleanup(&req);
}

void FileWriter::close() {
  if (subscribed_) {
    subscribed_ = false;
    output_.unsubscribe(sub_);
  }
  if (owns_fd_) {
    // A thread may still be writing to a descriptor: closing it now could
    // let a new open() reuse the number under that write, so the request
    // closes it when it returns.
    int busy = !in_flight_ ? -1 : retired_fd_ >= 0 ? retired_fd_ : fd_;
    if (fd_ != busy) close_fd(fd_);
    if (retired_fd_ != busy) close_fd(retired_fd_);
    if (busy >= 0) in_flight_->close_after = busy;
  }
  if (in_flight_) in_flight_->writer = nullptr;
  in_flight_ = nullptr;
  fd_ = retired_fd_ = -1;
  done_ = true;
}

void FileWriter::finish(bool ok, const std::string& reason) {
  if (done_) return;
  DoneCallback done = std::move(on_done_);
  close();
  if (done) done(ok, reason);
}

void FileWriter::pump() {
  if (done_ || in_flight_ != nullptr) return;
  auto* request = new WriteRequest{};
  request->writer = this;
  request->bytes = output_.peek(sub_, request->slices, max_batch_bytes);
  if (request->bytes == 0) {
    delete request;
    if (output_.ended()) finish(true, "end of stream");
    return;
  }
  for (const auto& slice : request->slices) {
    request->bufs.push_back(uv_buf_init(const_cast<char*>(slice.bytes.data()),
                                        static_cast<unsigned>(slice.bytes.size())));
  }
  int rc = uv_fs_write(loop_, &request->req, fd_, request->bufs.data(),
                       static_cast<unsigned>(request->bufs.size()), -1, on_write);
  if (rc < 0) {
    delete request;
    finish(false, uv_error_text(rc));
    return;
  }
  in_flight_ = request;
}

void FileWriter::on_write(uv_fs_t* req) {
  auto* request = reinterpret_cast<WriteRequest*>(req);
  FileWriter* self = request->writer;
  ssize_t result = req->result;
  uv_fs_req_cleanup(req);
  if (self == nullptr) {
    if (request->close_after >= 0) {
      uv_fs_t close_req;
      uv_fs_close(nullptr, &close_req, request->close_after, nullptr);
      uv_fs_req_cleanup(&close_req);
    }
    delete request;
    return;
  }
  if (result < 0) {
    self->in_flight_ = nullptr;
    delete request;
    self->finish(false, uv_error_text(static_cast<int>(result)));
    return;
  }
  // A short write (disk nearly full, a pipe): continue with the rest.
  auto written = static_cast<size_t>(result);
  request->done += written;
  if (request->done < request->bytes) {
    auto& bufs = request->bufs;
    size_t skip = written;
    while (!bufs.empty() && skip >= bufs.front().len) {
      skip -= bufs.front().len;
      bufs.erase(bufs.begin());
    }
    if (!bufs.empty()) {
      bufs.front().base += skip;
      bufs.front().len -= skip;
    }
    int rc = uv_fs_write(self->loop_, &request->req, self->fd_, bufs.data(),
                         static_cast<unsigned>(bufs.size()), -1, on_write);
    if (rc == 0) return;
    self->in_flight_ = nullptr;
    delete request;
    self->finish(false, uv_error_text(rc));
    return;
  }
  size_t bytes = request->bytes;
  self->in_flight_ = nullptr;
  delete request;
  if (self->retired_fd_ >= 0) {
    self->close_fd(self->retired_fd_);
    self->retired_fd_ = -1;
  }
  self->bytes_written_ += bytes;
  self->output_.consume(self->sub_, bytes);
  self->pump();
}

}  // namespace chronomerge
