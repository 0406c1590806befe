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
  size_t done = 0;  // bytes already written (short writes continue)
  // The descriptor this write goes to, to its end; if the writer has let
  // go of it meanwhile (reopen, close), the request closes it when done:
  // closed earlier, its number could be reused under the write.
  int fd = -1;
  bool close_fd = false;
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
  release_fd();
  fd_ = rc;
  log::info("output file {}: reopened", path_);
  return true;
}

// Gives up fd_: closed now, or by the write still using it.
void FileWriter::release_fd() {
  if (in_flight_ && in_flight_->fd == fd_) {
    in_flight_->close_fd = true;
  } else {
    close_fd(fd_);
  }
  fd_ = -1;
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
  if (owns_fd_) release_fd();
  if (in_flight_) in_flight_->writer = nullptr;
  in_flight_ = nullptr;
  fd_ = -1;
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
  request->fd = fd_;
  int rc = uv_fs_write(loop_, &request->req, request->fd, request->bufs.data(),
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
  auto retire = [request] {
    if (request->close_fd) close_fd(request->fd);
    delete request;  // releases the chunks
  };
  if (self == nullptr) {
    retire();
    return;
  }
  if (result < 0) {
    self->in_flight_ = nullptr;
    retire();
    self->finish(false, uv_error_text(static_cast<int>(result)));
    return;
  }
  // A short write (disk nearly full, a pipe): the rest goes to the same
  // descriptor, even if the file was reopened meanwhile.
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
    int rc = uv_fs_write(self->loop_, &request->req, request->fd, bufs.data(),
                         static_cast<unsigned>(bufs.size()), -1, on_write);
    if (rc == 0) return;
    self->in_flight_ = nullptr;
    retire();
    self->finish(false, uv_error_text(rc));
    return;
  }
  size_t bytes = request->bytes;
  self->in_flight_ = nullptr;
  retire();
  self->bytes_written_ += bytes;
  self->output_.consume(self->sub_, bytes);
  self->pump();
}

}  // namespace chronomerge
