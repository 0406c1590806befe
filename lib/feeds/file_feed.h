// FileFeed: reads a regular file (or standard input redirected from one).
//
// Reading, framing and validating happen on libuv's thread pool, one batch
// in flight per feed, so JSON validation runs on the other core while the
// loop thread merges; a paused feed simply does not queue its next batch.
// A batch reads into a block from the feed's pool and the merger's queue
// keeps views into that block (no copy of the records); the block returns
// to the pool once its last record has been merged. A short read (an
// eighth of a block or less: a line appended to a followed file) is
// copied into a block of its own size instead. The read size follows
// the feed's water marks, so the budget a one-shot run gives each file
// bounds the feed's memory. With `follow`, EOF is not the end: the file is
// polled for appended data, and truncation or rotation (a new file at the
// path) restarts reading from the beginning, like `tail -F`.
//
// A path that names a pipe, a FIFO or a terminal (`<(zcat a.gz)`, which
// the shell passes as /dev/fd/N) cannot be read at an offset: it is read
// in order, through the same blocks and the same validation, and its
// descriptor is non-blocking. An empty pipe never holds a pool thread:
// the loop polls the descriptor and queues the next read once it is
// readable. A FIFO without a writer yet is waited for, as `sort -m` does.
#pragma once

#include <uv.h>

#include <memory>

#include "feeds/feed.h"
#include "uv/uv_handle.h"
#include "uv/uv_request.h"

namespace chronomerge {

class FileFeed final : public Feed {
 public:
  // Read size: a quarter of the high-water mark and three quarters of the
  // low one (1 MiB and 256 KiB when the feed does not set them, as feeds
  // of a configuration file using the global marks), within these bounds.
  // Every read is a trip through the thread pool and back, some three
  // context switches and five futex calls: a one-shot merge of 1,000
  // files (16 KiB marks) took 17 % less time with 8 KiB
  // reads than with 4 KiB ones, for 10 % more memory, and one of two files
  // (1 MiB marks) 11 % less CPU and wall time with 256 KiB reads than with
  // 128 KiB ones, half the context switches (bench/README.md).
  static constexpr size_t max_read_bytes = 256 << 10;
  static constexpr size_t min_read_bytes = 8 << 10;
  static constexpr uint64_t follow_poll_ms = 200;
  // The size of this feed's reads (see above): a block and the ring slots
  // of its records (of 96 bytes or more) fit under the low mark, so that a
  // paused feed resumes while it still has a block queued.
  static size_t read_bytes(const FeedConfig& config);

  // Reads config.path, or `fd` when given (standard input); `fd` is then
  // read from its current position and not closed at the end.
  FileFeed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes, int fd = -1);
  ~FileFeed() override;

  bool start() override;
  void pause() override;
  void resume() override;
  void close() override;
  // A batch on the thread pool: the object must stay until it is back.
  bool busy() const override { return read_.pending(); }

 private:
  struct Batch;
  using Read = UvRequest<uv_work_t, std::unique_ptr<Batch>>;
  void queue_batch();
  void batch_done(std::unique_ptr<Batch>& batch);
  void wait_readable();
  void take_batch(Batch& batch);
  void finish();

  RecordBlockPool blocks_;           // read buffers, shared with the merger
  std::unique_ptr<Batch> batch_;     // null while a batch is in flight
  UvHandle<uv_timer_t> poll_timer_;  // follow: wait for appended data
  UvHandle<uv_poll_t> readable_;     // sequential inputs: wait for data
  bool paused_ = false;
  bool closed_ = false;
  bool reported_error_ = false;
  // The batch on the thread pool. Last, so it detaches first.
  Read read_{[this](std::unique_ptr<Batch>& batch, ssize_t) { batch_done(batch); }};
};

}  // namespace chronomerge
