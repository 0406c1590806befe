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

std::string errno_text(int error) {
  return uv_error_text(uv_translate_sys_error(error));
}

}  // namespace

FileWriter::FileWrite& FileWriter::FileWrite::operator=(FileWrite&& other) noexcept {
  if (this == &other) return *this;
  if (close_fd) FileWriter::close_fd(fd);
  batch = std::move(other.batch);
  fd = other.fd;
  close_fd = std::exchange(other.close_fd, false);
  size_before = other.size_before;
  truncatable = other.truncatable;
  syncing = other.syncing;
  return *this;
}

FileWriter::FileWrite::~FileWrite() {
  if (close_fd) FileWriter::close_fd(fd);
}

FileWriter::FileWriter(uv_loop_t* loop, OutputLog& output, std::string label, std::string path,
                       int fd, size_t max_buffer, OnError on_error, DoneCallback done)
    : loop_(loop),
      output_(output),
      label_(std::move(label)),
      path_(std::move(path)),
      where_(path_.empty() ? "standard output" : path_),
      fd_(fd),
      owns_fd_(fd < 0),
      write_([this](FileWrite& write, ssize_t result) { written(write, result); }),
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
  cursor_.emplace(output_, OutputLog::ConsumerOptions::lossless(max_buffer_, heartbeats_),
                  [this] { write_next(); });
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
  write_next();
}

// Gives up fd_: closed now, or by the write still using it.
void FileWriter::release_fd() {
  if (write_.pending() && write_.payload().fd == fd_) {
    write_.payload().close_fd = true;
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
  if (cursor_) cursor_->close();
  if (owns_fd_) release_fd();
  // A write in flight finishes into nothing, closing its descriptor if it
  // was left to it.
  write_.detach();
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

void FileWriter::write_next() {
  if (done_ || write_.pending()) return;
  if (failing_ && !attempt_) {
    // Between retries: block keeps everything queued (the Output fills and
    // holds the merge); skip drops it.
    if (on_error_ == OnError::skip) {
      drop_pending();
      if (!done_ && cursor_->at_end()) finish(true, "end of stream");
    }
    return;
  }
  FileWrite write;
  // Whole records only, so a failure never leaves the cursor inside one.
  if (write.batch.fill(*cursor_, max_batch_bytes, /*whole_records=*/true) == 0) {
    if (cursor_->output_ended()) finish(true, "end of stream");
    return;
  }
  write.fd = fd_;
  write.size_before = file_size_;
  write.truncatable = truncatable_;
  if (failing_) ++retries_;
  attempt_ = false;
  const int fd = fd_;
  int rc = write_.start(std::move(write), [&](uv_fs_t* req, uv_fs_cb callback) {
    return submit(req, callback, write_.payload().batch, fd);
  });
  if (rc < 0) write_failed(write, rc);
}

int FileWriter::submit(uv_fs_t* req, uv_fs_cb callback, const WriteBatch& batch, int fd) {
  return uv_fs_write(loop_, req, fd, batch.bufs.data(), static_cast<unsigned>(batch.bufs.size()),
                     -1, callback);
}

void FileWriter::written(FileWrite& write, ssize_t result) {
  if (write.syncing) {
    // The bytes are in the file; a failed fdatasync() (an I/O error) is
    // counted and reported, and they count as written all the same.
    if (result < 0) {
      ++write_errors_;
      log::error("{}: fdatasync of {} failed: {}", label_, where_,
                 uv_error_text(static_cast<int>(result)));
    }
    write_done(write);
    return;
  }
  if (result <= 0) {
    // A write of nothing (never seen on a regular file) is an error too:
    // continuing would spin.
    write_failed(write, result < 0 ? static_cast<int>(result) : UV_EIO);
    return;
  }
  // A short write (disk nearly full, a pipe): the rest goes to the same
  // descriptor, even if the file was reopened meanwhile.
  write.batch.advance(static_cast<size_t>(result));
  if (write.batch.written < write.batch.bytes) {
    int rc = write_.restart([&](uv_fs_t* req, uv_fs_cb callback) {
      return submit(req, callback, write.batch, write.fd);
    });
    if (rc == 0) return;
    write_failed(write, rc);
    return;
  }
  if (sync_) {
    write.syncing = true;
    const int rc = write_.restart([&](uv_fs_t* req, uv_fs_cb callback) {
      return uv_fs_fdatasync(loop_, req, write.fd, callback);
    });
    if (rc == 0) return;
    write.syncing = false;
  }
  write_done(write);
}

void FileWriter::write_done(FileWrite& write) {
  const size_t bytes = write.batch.bytes;
  if (write.fd == fd_) file_size_ = write.size_before + bytes;
  write.batch.clear();  // the chunks go back before consume() recycles them
  bytes_written_ += bytes;
  if (failing_) end_episode();
  // consume() may notify this writer: write_next() then finds nothing in flight
  // and writes the next batch.
  cursor_->consume(bytes);
  write_next();
}

void FileWriter::write_failed(FileWrite& write, int error) {
  ++write_errors_;
  // The whole records that made it stay; a record the failure cut in two
  // is cut off the file, to be written again whole (or dropped whole).
  const size_t done = write.batch.written;
  size_t kept = whole_records_in(write.batch.slices, done);
  uint64_t size = write.size_before + kept;
  if (done > kept && write.truncatable && ::ftruncate(write.fd, static_cast<off_t>(size)) != 0) {
    log::error("{}: cannot cut {} back to its last whole record at {} bytes: {}", label_, where_,
               size, errno_text(errno));
  }
  if (write.fd == fd_) file_size_ = size;
  write.batch.clear();
  bytes_written_ += kept;
  if (on_error_ == OnError::stop) {
    finish(false, uv_error_text(error));
    return;
  }
  if (!failing_) start_episode(error);
  uv_timer_start(retry_timer_.get(), on_retry_timer, backoff_ms_, 0);
  backoff_ms_ = std::min(backoff_ms_ * 2, max_retry_ms);
  // Both may re-enter write_next(), which now waits for the retry (block) or
  // drops what is queued, the rest of the failed write first (skip).
  cursor_->consume(kept);
  write_next();
}

void FileWriter::on_retry_timer(uv_timer_t* timer) {
  auto* self = static_cast<FileWriter*>(timer->data);
  if (self == nullptr) return;
  self->attempt_ = true;
  self->write_next();
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
  std::vector<OutputLog::Slice> slices;
  size_t bytes = cursor_->peek(slices, SIZE_MAX);
  if (bytes == 0) return;
  uint64_t records = count_records(slices);
  slices.clear();  // let consume() recycle the chunks
  dropped_records_ += records;
  dropped_bytes_ += bytes;
  episode_dropped_records_ += records;
  episode_dropped_bytes_ += bytes;
  cursor_->consume(bytes);  // may re-enter write_next()
}

}  // namespace chronomerge
