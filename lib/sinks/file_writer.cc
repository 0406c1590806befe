#include "sinks/file_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <vector>

#include "log/log.h"
#include "uv/uv_error.h"

namespace chronomerge {
namespace {

// Cuts `slices` after their last newline and returns the bytes left; 0
// (and nothing cut) if they hold no newline.
size_t cut_after_last_newline(std::vector<Output::Slice>& slices) {
  for (size_t i = slices.size(); i-- > 0;) {
    std::string_view bytes = slices[i].bytes;
    const void* nl = ::memrchr(bytes.data(), '\n', bytes.size());
    if (nl == nullptr) continue;
    slices[i].bytes = bytes.substr(0, static_cast<const char*>(nl) - bytes.data() + 1);
    slices.resize(i + 1);
    size_t total = 0;
    for (const auto& slice : slices) total += slice.bytes.size();
    return total;
  }
  return 0;
}

// The bytes of the whole records among the first `limit` bytes of `slices`.
size_t whole_records_in(const std::vector<Output::Slice>& slices, size_t limit) {
  size_t start = 0;
  size_t whole = 0;
  for (const auto& slice : slices) {
    if (start >= limit) break;
    size_t n = std::min(slice.bytes.size(), limit - start);
    if (const void* nl = ::memrchr(slice.bytes.data(), '\n', n)) {
      whole = start + static_cast<size_t>(static_cast<const char*>(nl) - slice.bytes.data()) + 1;
    }
    start += slice.bytes.size();
  }
  return whole;
}

uint64_t count_records(const std::vector<Output::Slice>& slices) {
  uint64_t records = 0;
  for (const auto& slice : slices) {
    records += static_cast<uint64_t>(std::count(slice.bytes.begin(), slice.bytes.end(), '\n'));
  }
  return records;
}

std::string errno_text(int error) {
  return uv_error_text(uv_translate_sys_error(error));
}

}  // namespace

struct FileWriter::WriteRequest {
  uv_fs_t req;
  FileWriter* writer;  // null once the writer is gone
  std::vector<Output::Slice> slices;
  std::vector<uv_buf_t> bufs;
  size_t bytes = 0;
  size_t done = 0;  // bytes already written (short writes continue)
  // The descriptor this write goes to, to its end; if the writer has let
  // go of it meanwhile (reopen, close), the request closes it when done:
  // closed earlier, its number could be reused under the write.
  int fd = -1;
  bool close_fd = false;
  // The file's size before this write, to cut a failed write back to.
  uint64_t size_before = 0;
  bool truncatable = false;

