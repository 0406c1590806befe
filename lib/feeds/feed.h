// Feed: one input of the daemon, a transport around the shared ingest path.
//
// Subclasses own their libuv handles and read into blocks, which a
// LineBatch frames and validates (on libuv's thread pool for streams and
// files); take() hands a batch's records to the host without a copy. They
// call end_and_close() when the input is finished for good, and
// connection_lost() when a producer goes away (a partial line is then
// discarded and counted, never glued to the next connection's first line).
//
// Records go one way: the feed hands them to its host, which queues them
// for the merge and answers whether the feed may go on reading; on "no"
// the feed pauses itself at once. The host resumes it later (resume()),
// from its pump, never from inside a call the feed made.
//
// Loop thread only. After close() a feed makes no more calls into its host.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "config/config.h"
#include "feeds/line_batch.h"
#include "merge/merger.h"
#include "record/record_parser.h"

struct uv_loop_s;

namespace chronomerge {

// What feeds need from the daemon around them: a narrow sink for what
// they read. None of these calls back into the feed.
class FeedHost {
 public:
  virtual ~FeedHost() = default;
  virtual uv_loop_s* loop() = 0;
  virtual uint64_t now() = 0;
  // The key specification shared by every feed.
  virtual const RecordParser& parser() = 0;
  // A record (copied), or a run of records of one block (referenced until
  // merged; see Merger::push), in arrival order. False once the feed's
  // queue is full: it must stop reading until resume().
  virtual bool queue_record(FeedId feed, std::string_view line, ParsedRecord&& parsed) = 0;
  virtual bool queue_records(FeedId feed, const RecordRun& run) = 0;
  // Bytes the feed has read and handed to another thread, not yet queued:
  // they count toward its water marks (Merger::in_flight). 0 once they are
  // queued. Same answer as the queue calls.
  virtual bool in_flight(FeedId feed, size_t bytes) = 0;
  // A line that is not a record (counted by the feed already); its number
  // in the feed's input, or 0 if unknown.
  virtual void malformed(FeedId feed, LineError error, std::string_view line,
                         uint64_t line_number) = 0;
  // The feed will deliver nothing more.
  virtual void feed_ended(FeedId feed) = 0;
  // Whether the feed may go idle now (see Feed::may_idle()) changed.
  virtual void may_idle(FeedId feed, bool may) = 0;
};

struct FeedCounters {
  uint64_t malformed = 0;
  LineErrorCounts malformed_by{};  // indexed by LineError
  uint64_t partial_discarded = 0;  // lines cut by a disconnect
  // Bytes a removed or draining feed left unread in its connection, or
  // had read and not yet framed (a batch on the thread pool), when its
  // time ran out (reload restart, drain deadline).
  uint64_t discarded_bytes = 0;
  // Listening feeds: producers refused while one was connected, and the
  // bytes they had sent, discarded unread.
  uint64_t refused = 0;
  uint64_t refused_bytes = 0;
  uint64_t bytes_read = 0;
  uint64_t connections = 0;
  // Exec feeds: times the program could not be started (uv_spawn failed).
  uint64_t start_failures = 0;
  bool connected = false;
  bool io_error = false;      // the input could not be read to its end
  uint64_t paused_ms = 0;     // time spent paused, closed pauses only
  uint64_t paused_since = 0;  // loop time of the current pause, if paused
  // Adds the counts of a retired instance: closed pauses only, and not
  // its state (connected, io_error, paused_since).
  void add(const FeedCounters& other) {
    malformed += other.malformed;
    for (size_t i = 0; i < malformed_by.size(); ++i) malformed_by[i] += other.malformed_by[i];
    partial_discarded += other.partial_discarded;
    discarded_bytes += other.discarded_bytes;
    refused += other.refused;
    refused_bytes += other.refused_bytes;
    bytes_read += other.bytes_read;
    connections += other.connections;
    start_failures += other.start_failures;
    paused_ms += other.paused_ms;
  }
  // Total paused time up to `now` (loop milliseconds).
  uint64_t paused_ms_at(uint64_t now, bool paused) const {
    return paused_ms + (paused && now > paused_since ? now - paused_since : 0);
  }
};

class Feed {
 public:
  Feed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes);
  virtual ~Feed() = default;
  Feed(const Feed&) = delete;
  Feed& operator=(const Feed&) = delete;

