// FileWriter: copies the Output to a file descriptor through libuv's thread
// pool (regular files and character devices cannot be polled). One write
// in flight, batched like StreamWriter. Used for file outputs, for the
// dead-letter file, and for standard output when it is a file or
// /dev/null.
//
// Whole records only: every write ends at a record boundary, and when a
// write fails part way (ENOSPC after a short write) the file is truncated
// back to the last whole record that made it, so a file never ends in half
// a record. What happens next is the OnError policy:
// - stop: the writer finishes and reports the error (standard output: a
//   one-shot run must end rather than wait for space);
// - block: nothing queued is dropped; the writer stops taking from the
//   Output (so the merge is held once it is max_buffer behind) and retries
//   with backoff, 100 ms doubling to 5 s, or at once on retry()/reopen();
// - skip: while failing, everything queued is dropped and counted; a retry
//   (same backoff) writes the next records again.
// An episode of failure is logged once when it starts (with the error) and
// once when it ends (how long, how many retries, what was dropped).
//
// A write blocked for good (a FIFO nobody reads) keeps one thread-pool
// thread and its request forever: the owner may close the writer, and the
// request then completes into nothing, but the loop will not run out. The
// daemon's shutdown bounds that with a deadline.
//
// Loop thread only.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "output/output_cursor.h"
#include "sinks/write_batch.h"
#include "uv/uv_handle.h"
#include "uv/uv_request.h"

namespace chronomerge {

class FileWriter {
 public:
  // One write at a time, each a trip through the thread pool, where it
  // may wait behind file feeds' reads (a one-shot merge of eight files
  // queues eight): the writer's pace is a batch per trip. 2 MiB batches
  // took a K=8 one-shot merge 8 % and a K=2 one 12 % less time than
  // 1 MiB ones (with room for two in the output's mark), 4 MiB no less.
  // A writer has no more unread than the output's mark lets it fall
  // behind, so at the daemon's default 1 MiB mark its batches are as
  // before.
  static constexpr size_t max_batch_bytes = 2 << 20;
  static constexpr uint64_t first_retry_ms = 100;
  static constexpr uint64_t max_retry_ms = 5000;

  enum class OnError { stop, block, skip };

  struct Counters {
    uint64_t bytes_written = 0;  // whole records written
    uint64_t write_errors = 0;   // failed write attempts, retries included
    uint64_t dropped_records = 0;
    uint64_t dropped_bytes = 0;
    uint64_t blocked_ms = 0;  // time spent failing under OnError::block
    bool failing = false;     // cannot write now (between a failure and a success)
  };

  // Runs once when the writer stops for good (end of stream, or a failure
  // under OnError::stop), from a libuv callback or from inside write_next().
  using DoneCallback = std::function<void(bool ok, const std::string& reason)>;

  // Writes to `path` (opened for append, created 0644), or to `fd` when
  // path is empty (not closed at the end, never truncated: someone else
  // opened it). `label` names the writer in log lines ("output archive").
  FileWriter(uv_loop_t* loop, OutputLog& output, std::string label, std::string path, int fd,
             size_t max_buffer, OnError on_error, DoneCallback done);
  ~FileWriter();
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  // Opens the file; false (and logs) when it cannot. Never blocks: a FIFO
  // without a reader is an error (ENXIO), not a wait.
  bool open();
  // Reopens the path (log rotation); the in-flight write finishes on the
  // old descriptor. A failing writer retries at once on the new one.
  bool reopen();
  // A failing writer tries again now instead of at its next backoff.
  void retry();
  // Each write is followed by fdatasync() before its records count as
  // written (the cursor moves): what a Kafka feed commits is on disk.
  void set_sync(bool sync) { sync_ = sync; }
  // Heartbeat records are written too (OutputLog::append_heartbeat()).
  // REQUIRES: before open().
  void set_heartbeats(bool heartbeats) { heartbeats_ = heartbeats; }
  // Stops at once; no callbacks afterwards.
  void close();
  bool done() const { return done_; }
  uint64_t bytes_written() const { return bytes_written_; }
  size_t lag() const { return cursor_ ? cursor_->lag() : 0; }
  uint64_t held_ms() const { return cursor_ ? cursor_->held_ms() : 0; }
  Counters counters() const;
  // What log lines call the destination: the path, or "standard output".
  const std::string& where() const { return where_; }

 private:
  // One write to its end: the batch, and the descriptor it goes to even if
  // the writer lets go of it meanwhile (reopen, close) — the write then
  // closes it when done: closed earlier, its number could be reused under
  // the write.
  struct FileWrite {
    FileWrite() = default;
    FileWrite(FileWrite&& other) noexcept { *this = std::move(other); }
    FileWrite& operator=(FileWrite&& other) noexcept;
    ~FileWrite();
    WriteBatch batch;
    int fd = -1;
    bool close_fd = false;
    // The file's size before this write, to cut a failed write back to.
    uint64_t size_before = 0;
    bool truncatable = false;
    bool syncing = false;  // written; the request is now its fdatasync()
  };

  static void on_retry_timer(uv_timer_t* timer);
  int open_path();
  void adopt(int fd);
  // Starts the next write, if none is in flight and anything is pending.
  void write_next();
  int submit(uv_fs_t* req, uv_fs_cb callback, const WriteBatch& batch, int fd);
  void written(FileWrite& write, ssize_t result);
  void write_done(FileWrite& write);
  void write_failed(FileWrite& write, int error);
  void start_episode(int error);
  void end_episode();
  void drop_pending();
  void finish(bool ok, const std::string& reason);
  static void close_fd(int fd);
  void release_fd();

  uv_loop_t* loop_;
  OutputLog& output_;
  std::optional<OutputCursor> cursor_;  // from open() to close()
  std::string label_;
  std::string path_;
  std::string where_;
  int fd_;
  bool owns_fd_;
  // Of fd_: whether a failed write can be cut back (a regular file we
  // opened), and its size as far as this writer has written it.
  bool truncatable_ = false;
  uint64_t file_size_ = 0;
  UvRequest<uv_fs_t, FileWrite> write_;
  bool done_ = false;
  bool sync_ = false;        // set_sync()
  bool heartbeats_ = false;  // set_heartbeats()
  uint64_t bytes_written_ = 0;
  size_t max_buffer_;
  OnError on_error_;
  DoneCallback on_done_;

  // Failure episodes.
  UvHandle<uv_timer_t> retry_timer_;
  bool failing_ = false;
  bool attempt_ = false;  // a retry is due: write_next() writes
  uint64_t backoff_ms_ = first_retry_ms;
  uint64_t failing_since_ms_ = 0;
  uint64_t retries_ = 0;  // failed retries in this episode
  uint64_t episode_dropped_records_ = 0;
  uint64_t episode_dropped_bytes_ = 0;
  uint64_t write_errors_ = 0;
  uint64_t dropped_records_ = 0;
  uint64_t dropped_bytes_ = 0;
  uint64_t blocked_ms_ = 0;  // closed episodes under block
};

}  // namespace chronomerge
