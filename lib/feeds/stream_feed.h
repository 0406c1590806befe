// StreamFeed: the base of every feed that reads a libuv stream (standard
// input as a pipe or terminal, TCP and Unix connections, a child's stdout).
// It owns at most one connection at a time and maps pause/resume onto
// uv_read_stop/uv_read_start, so a paused feed leaves bytes in the kernel
// and the producer's writes eventually block.
//
// A read lands in a block (from a pool shared by the loop's stream feeds);
// a LineBatch frames and validates it, and the queue keeps views into it:
// no record is copied. Where the vector scanner reads the feed's lines, the
// loop thread frames every batch itself (cheaper than the trip to a pool
// thread and back); else a batch goes to libuv's thread pool and comes
// back (but for batches too small to be worth the trip). A batch takes the
// reads libuv makes back to back (a few full blocks at most). One batch at
// a time, in order: what is read while a batch is on the pool waits behind
// it (a few blocks at most, then reading stops until it is back), and EOF
// or a disconnect is taken once everything read before it has been framed.
// A read that fills less than half a block is moved into a block of its
// own size, so that a slow producer's records do not pin a whole read
// buffer.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "feeds/feed.h"
#include "uv/any_stream.h"
#include "uv/uv_handle.h"
#include "uv/uv_request.h"

namespace chronomerge {

class StreamFeed : public Feed {
 public:
  static constexpr size_t read_bytes = 64 << 10;
  // Free read blocks the shared pool keeps for the next reads.
  static constexpr size_t spare_read_blocks = 8;
  // Full reads one batch takes at most; as many wait behind a batch in
  // flight at most.
  static constexpr size_t reads_per_batch = 4;
  // Batches smaller than this are framed on the loop thread at any level.
  static constexpr size_t inline_bytes = 4 << 10;
  // Whether a batch of `nread` bytes is framed on the loop thread rather
  // than on libuv's thread pool. The trip to the pool and back costs two
  // thread wake-ups, tens of microseconds of CPU (bench/README.md, "Where
  // a feed frames"): about what the vector scanner takes for a whole batch
  // (four 64 KiB reads at most), so where it reads the feed's lines every
  // batch is framed here; the scalar scanner, several times slower, goes
  // to the pool from inline_bytes on, where a second core pays.
  static bool frames_here(size_t nread, const RecordParser& parser) {
    return nread < inline_bytes || parser.scans_runs();
  }
  // A draining connection counts as drained once it has had nothing to
  // read for this long (see check_drained()).
  static constexpr uint64_t drain_quiet_ms = 100;

  StreamFeed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes);
  ~StreamFeed() override;

  void pause() override;
  void resume() override;
  void close() override;
  void drain() override;

  // A batch on the thread pool: the object must stay until it is back,
  // even once closed.
  bool busy() const override { return sent_.pending(); }

  bool attached() const { return connection_ != nullptr; }
  // Reading stopped by backpressure.
  bool paused() const { return paused_; }

 protected:
  using Connection = UvHandle<AnyStream>;
  // Takes an initialized stream and reads it (unless paused); `first_bytes`
  // (read from it already, e.g. with a hello) are its first input.
  // REQUIRES: !attached().
  void attach(std::unique_ptr<Connection> connection, std::string_view first_bytes = {});
  // Frames what was read and waits to be sent, here and now. REQUIRES: no
  // batch in flight (!busy()).
  void frame_pending();
  // Loop time of the last read from a connection (or of attach()).
  uint64_t last_read_ms() const { return last_read_ms_; }
  // Closes the current connection, if any; a partial line is discarded.
  void detach();
  // The connection reached EOF (status UV_EOF) or failed. The connection
  // is already detached. Default: the feed ends.
  virtual void connection_ended(int status);
  // Subclasses close their own handles here; called once by close().
  virtual void close_transport() {}
  void end_feed();
  // Closed, or its transport closed by a drain: no reconnects, no new
  // producers.
  bool closed() const { return closed_ || transport_closed_; }
  size_t discard_partial_line() override;

 private:
  struct Batch;
  struct BatchRead {
    std::shared_ptr<RecordBlock> block;
    size_t nread;
  };
  static void on_alloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  using Sent = UvRequest<uv_work_t, std::unique_ptr<Batch>>;
  void batch_done(std::unique_ptr<Batch>& batch);
  void add_read(std::shared_ptr<RecordBlock> block, size_t n);
  // Sends the reads collected so far to the thread pool, unless a batch is
  // in flight.
  void send();
  void take_batch(Batch& batch);
  // The connection reached EOF or failed: handled now, or once the batch
  // in flight is back.
  void end_connection(int status);
  // Reads unless paused, closed, detached, ended or enough waits.
  void read_on();
  void start_reading();
  void stop_reading();
  // Bytes the kernel holds for the connection, not yet read.
  size_t unread_bytes() const;
  // Draining: ends the feed once nothing is left to read.
  void check_drained();
  void finish_drain();
  void close_transport_once();

  std::unique_ptr<Connection> connection_;
  std::shared_ptr<RecordBlock> read_block_;  // what the next read goes into
  std::unique_ptr<Batch> batch_;             // null while it is in flight
  // Read, not yet sent: behind the batch in flight, or the start of the
  // next batch.
  std::vector<BatchRead> pending_;
  size_t pending_nread_ = 0;
  size_t pending_bytes_ = 0;         // what their blocks count
  std::optional<int> deferred_end_;  // the connection ended behind a batch
  bool reading_ = false;
  uint64_t last_read_ms_ = 0;
  bool paused_ = false;
  bool closed_ = false;
  bool draining_ = false;
  UvHandle<uv_timer_t> quiet_timer_;  // draining: quiet since the last read
  bool transport_closed_ = false;
  // The batch on the thread pool. Last, so it detaches first.
  Sent sent_{[this](std::unique_ptr<Batch>& batch, ssize_t) { batch_done(batch); }};
};

// Standard input when it is a pipe, terminal or socket.
class StdinStreamFeed final : public StreamFeed {
 public:
  using StreamFeed::StreamFeed;
  bool start() override;
};

// The right feed for standard input: a FileFeed when it is a regular file,
// a StdinStreamFeed otherwise.
std::unique_ptr<Feed> make_stdin_feed(FeedHost& host, FeedId id, FeedConfig config,
                                      size_t max_line_bytes);

}  // namespace chronomerge
