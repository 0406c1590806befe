// FileFeed: reads a regular file (or standard input redirected from one).
//
// Reading, framing and validating happen on libuv's thread pool, so JSON
// validation runs on the other core while the loop thread merges; a paused
// feed starts no new read. A regular file is read in ranges that do not
// depend on each other (see Batch::read_range), so several reads of one
// feed are in flight at once and a merge of few files keeps both cores
// busy; their records reach the merger in file order. Standard input and
// followed files are read one read after another.
//
// A read fills a block from the feed's pool and the merger's queue keeps
// views into that block (no copy of the records); the block returns to the
// pool once its last record has been merged. The read size follows the
// feed's high-water mark, so the budget a one-shot run gives each file
// bounds the feed's memory.
//
// With `follow`, EOF is not the end: the file is polled for appended data,
// and truncation or rotation (a new file at the path) restarts reading from
// the beginning, like `tail -F`.
#pragma once

#include <uv.h>

#include <deque>
#include <memory>
#include <vector>

#include "feeds/feed.h"
#include "uv/uv_handle.h"

namespace chronomerge {

class FileFeed final : public Feed {
 public:
  // Read size: a quarter of the high-water mark (1 MiB when the feed does
  // not set one, as feeds of a configuration file using the global marks),
  // within these bounds. The upper bound stays under glibc's mmap threshold
  // (128 KiB): an mmapped block costs a munmap, a TLB shootdown across the
  // cores, when freed, which at 128 KiB was 5-8% of the loop thread's time
  // in a K=8 run (teardown); from the heap it is a plain free.
  static constexpr size_t max_read_bytes = 120 << 10;
  static constexpr size_t min_read_bytes = 4 << 10;
  static constexpr uint64_t follow_poll_ms = 200;

  // Reads config.path, or `fd` when given (standard input); `fd` is then
  // read from its current position and not closed at the end.
  FileFeed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes, int fd = -1);
  ~FileFeed() override;

  bool start() override;
  void pause() override;
  void resume() override;
  void close() override;

 private:
  struct Reader;
  struct Batch;
  static void work(uv_work_t* req);
  static void after_work(uv_work_t* req, int status);
  void queue_read();
  void deliver_ready();
  void take_batch(Batch& batch);
  void finish();
  bool polling() const;

  size_t max_line_bytes_;
  RecordBlockPool blocks_;  // read buffers, shared with the merger
  // Ranged reads in flight at once: as many as fit in a quarter of the
  // high-water mark, at least one. With one, a feed's worker idled while
  // the loop merged its last read, and merges of few files were slowest;
  // with many feeds there is parallelism enough and memory is tight.
  size_t max_reads_;
  std::shared_ptr<Reader> reader_;  // the input; shared with reads in flight
  // Reads not yet handed to the merger, oldest first. A batch in flight is
  // owned by its request: if the feed closes meanwhile, it frees itself.
  std::deque<Batch*> batches_;
  std::vector<std::unique_ptr<Batch>> spare_;  // delivered, for reuse
  bool ranged_ = false;                        // known after the first read: ranges allowed
  int64_t next_range_ = 0;                     // where the next ranged read starts
  size_t reading_ = 0;                         // reads in flight
  bool read_to_end_ = false;                   // a read hit the end or failed: no more reads
  UvHandle<uv_timer_t> poll_timer_;            // follow: wait for appended data
  bool paused_ = false;
  bool closed_ = false;
  bool reported_error_ = false;
};

}  // namespace chronomerge
