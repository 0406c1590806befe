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
namespace {

size_t high_water_mark(const FeedConfig& config) {
  return config.high_water_mark.value_or(1 << 20);
}

size_t read_bytes_for(const FeedConfig& config) {
  return std::clamp(high_water_mark(config) / 4, FileFeed::min_read_bytes,
                    FileFeed::max_read_bytes);
}

}  // namespace

// The input, shared by the feed and its reads in flight, so that the
// descriptor is closed (by the destructor, on the loop thread) only when
// all of them are done with it. The offset and the framer, whose carry
// holds a line cut by the end of the previous read, serve sequential reads
// (standard input, follow), which run one at a time.
struct FileFeed::Reader {
  std::string path;  // empty: standard input
  bool follow = false;
  int fd = -1;
  bool owns_fd = true;
  // Set when the first read opens the file: it can be read in ranges.
  bool regular = false;
  int64_t offset = 0;
  LineFramer framer;

  explicit Reader(size_t max_line_bytes) : framer(max_line_bytes) {}
  ~Reader() {
    if (owns_fd && fd >= 0) ::close(fd);
  }

  // follow: has the file at `path` been replaced or truncated? Returns
  // true when reading starts over from the beginning.
  bool check_rotation() {
    struct stat by_path;
    struct stat by_fd;
    if (::stat(path.c_str(), &by_path) != 0) return false;  // gone for now: keep waiting
    if (::fstat(fd, &by_fd) != 0) return false;
    if (by_path.st_ino != by_fd.st_ino || by_path.st_dev != by_fd.st_dev) {
      int next = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (next < 0) return false;
      ::close(fd);
      fd = next;
      offset = 0;
      return true;
    }
    if (by_fd.st_size < offset) {
      offset = 0;
      return true;
    }
    return false;
  }
};

// One read, framed and validated on a pool thread; while it is in flight
// only that thread touches it, before and after only the loop thread.
struct FileFeed::Batch {
  uv_work_t req;
  FileFeed* feed = nullptr;        // null once the feed is closed
  std::shared_ptr<Reader> reader;  // while in flight
  std::shared_ptr<RecordBlock> block;
  int64_t start = 0;    // ranged reads: the file offset read from
  LineFramer framer;    // ranged reads: a fresh one per range
  RecordParser parser;  // a batch's own: it may outlive the feed

  // Framed, in file order. A line inside `block` is a view of it; one
  // assembled from two reads is in `carry`, and so is the excerpt of an
  // overlong line: their views are set once framing is over, as `carry`
  // may grow until then.
  struct Line {
    std::string_view text;
    size_t carry_offset = 0;
    size_t carry_length = 0;
    bool in_block = false;
    bool overlong = false;
  };
  std::vector<Line> lines;
  std::string carry;

  // Validated: records inside `block`, records from `carry` (each after the
  // first `before` of `records`), and the lines that are not records.
  std::vector<BlockRecord> records;
  struct Carried {
    size_t before;
    BlockRecord record;
  };
  std::vector<Carried> carried;
  std::vector<std::pair<LineError, std::string>> rejected;

  size_t nread = 0;
  size_t new_bytes = 0;  // of the input, for the counters (ranges overlap)
  int error = 0;         // a uv-style negative errno
  const char* failed_op = "";
  bool ranged = false;     // read as a range (see read_range)
  bool eof = false;        // end of a non-follow input
  bool restarted = false;  // follow: truncated or rotated, read from 0
  bool in_flight = false;  // owned by its request until the callback runs
  bool done = false;       // ready for the merger once older reads are

  Batch(size_t max_line_bytes, KeySpec spec) : framer(max_line_bytes), parser(std::move(spec)) {}

  void reset() {
    lines.clear();
    carry.clear();
    records.clear();
    carried.clear();
    rejected.clear();
    nread = 0;
    new_bytes = 0;
    error = 0;
    failed_op = "";
    ranged = false;
    eof = false;
    restarted = false;
    done = false;
  }

  // LineFramer visitor.
  void line(std::string_view text) {
    const char* base = block->data.get();
    if (text.data() >= base && text.data() < base + block->capacity) {
      lines.push_back(Line{text, 0, 0, true, false});
    } else {
      lines.push_back(Line{{}, carry.size(), text.size(), false, false});
      carry.append(text);
    }
  }
  void overlong(std::string_view head, size_t) {
    lines.push_back(Line{{}, carry.size(), head.size(), false, true});
    carry.append(head);
  }

  void fail(const char* op, int err) {
    failed_op = op;
    error = err;
  }

