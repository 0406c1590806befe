#include "feeds/file_feed.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <vector>

#include "log/log.h"
#include "uv/uv_error.h"

namespace chronomerge {
// A paused feed resumes at its low mark, and its next read must come back
// before its queue runs dry. With a block the size of the low mark (a
// quarter of the high one, as the defaults and one-shot runs have it),
// memory() stays above the mark for as long as the last block is queued,
// because its records' ring slots count too: the feed resumed only once
// that block was down to an eighth and compacted, and a K=8 one-shot
// merge waited on its reads (wall 0.167 -> 0.190 s). Three quarters of the
// low mark leave room for the slots of records of 96 bytes or more, and
// the merge took 0.165 s against 0.176 before the slots counted (31 runs
// alternated; K=2 0.220 against 0.209, K=1000 unchanged).
size_t FileFeed::read_bytes(const FeedConfig& config) {
  const size_t high = config.high_water_mark.value_or(default_feed_high_water_mark);
  const size_t low = config.low_water_mark.value_or(default_feed_low_water_mark);
  return std::clamp(std::min(high / 4, low / 4 * 3), min_read_bytes, max_read_bytes);
}

// Everything a worker thread touches. While a batch is in flight its
// request owns it; the feed may be closed or gone meanwhile, and the batch
// is then freed (closing its descriptor) instead of handed back.
struct FileFeed::Batch {
  Batch() = default;
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;
  ~Batch() {
    if (owns_fd && fd >= 0) ::close(fd);
  }

  // Owned by the batch so a worker never touches the feed.
  std::string path;  // empty: standard input
  bool follow = false;
  int fd = -1;
  bool owns_fd = true;
  // A pipe, FIFO or terminal (`<(zcat a.gz)`, /dev/fd/N): read() in
  // order instead of pread() at an offset, which such a file refuses.
  bool sequential = false;
  int64_t offset = 0;
  ino_t inode = 0;
  // Frames and validates what run() reads; holds a line that spans reads.
  std::unique_ptr<LineBatch> lines;
  // What run() reads into: a block from the feed's pool, handed over by
  // the loop thread before each run; frame() passes it on to `lines`.
  std::shared_ptr<RecordBlock> block;
  size_t block_bytes = 0;

  // Results of one work() call, besides those in `lines`.
  size_t nread = 0;
  int error = 0;  // a uv-style negative errno
  const char* failed_op = "";
  bool eof = false;          // end of a non-follow input
  bool restarted = false;    // follow: truncated or rotated, read from 0
  bool would_block = false;  // sequential: nothing to read yet

  void fail(const char* op, int err) {
    failed_op = op;
    error = err;
  }

  // follow: has the file at `path` been replaced or truncated? A pipe has
  // no size to shrink, and is not reopened: it is read on.
  void check_rotation() {
    if (sequential) return;
    struct stat by_path;
    struct stat by_fd;
    if (::stat(path.c_str(), &by_path) != 0) return;  // gone for now: keep waiting
    if (::fstat(fd, &by_fd) != 0) return;
    if (by_path.st_ino != by_fd.st_ino || by_path.st_dev != by_fd.st_dev) {
      int next = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (next < 0) return;
      ::close(fd);
      fd = next;
      offset = 0;
      restarted = true;
    } else if (by_fd.st_size < offset) {
      offset = 0;
      restarted = true;
    }
  }

  // One read, framed and validated. Runs on a pool thread.
  void run() {
    nread = 0;
    error = 0;
    restarted = false;
    would_block = false;
    if (fd < 0) {
      // O_NONBLOCK, which regular files ignore: opening a FIFO must not
      // wait for a writer, and reading an empty pipe must not hold a pool
      // thread (a feed closed meanwhile would keep the loop from ending).
      fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
      if (fd < 0) return fail("cannot open", -errno);
      sequential = ::lseek(fd, 0, SEEK_CUR) < 0 && errno == ESPIPE;
      // Before any writer has opened a FIFO, read() says end of file: the
      // first read waits until the loop sees the descriptor readable.
      if (sequential) {
        would_block = true;
        return;
      }
    }
    ssize_t n;
    do {
      n = owns_fd && !sequential ? ::pread(fd, block->data.get(), block->capacity, offset)
                                 : ::read(fd, block->data.get(), block->capacity);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      would_block = true;
      return;
    }
    if (n < 0) return fail("cannot read", -errno);
    if (n == 0) {
      if (!follow) {
        eof = true;
        lines->finish();
        return;
      }
      check_rotation();
      if (restarted) lines->discard_partial();
      return;
    }
    offset += n;
    nread = static_cast<size_t>(n);
    if (nread <= block->capacity / 8) {
      // A short read (a line appended to a followed file, a pipe written
      // a little at a time) gets a block of its own size: its lines would
      // otherwise pin, and count against the marks with, a whole read
      // block each. The read block stays with the batch, back to the pool
      // on the loop thread. An eighth, not half: a pipe's reads are its
      // 64 KiB buffer at most, a quarter of a 256 KiB block, and copying
      // every one of them cost `chronomerge <(cat a) <(cat b)` a tenth
      // more time.
      lines->frame(RecordBlock::copy_of(std::string_view(block->data.get(), nread)), nread, nread);
      return;
    }
    lines->frame(std::move(block), nread, block_bytes);
  }
};

FileFeed::FileFeed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes, int fd)
    : Feed(host, id, std::move(config), max_line_bytes), blocks_(read_bytes(config_)) {
  batch_ = std::make_unique<Batch>();
  batch_->lines = make_batch();
  batch_->path = config_.path;
  batch_->follow = config_.follow;
  batch_->fd = fd;
  batch_->owns_fd = fd < 0;
}