  // Done with: closes the descriptor if it was left to the request.
  static void retire(WriteRequest* request) {
    if (request->close_fd) FileWriter::close_fd(request->fd);
    delete request;  // releases the chunks
  }
};

FileWriter::FileWriter(uv_loop_t* loop, Output& output, std::string label, std::string path, int fd,
                       size_t max_buffer, OnError on_error, DoneCallback done)
    : loop_(loop),
      output_(output),
      label_(std::move(label)),
      path_(std::move(path)),
      where_(path_.empty() ? "standard output" : path_),
      fd_(fd),
      owns_fd_(fd < 0),
      max_buffer_(max_buffer),
      on_error_(on_error),
      on_done_(std::move(done)) {
  uv_timer_init(loop_, retry_timer_.get());
  retry_timer_.initialized(this);
}

FileWriter::~FileWriter() {
  close();
}

// Opening never waits: O_NONBLOCK makes a FIFO without a reader an error
// (ENXIO) instead of a daemon hanging at start or on SIGUSR1. Writes go
// to the thread pool and may block there, so the flag is cleared again: a
// slow reader must slow the writer down, not fail it with EAGAIN.
int FileWriter::open_path() {
  uv_fs_t req;
  int rc = uv_fs_open(nullptr, &req, path_.c_str(),
                      O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK, 0644, nullptr);
  uv_fs_req_cleanup(&req);
  if (rc < 0) return rc;
  int flags = ::fcntl(rc, F_GETFL);
  if (flags >= 0) ::fcntl(rc, F_SETFL, flags & ~O_NONBLOCK);
  return rc;
}

// Takes `fd` as the descriptor to write to from now on.
void FileWriter::adopt(int fd) {
  fd_ = fd;
  struct stat st {};
  bool regular = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  // Someone else's descriptor (standard output) may be shared with other
  // writers, so only a file this writer opened is ever cut back.
  truncatable_ = regular && owns_fd_;
  file_size_ = regular ? static_cast<uint64_t>(st.st_size) : 0;
}

bool FileWriter::open() {
  if (owns_fd_) {
    int rc = open_path();
    if (rc < 0) {
      log::error("{}: cannot open {}: {}{}", label_, path_, uv_error_text(rc),
                 rc == UV_ENXIO ? "; a FIFO nobody has open for reading" : "");
      return false;
    }
    adopt(rc);
  } else {
    adopt(fd_);
  }
  sub_ = output_.subscribe(max_buffer_, true, [this] { pump(); });
  subscribed_ = true;
  return true;
}

bool FileWriter::reopen() {
  if (!owns_fd_ || done_) return true;
  int rc = open_path();
  if (rc < 0) {
    log::error("{}: cannot reopen {}: {}", label_, path_, uv_error_text(rc));
    retry();  // the old descriptor may work again
    return false;
  }
  release_fd();
  adopt(rc);
  log::info("{}: reopened {}", label_, path_);
  retry();
  return true;
}

void FileWriter::retry() {
  if (done_ || !failing_) return;
  uv_timer_stop(retry_timer_.get());
  backoff_ms_ = first_retry_ms;
  attempt_ = true;
  pump();
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
  if (done_) return;
  done_ = true;
  if (failing_ && on_error_ == OnError::block) {
    blocked_ms_ += uv_now(loop_) - failing_since_ms_;
  }
  failing_ = false;
  retry_timer_.close();
  if (subscribed_) {
    subscribed_ = false;
    output_.unsubscribe(sub_);
  }
  if (owns_fd_) release_fd();
  if (in_flight_) in_flight_->writer = nullptr;
  in_flight_ = nullptr;
  fd_ = -1;
}

void FileWriter::finish(bool ok, const std::string& reason) {
  if (done_) return;
  DoneCallback done = std::move(on_done_);
  close();
  if (done) done(ok, reason);
}

FileWriter::Counters FileWriter::counters() const {
  Counters c;
  c.bytes_written = bytes_written_;
  c.write_errors = write_errors_;
  c.dropped_records = dropped_records_;
  c.dropped_bytes = dropped_bytes_;
  c.failing = failing_;
  c.blocked_ms = blocked_ms_;
  if (failing_ && on_error_ == OnError::block) c.blocked_ms += uv_now(loop_) - failing_since_ms_;
  return c;
}

void FileWriter::pump() {
  if (done_ || in_flight_ != nullptr) return;
  if (failing_ && !attempt_) {
    // Between retries: block keeps everything queued (the Output fills and
    // holds the merge); skip drops it.
    if (on_error_ == OnError::skip) {
      drop_pending();
      if (!done_ && output_.ended() && lag() == 0) finish(true, "end of stream");
    }
    return;
  }
  auto* request = new WriteRequest{};
  request->writer = this;
  request->bytes = output_.peek(sub_, request->slices, max_batch_bytes);
  if (request->bytes == 0) {
    delete request;
    if (output_.ended()) finish(true, "end of stream");
    return;
  }
  // Whole records only, so a failure never leaves the cursor inside one.
  // A batch ends at a chunk boundary, mostly inside a record: cut it after
  // its last newline. A record longer than a batch is taken whole (the
  // stream always ends with a newline).
  size_t whole = cut_after_last_newline(request->slices);
  if (whole == 0) {
    request->slices.clear();
    size_t all = output_.peek(sub_, request->slices, SIZE_MAX);
    whole = cut_after_last_newline(request->slices);
    if (whole == 0) whole = all;
  }
  request->bytes = whole;
  request->bufs.reserve(request->slices.size());
  for (const auto& slice : request->slices) {
    request->bufs.push_back(uv_buf_init(const_cast<char*>(slice.bytes.data()),
                                        static_cast<unsigned>(slice.bytes.size())));
  }
  request->fd = fd_;
  request->size_before = file_size_;
  request->truncatable = truncatable_;
  if (failing_) ++retries_;
  attempt_ = false;
  in_flight_ = request;
  int rc = uv_fs_write(loop_, &request->req, request->fd, request->bufs.data(),
                       static_cast<unsigned>(request->bufs.size()), -1, on_write);
  if (rc < 0) {
    in_flight_ = nullptr;
    write_failed(request, rc);
  }
}

void FileWriter::on_write(uv_fs_t* req) {
  auto* request = reinterpret_cast<WriteRequest*>(req);
  FileWriter* self = request->writer;
  ssize_t result = req->result;
  uv_fs_req_cleanup(req);
  if (self == nullptr) {
    WriteRequest::retire(request);
    return;
  }
  if (result <= 0) {
    // A write of nothing (never seen on a regular file) is an error too:
    // continuing would spin.
    self->in_flight_ = nullptr;
    self->write_failed(request, result < 0 ? static_cast<int>(result) : UV_EIO);
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
    self->write_failed(request, rc);
    return;
  }
  self->in_flight_ = nullptr;
  self->write_done(request);
}

void FileWriter::write_done(WriteRequest* request) {
  size_t bytes = request->bytes;
  if (request->fd == fd_) file_size_ = request->size_before + bytes;
  WriteRequest::retire(request);
  bytes_written_ += bytes;
  if (failing_) end_episode();
  // consume() may run the merger (demand), which flushes and re-enters
  // pump(); in_flight_ is clear, so that is a normal next write.
  output_.consume(sub_, bytes);
  pump();
}

void FileWriter::write_failed(WriteRequest* request, int error) {
  ++write_errors_;
  // The whole records that made it stay; a record the failure cut in two
  // is cut off the file, to be written again whole (or dropped whole).
  size_t kept = whole_records_in(request->slices, request->done);
  uint64_t size = request->size_before + kept;
  if (request->done > kept && request->truncatable &&
      ::ftruncate(request->fd, static_cast<off_t>(size)) != 0) {
    log::error("{}: cannot cut {} back to its last whole record at {} bytes: {}", label_, where_,
               size, errno_text(errno));
  }
  if (request->fd == fd_) file_size_ = size;
  WriteRequest::retire(request);
  bytes_written_ += kept;
  if (on_error_ == OnError::stop) {
    finish(false, uv_error_text(error));
    return;
  }
  if (!failing_) start_episode(error);
  uv_timer_start(retry_timer_.get(), on_retry_timer, backoff_ms_, 0);
  backoff_ms_ = std::min(backoff_ms_ * 2, max_retry_ms);
  // Both may re-enter pump(), which now waits for the retry (block) or
  // drops what is queued, the rest of the failed write first (skip).
  if (kept > 0) output_.consume(sub_, kept);
  pump();
}

void FileWriter::on_retry_timer(uv_timer_t* timer) {
  auto* self = static_cast<FileWriter*>(timer->data);
  if (self == nullptr) return;
  self->attempt_ = true;
  self->pump();
}

void FileWriter::start_episode(int error) {
  failing_ = true;
  failing_since_ms_ = uv_now(loop_);
  retries_ = 0;
  episode_dropped_records_ = 0;
  episode_dropped_bytes_ = 0;
  backoff_ms_ = first_retry_ms;
  log::error(
      "{}: cannot write {}: {}; {}, retrying in {} ms to {} s, or at once on SIGUSR1 or "
      "SIGHUP",
      label_, where_, uv_error_text(error),
      on_error_ == OnError::block ? "keeping what waits to be written"
                                  : "dropping records until it can write again",
      first_retry_ms, max_retry_ms / 1000);
}

void FileWriter::end_episode() {
  uint64_t ms = uv_now(loop_) - failing_since_ms_;
  if (on_error_ == OnError::block) blocked_ms_ += ms;
  failing_ = false;
  attempt_ = false;
  backoff_ms_ = first_retry_ms;
  uv_timer_stop(retry_timer_.get());
  std::string dropped;
  if (on_error_ == OnError::skip) {
    dropped = fmt::format("; {} records ({} bytes) dropped meanwhile", episode_dropped_records_,
                          episode_dropped_bytes_);
  }
  log::info("{}: writing {} again after {:.1f} s and {} {}{}", label_, where_,
            static_cast<double>(ms) / 1000.0, retries_, retries_ == 1 ? "retry" : "retries",
            dropped);
}

// skip: everything queued is dropped, and counted. The cursor is always at
// a record boundary, so the bytes are whole records.
void FileWriter::drop_pending() {
  std::vector<Output::Slice> slices;
  size_t bytes = output_.peek(sub_, slices, SIZE_MAX);
  if (bytes == 0) return;
  uint64_t records = count_records(slices);
  slices.clear();  // let consume() recycle the chunks
  dropped_records_ += records;
  dropped_bytes_ += bytes;
  episode_dropped_records_ += records;
  episode_dropped_bytes_ += bytes;
  output_.consume(sub_, bytes);  // may re-enter pump()
}

}  // namespace chronomerge