  void run() {
    Reader& r = *reader;
    if (r.fd < 0) {
      r.fd = ::open(r.path.c_str(), O_RDONLY | O_CLOEXEC);
      if (r.fd < 0) return fail("cannot open", -errno);
      struct stat st;
      r.regular = r.owns_fd && !r.follow && ::fstat(r.fd, &st) == 0 && S_ISREG(st.st_mode);
    }
    ranged = r.regular;
    if (ranged) {
      read_range();
    } else {
      read_next();
    }
    for (Line& line : lines) {
      if (!line.in_block)
        line.text = std::string_view(carry).substr(line.carry_offset, line.carry_length);
    }
    validate();
  }

  // A read of `block->capacity` bytes at `start` that depends on no other
  // read, so that several can be in flight: it frames the lines that
  // *start* in its range. Consecutive ranges overlap by one byte. A line
  // starts at offset 0 or after a newline, so a range after the first
  // skips to just past its first newline (the line it cuts belongs to the
  // range before); a line that runs past the end of the range is completed
  // by reading on up to its newline (bytes the next range skips).
  void read_range() {
    const int fd = reader->fd;
    ssize_t n;
    do {
      n = ::pread(fd, block->data.get(), block->capacity, start);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return fail("cannot read", -errno);
    nread = static_cast<size_t>(n);
    new_bytes = start == 0 || nread == 0 ? nread : nread - 1;
    std::string_view data(block->data.get(), nread);
    if (start > 0) {
      size_t newline = data.find('\n');
      data = newline == std::string_view::npos ? std::string_view() : data.substr(newline + 1);
    }
    framer.discard_partial();  // nothing carries over from another range
    framer.push(data, *this);
    if (nread < block->capacity) {  // a regular file reads short only at its end
      eof = true;
      framer.finish(*this);
      return;
    }
    char more[4096];
    for (int64_t at = start + n; framer.pending_bytes() > 0;) {
      ssize_t m = ::pread(fd, more, sizeof more, at);
      if (m < 0 && errno == EINTR) continue;
      if (m < 0) return fail("cannot read", -errno);
      if (m == 0) {
        eof = true;
        framer.finish(*this);
        return;
      }
      std::string_view chunk(more, static_cast<size_t>(m));
      size_t newline = chunk.find('\n');
      framer.push(chunk.substr(0, newline == std::string_view::npos ? chunk.size() : newline + 1),
                  *this);
      if (newline != std::string_view::npos) break;
      at += m;
    }
  }

  // The next bytes of a stream (standard input) or a followed file,
  // framed by the reader's framer: one such read at a time.
  void read_next() {
    Reader& r = *reader;
    ssize_t n;
    do {
      n = r.owns_fd ? ::pread(r.fd, block->data.get(), block->capacity, r.offset)
                    : ::read(r.fd, block->data.get(), block->capacity);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return fail("cannot read", -errno);
    if (n == 0) {
      if (!r.follow) {
        eof = true;
        r.framer.finish(*this);
      } else if (r.check_rotation()) {
        restarted = true;
        r.framer.discard_partial();
      }
      return;
    }
    r.offset += n;
    nread = new_bytes = static_cast<size_t>(n);
    r.framer.push(std::string_view(block->data.get(), nread), *this);
  }

  // Every line validated, in order. Records are parsed in place: moving a
  // ParsedRecord per line showed up in profiles of this loop.
  void validate() {
    for (const Line& line : lines) {
      if (line.overlong) {
        rejected.emplace_back(LineError::too_long, std::string(line.text));
        continue;
      }
      BlockRecord* record;
      if (line.in_block) {
        record = &records.emplace_back();
      } else {
        record = &carried.emplace_back(Carried{records.size(), {}}).record;
      }
      record->bytes = line.text;
      if (auto error = parser.parse(line.text, record->parsed)) {
        rejected.emplace_back(*error, std::string(line.text));
        if (line.in_block) {
          records.pop_back();
        } else {
          carried.pop_back();
        }
      }
    }
  }
};

FileFeed::FileFeed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes, int fd)
    : Feed(host, id, std::move(config), max_line_bytes),
      max_line_bytes_(max_line_bytes),
      blocks_(read_bytes_for(config_)),
      max_reads_(std::max<size_t>(1, high_water_mark(config_) / 4 / blocks_.block_bytes())) {
  reader_ = std::make_shared<Reader>(max_line_bytes);
  reader_->path = config_.path;
  reader_->follow = config_.follow;
  reader_->fd = fd;
  reader_->owns_fd = fd < 0;
}

FileFeed::~FileFeed() {
  close();
}

bool FileFeed::start() {
  if (config_.follow) {
    uv_timer_init(host_.loop(), poll_timer_.get());
    poll_timer_.initialized(this);
  }
  set_connected(true);
  queue_read();
  return true;
}

bool FileFeed::polling() const {
  return poll_timer_.open() && uv_is_active(poll_timer_.base());
}

void FileFeed::queue_read() {
  // Until the first read has shown the input to be a regular file, and for
  // any other input, reads go one at a time.
  while (!closed_ && !paused_ && !ended_ && !read_to_end_ && !polling() &&
         (ranged_ ? batches_.size() < max_reads_ : reading_ == 0)) {
    std::unique_ptr<Batch> batch;
    if (spare_.empty()) {
      batch = std::make_unique<Batch>(max_line_bytes_, parser().spec());
    } else {
      batch = std::move(spare_.back());
      spare_.pop_back();
      batch->reset();
    }
    batch->feed = this;
    batch->reader = reader_;
    batch->block = blocks_.acquire();
    batch->start = next_range_;
    batch->req.data = batch.get();
    int rc = uv_queue_work(host_.loop(), &batch->req, work, after_work);
    if (rc < 0) {
      log::error("feed {}: cannot queue a read: {}", name(), uv_error_text(rc));
      counters_.io_error = true;
      finish();
      return;
    }
    next_range_ += static_cast<int64_t>(blocks_.block_bytes()) - 1;  // ranges overlap by a byte
    ++reading_;
    batch->in_flight = true;
    batches_.push_back(batch.release());  // owned by the request now
  }
}

void FileFeed::work(uv_work_t* req) {
  static_cast<Batch*>(req->data)->run();
}

void FileFeed::after_work(uv_work_t* req, int) {
  auto* batch = static_cast<Batch*>(req->data);
  batch->in_flight = false;
  batch->done = true;
  batch->reader.reset();  // the last reference closes the descriptor
  FileFeed* self = batch->feed;
  if (self == nullptr) {
    delete batch;
    return;
  }
  --self->reading_;
  if (batch->ranged) self->ranged_ = true;
  if (batch->eof || (batch->error != 0 && !self->config_.follow)) self->read_to_end_ = true;
  if (self->config_.follow && batch->nread == 0) {
    // Nothing new: look again later rather than at once.
    uv_timer_start(
        self->poll_timer_.get(),
        [](uv_timer_t* timer) {
          if (auto* feed = static_cast<FileFeed*>(timer->data)) feed->queue_read();
        },
        follow_poll_ms, 0);
  }
  self->deliver_ready();
}

// Hands validated reads to the merger in file order, then merges.
void FileFeed::deliver_ready() {
  bool delivered = false;
  while (!closed_ && !batches_.empty() && batches_.front()->done) {
    std::unique_ptr<Batch> batch(batches_.front());
    batches_.pop_front();
    take_batch(*batch);  // may end the feed
    spare_.push_back(std::move(batch));
    delivered = true;
  }
  // The next reads go out before the merge runs, so that workers read and
  // validate them while this thread merges.
  queue_read();
  if (delivered && !closed_) host_.pump();
}

void FileFeed::take_batch(Batch& batch) {
  if (batch.restarted) {
    log::info("feed {}: {} was truncated or replaced; reading it from the start", name(),
              config_.path);
  }
  counters_.bytes_read += batch.new_bytes;
  // The queue takes its own reference to the block; the batch lets go of
  // it so that the pool can hand it out again once the records are merged.
  const BlockOwner block = std::move(batch.block);
  std::span<BlockRecord> records(batch.records);
  size_t done = 0;
  for (auto& [before, record] : batch.carried) {
    accept(records.subspan(done, before - done), block);
    done = before;
    // Not in the block: copied.
    accept(record.bytes, std::move(record.parsed));
  }
  accept(records.subspan(done), block);
  for (auto& [error, text] : batch.rejected) reject(error, text);
  if (batch.error != 0) {
    if (!config_.follow || !reported_error_) {
      log::error("feed {}: {} {}: {}", name(), batch.failed_op,
                 config_.path.empty() ? "standard input" : config_.path,
                 uv_error_text(batch.error));
    }
    reported_error_ = true;
    if (!config_.follow) {
      counters_.io_error = true;
      finish();
      return;
    }
  } else {
    reported_error_ = false;
  }
  if (batch.eof) finish();
}

void FileFeed::finish() {
  close();
  deliver_eof(false);  // the last read's framer already delivered the last line
  host_.feed_finished(id_);
}

void FileFeed::pause() {
  paused_ = true;
}

void FileFeed::resume() {
  paused_ = false;
  queue_read();
}

void FileFeed::close() {
  if (closed_) return;
  closed_ = true;
  poll_timer_.close();
  // A read in flight keeps the reader (and its descriptor) until its
  // callback; otherwise this closes the descriptor.
  reader_.reset();
  for (Batch* batch : batches_) {
    if (batch->in_flight) {
      batch->feed = nullptr;  // its callback frees it
    } else {
      delete batch;
    }
  }
  batches_.clear();
}

}  // namespace chronomerge
