// FileWriter: copies the Output to a file descriptor through libuv's thread
// pool (regular files and character devices cannot be polled). One write
// in flight, batched like StreamWriter. Used for file outputs and for
// standard output when it is a file or /dev/null.
#pragma once

#include <uv.h>

#include <functional>
#include <string>

#include "output/output.h"

namespace chronomerge {

class FileWriter {
 public:
  static constexpr size_t max_batch_bytes = 1 << 20;
  using DoneCallback = std::function<void(bool ok, const std::string& reason)>;

  // Writes to `path` (opened for append, created 0644), or to `fd` when
  // path is empty (not closed at the end).
  FileWriter(uv_loop_t* loop, Output& output, std::string path, int fd, size_t max_buffer,
             DoneCallback done);
  ~FileWriter();
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  // Opens the file; false (and logs) when it cannot.
  bool open();
  // Reopens the path (log rotation); the in-flight write finishes on the
  // old descriptor.
  bool reopen();
  void close();
  bool done() const { return done_; }
  uint64_t bytes_written() const { return bytes_written_; }
  size_t lag() const { return output_.lag(sub_); }

 private:
  struct WriteRequest;
  static void on_write(uv_fs_t* req);
  void pump();
  void finish(bool ok, const std::string& reason);
  static void close_fd(int fd);
  void release_fd();

  uv_loop_t* loop_;
  Output& output_;
  std::string path_;
  int fd_;
  bool owns_fd_;
  Output::SubscriberId sub_ = 0;
  bool subscribed_ = false;
  WriteRequest* in_flight_ = nullptr;
  bool done_ = false;
  uint64_t bytes_written_ = 0;
  size_t max_buffer_;
  DoneCallback on_done_;
};

}  // namespace chronomerge