  // Opens the transport. False (after logging) when the feed cannot work
  // at all, e.g. its listen address cannot be bound. Later errors are
  // logged and end the feed (finite) or are retried (connecting feeds).
  virtual bool start() = 0;
  virtual void pause() = 0;
  virtual void resume() = 0;
  // Releases every handle; no more host calls afterwards. Idempotent.
  virtual void close() = 0;
  // Removed by a reload or a drain: stop taking new input (close a
  // listener, stop reconnecting), merge what the open connection already
  // holds — read until a read would block — then end in the merger and
  // close. What must still be discarded is counted. Default: close and end
  // at once (files, the simulator).
  virtual void drain();
  // Closes and ends the feed at once; what it still holds is discarded
  // (counted by close()).
  void stop();
  // Still has a callback pending that needs this object (a child process
  // not yet reaped, a batch on the thread pool): not to be destroyed yet.
  virtual bool busy() const { return false; }
  // Whether the merger may declare the feed idle once it has been empty
  // for idle_timeout_ms (live transports). A Kafka partition may only at
  // its end: while it fetches a backlog it holds the merge.
  virtual bool may_idle() const { return true; }

  // A reload: TLS material (certificate, key, CA, CRL) is read again from
  // the same paths; new handshakes use it, and open connections whose peer
  // it no longer accepts are closed. Default: no TLS, nothing to do.
  virtual void reload_tls() {}

  // A reload changed only the feed's tuning: water marks, idle timeout,
  // reorder window, heartbeat field, max_lag, late policy. Applied in
  // place; the transport and its connection stay. (The merger's side is
  // Merger::update().)
  void update(const FeedConfig& config);
  // Whether `a` and `b` read the same input the same way, so that moving
  // from one to the other is update() rather than a restart.
  static bool same_transport(const FeedConfig& a, const FeedConfig& b);
  bool ended() const { return ended_; }

  FeedId id() const { return id_; }
  const FeedConfig& config() const { return config_; }
  const std::string& name() const { return config_.name; }
  const FeedCounters& counters() const { return counters_; }
  // The first line it rejected (its first 4 KiB), for a hint.
  const std::string& first_rejected() const { return first_rejected_; }
  // The pipeline's key with this feed's heartbeat field.
  const RecordParser& parser() const { return parser_; }
  // The merger paused or resumed this feed (backpressure bookkeeping; the
  // transport itself is driven by pause()/resume()).
  void paused_at(uint64_t now) { counters_.paused_since = now; }
  void resumed_at(uint64_t now) {
    counters_.paused_ms += now > counters_.paused_since ? now - counters_.paused_since : 0;
  }

  // A fleet's member: its connections come from the fleet, and its
  // configuration (the fleet's, with the member's name) is not the file's.
  bool is_member() const { return config_.fleet.has_value(); }

  // Removed by a reload or a drain: closed, and ended in the merger.
  bool removed() const { return removed_; }
  void mark_removed() { removed_ = true; }

 protected:
  // A batch for this feed's lines, with its key settings.
  std::unique_ptr<LineBatch> make_batch() const;
  // Gives `batch` this feed's current key settings if a reload changed
  // them. REQUIRES: the batch is not in flight.
  void refresh(LineBatch& batch) const;
  // Frames `bytes` on the loop thread (copied into a block of their own)
  // and takes the batch: for feeds that make their input themselves.
  void deliver(LineBatch& batch, std::string_view bytes);
  // Hands the batch's records to the host (without a copy; the queue keeps
  // their blocks), and its malformed lines to reject(), then clears it.
  // Pauses the feed if the host says so; every record is queued anyway.
  void take(LineBatch& batch);
  // Records about to be queued, in arrival order (heartbeats included),
  // for a transport that tracks what it accepted. Default: nothing.
  virtual void accepted(const RecordRun& run) { (void)run; }
  // A line that is not a record: counted, logged, dead-lettered.
  // `line_number`: its number in the input, 0 if unknown.
  void reject(LineError error, std::string_view line, uint64_t line_number = 0);
  // The one way a feed ends, in one order: the host is told it will
  // deliver nothing more, then the transport closes (counting what it
  // still held). Idempotent.
  void end_and_close();
  // The producer went away: a partial line (discard_partial_line()) is
  // discarded and counted.
  void connection_lost();
  // The transport's partial line, forgotten; its length (0 if none).
  virtual size_t discard_partial_line() { return 0; }
  void set_connected(bool connected);

  FeedHost& host_;
  FeedId id_;
  FeedConfig config_;
  FeedCounters counters_;
  bool ended_ = false;
  bool removed_ = false;

 private:
  std::string first_rejected_;
  size_t max_line_bytes_;
  RecordParser parser_;
  uint64_t parser_version_ = 0;  // bumped by update()
};

}  // namespace chronomerge