FileFeed::~FileFeed() {
  // A batch still on the pool frees itself (and its descriptor): read_
  // detaches when it goes.
  close();
}

// A sequential input with nothing to read: the next read is queued once
// the loop sees the descriptor readable (data, or its writer gone).
void FileFeed::wait_readable() {
  if (!readable_.open()) {
    int rc = uv_poll_init(host_.loop(), readable_.get(), batch_->fd);
    if (rc < 0) {
      log::error("feed {}: cannot wait for {} to be readable: {}", name(), config_.path,
                 uv_error_text(rc));
      counters_.io_error = true;
      finish();
      return;
    }
    readable_.initialized(this);
  }
  uv_poll_start(readable_.get(), UV_READABLE, [](uv_poll_t* poll, int, int) {
    auto* feed = static_cast<FileFeed*>(poll->data);
    if (feed == nullptr) return;
    // Whatever the status, the read that follows finds out.
    uv_poll_stop(poll);
    feed->queue_batch();
  });
}

bool FileFeed::start() {
  if (config_.follow) {
    uv_timer_init(host_.loop(), poll_timer_.get());
    poll_timer_.initialized(this);
  }
  set_connected(true);
  queue_batch();
  return true;
}

void FileFeed::queue_batch() {
  if (closed_ || paused_ || read_.pending() || ended_) return;
  refresh(*batch_->lines);
  batch_->block = blocks_.acquire();
  const size_t block_bytes = batch_->block_bytes = batch_->block->capacity;
  int rc = read_.queue_work<&Batch::run>(host_.loop(), std::move(batch_));
  if (rc < 0) {
    batch_->block.reset();
    log::error("feed {}: cannot queue a read: {}", name(), uv_error_text(rc));
    counters_.io_error = true;
    finish();
    return;
  }
  // The block counts toward the water marks from now on: a feed at its
  // mark does not read a block more than its budget.
  if (!host_.in_flight(id_, block_bytes)) pause();
}

// Closed meanwhile (a reload removed it), or by take_batch() (end of input,
// an error): nothing more goes to the host, and the batch is freed with its
// request, closing its descriptor.
void FileFeed::batch_done(std::unique_ptr<Batch>& batch) {
  if (closed_) return;
  take_batch(*batch);
  if (closed_) return;
  batch_ = std::move(batch);
  if (batch_->would_block) {
    wait_readable();
  } else if (batch_->nread == 0 && config_.follow) {
    uv_timer_start(
        poll_timer_.get(),
        [](uv_timer_t* timer) {
          if (auto* feed = static_cast<FileFeed*>(timer->data)) feed->queue_batch();
        },
        follow_poll_ms, 0);
  } else {
    // The next read goes out before the merge runs, so that a worker reads
    // and validates it while this thread merges.
    queue_batch();
  }
}

void FileFeed::take_batch(Batch& batch) {
  if (batch.restarted) {
    log::info("feed {}: {} was truncated or replaced; reading it from the start", name(),
              config_.path);
  }
  counters_.bytes_read += batch.nread;
  // The queue takes its own references to the blocks; the batch lets go of
  // them so that the pool can hand a block out again once its records are
  // merged.
  batch.block.reset();
  take(*batch.lines);
  if (!ended_) host_.in_flight(id_, 0);
  if (batch.error != 0) {
    if (!batch.follow || !reported_error_) {
      log::error("feed {}: {} {}: {}", name(), batch.failed_op,
                 config_.path.empty() ? "standard input" : config_.path,
                 uv_error_text(batch.error));
    }
    reported_error_ = true;
    if (!batch.follow) {
      counters_.io_error = true;
      finish();
      return;
    }
    // follow: the file may appear later; keep polling quietly.
    batch.nread = 0;
  } else {
    reported_error_ = false;
  }
  if (batch.eof) finish();
}

void FileFeed::finish() {
  end_and_close();  // the batch's framer already delivered the last line
}

void FileFeed::pause() {
  paused_ = true;
}

void FileFeed::resume() {
  paused_ = false;
  // A timer or the readable poll, when active, queues the next read.
  if (poll_timer_.open() && uv_is_active(poll_timer_.base())) return;
  if (readable_.open() && uv_is_active(readable_.base())) return;
  queue_batch();
}

void FileFeed::close() {
  if (closed_) return;
  closed_ = true;
  poll_timer_.close();
  readable_.close();  // before its descriptor: it stops watching at once
  // A feed removed by a reload stays in the pipeline's list: keep none of
  // its buffers (the batch closes its descriptor). Blocks still queued go
  // with their last record.
  batch_.reset();
  blocks_.release();
  // An in-flight batch keeps its descriptor until it is back (batch_done()
  // then frees it); the feed stays busy() until then.
}

}  // namespace chronomerge
