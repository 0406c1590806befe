// OutputLog: the merged stream, appended once and retained, read by every
// sink through its own cursor.
//
// Each merged record (or combine-mode object) is appended once with its
// offset (its position in the merged stream of this run: 0, 1, 2, ...),
// its key and the feeds it came from. A run id, new at every start, names
// the numbering, so an offset from another run is never mistaken for one
// of this run. Records are stored in segments and never straddle two, so
// every segment boundary is a record boundary.
//
// Retention: the log keeps at least the newest `retention_bytes` (records
// and their index), and segments older than `retention_ms` go even if
// that leaves less; beyond that it keeps only what a `block` consumer
// that holds the merge has not read. So it holds at most retention_bytes
// + one segment + what in-flight writes still point into (they keep their
// segments alive until they complete).
//
// Consumers (each client of a server output, a file, stdout) are cursors:
// a thousand clients cost a thousand positions, not a thousand copies.
// - block: lossless. Once its cursor is within `limit` (the smaller of its
//   max_buffer and the high-water mark) of the head it is *engaged*: the
//   log keeps what it has not read, and append() returns false while it
//   is `limit` or more behind (the merger stops its conveyor belt). A
//   block consumer that starts far behind (a resume from the oldest
//   record) does not hold the merge until it has caught up that close; if
//   it falls out of the retained window meanwhile it is dropped.
// - disconnect: never holds the merge; dropped once its cursor leaves the
//   retained window, or, once it has been within its max_buffer of the
//   head, when it falls more than that behind.
// A dropped consumer is notified and stops reading; its owner closes it.
//
// Pure: no I/O, no clock of its own (tick() tells it the time). Loop
// thread only.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "record/key.h"

namespace chronomerge {

enum class ConsumerPolicy { block, disconnect };

// Why the log dropped a consumer.
enum class DropReason {
  none,
  too_slow,       // disconnect: more than max_buffer behind the head
  out_of_window,  // its cursor left the retained window
};
std::string_view to_string(DropReason reason);

struct OutputLogOptions {
  size_t high_water_mark = 1 << 20;
  // 0: keep only what a consumer still has to read (the dead-letter file).
  size_t retention_bytes = 0;
  std::optional<uint64_t> retention_ms;  // shortens retention; unset: off
  size_t segment_bytes = 64 << 10;
  std::string run_id;
  // How keys compare: string keys keep their text, others are ordinals.
  KeyType key_type = KeyType::integer;
};

class OutputLog {
 public:
  using ConsumerId = uint64_t;
  using SourceId = uint32_t;

  // A run of whole records, stored contiguously. The segment is kept
  // alive by the slice, so a write may outlive the log's retention of it.
  struct Segment;
  // Where a record came from in a source that commits what was written (a
  // Kafka partition): its source and ParsedRecord::origin.
  struct Origin {
    SourceId source = 0;
    uint64_t position = 0;
  };
  struct Slice {
    std::shared_ptr<const Segment> segment;
    std::string_view bytes;
    uint64_t first_offset = 0;  // offset of the first record in `bytes`
  };

  struct ConsumerOptions {
    ConsumerPolicy policy = ConsumerPolicy::block;
    size_t max_buffer = SIZE_MAX;
    // Only records of these feeds (source_id()); empty: every record.
    std::vector<SourceId> sources;
    // Offset of the first record to read (see locate()); unset: the head.
    std::optional<uint64_t> start;
    // Also read heartbeat records (append_heartbeat()); others pass over
    // them.
    bool heartbeats = false;

    // From the head on, lossless: a file, stdout.
    static ConsumerOptions lossless(size_t max_buffer, bool heartbeats = false) {
      ConsumerOptions options;
      options.max_buffer = max_buffer;
      options.heartbeats = heartbeats;
      return options;
    }
  };

  // Where a resume request starts: an offset, or a gap (what it asks for
  // is no longer retained, or names another run).
  struct Location {
    bool gap = false;
    uint64_t offset = 0;
  };

  explicit OutputLog(OutputLogOptions options);
  // Retains only what consumers have yet to read.
  explicit OutputLog(size_t high_water_mark);
  OutputLog(const OutputLog&) = delete;
  OutputLog& operator=(const OutputLog&) = delete;

  // --- producer side (the merger) ---

  // The id records of the feed `name` carry. Stable for the life of the
  // log: a feed removed and added again by name keeps its id.
  SourceId source_id(std::string_view name);

  // Appends `record` and a '\n' with its key and the feeds it came from,
  // and the origins to report once it is written (see
  // set_written_callback()). Returns false when the log is full: the
  // caller should stop appending until the demand callback runs. Appending
  // while full is allowed (nothing is lost) but defeats backpressure.
  bool append(std::string_view record, const Key& key, std::span<const SourceId> sources,
              std::span<const Origin> origins = {});
  // Several pieces as one record (combine mode).
  bool append_parts(std::initializer_list<std::string_view> parts, const Key& key,
                    std::span<const SourceId> sources, std::span<const Origin> origins = {});
  // A record without key or source (the dead-letter file).
  bool append(std::string_view record) { return append(record, Key{}, {}); }
  // A heartbeat record (`{"<key>": K, "<field>": true}`, rendered by the
  // caller) promising that nothing older follows: only consumers that ask
  // for heartbeats read it.
  bool append_heartbeat(std::string_view record, const Key& key);
  // The key of the newest record (or heartbeat) appended; nullopt if none
  // is retained.
  std::optional<Key> newest_key() const;
  bool full() const { return head_position_ >= full_at_; }

  // No more records will come. Consumers drain what they have, then see
  // ended() && lag == 0.
  void end();
  bool ended() const { return ended_; }

  // The time, in ms, for retention_ms and the time the merge was held.
  void tick(uint64_t now_ms);

  // Called (from consume(), unsubscribe() or tick()) when the log stops
  // being full. Must not destroy the log.
  void set_demand_callback(std::function<void()> callback) { on_demand_ = std::move(callback); }

  // Runs for each origin of a record once the record is *written*: every
  // engaged block consumer (a file, stdout, a Kafka output, a block client)
  // has moved past it, which for those sinks means their write completed;
  // at once when there is no such consumer (disconnect clients never hold
  // it back). Origins are reported in append order. The callback must not
  // call into the log.
  void set_written_callback(std::function<void(const Origin&)> callback) {
    on_written_ = std::move(callback);
  }
  // Origins appended and not yet reported.
  size_t unwritten_origins() const { return unwritten_.size(); }

  // --- consumer side (sinks) ---

  const std::string& run_id() const { return options_.run_id; }
  KeyType key_type() const { return options_.key_type; }
  // Offsets: the next record appended, and the oldest retained.
  uint64_t head_offset() const { return head_offset_; }
  uint64_t oldest_offset() const;

  // The offset right after offset `after` of run `run`; a gap if `run` is
  // another run or that record is no longer retained (or never was).
  Location locate_after(std::string_view run, uint64_t after) const;
  // The first record with key >= `key`, then past the first `skip`
  // records whose key equals it, counting only records of `sources` (if
  // not empty). A gap if a record that could match was dropped by
  // retention. Exact while keys never go backwards in the log.
  Location locate_key(const Key& key, uint64_t skip, std::span<const SourceId> sources) const;

  // The offset of the first retained record at or after `offset` that is
  // of `sources` (any record if empty); the head offset if none is yet.
  uint64_t first_match(uint64_t offset, std::span<const SourceId> sources) const;

  // `notify` runs from flush() when the consumer has something to read,
  // the log has ended, or the consumer was dropped.
  ConsumerId subscribe(ConsumerOptions options, std::function<void()> notify);
  void unsubscribe(ConsumerId id);

  // Appends views of up to `max_bytes` (at least one record, if any) of
  // what the consumer has not read to `out`, and sets `*end` to the
  // position consume_to() moves to once they are written (past records a
  // filter skipped, too). Returns the bytes added. Records at the cursor
  // that the filter skips are passed over at once.
  size_t peek(ConsumerId id, std::vector<Slice>& out, size_t max_bytes, uint64_t* end);
  // The consumer has taken everything before byte position `end`.
  void consume_to(ConsumerId id, uint64_t end);
  // The consumer (without a filter) has taken the next `bytes`.
  void consume(ConsumerId id, size_t bytes) { consume_to(id, position(id) + bytes); }
  // Position of the consumer's cursor, in bytes of the stream.
  uint64_t position(ConsumerId id) const;
  // Bytes between the consumer's cursor and the head.
  size_t lag(ConsumerId id) const;
  DropReason dropped(ConsumerId id) const;
  // Time this consumer held the merge (engaged block consumer at its limit).
  uint64_t held_ms(ConsumerId id) const;

  // Notifies every consumer with something to read (or at the end, or
  // dropped). The owner calls it after a merger run, so sinks start writing
  // in batches rather than once per record.
  void flush();

  // --- observation ---
  uint64_t head() const { return head_position_; }  // bytes appended in total
  uint64_t records() const { return head_offset_; }
  size_t retained_bytes() const { return retained_bytes_; }  // records and index
  uint64_t retained_records() const { return head_offset_ - oldest_offset(); }
  std::optional<Key> oldest_key() const;
  size_t consumer_count() const { return consumers_.size(); }
  size_t high_water_mark() const { return options_.high_water_mark; }

 private:
  struct Consumer {
    uint64_t position = 0;
    size_t limit = 0;  // block: the hold point; disconnect: max_buffer
    ConsumerPolicy policy = ConsumerPolicy::block;
    // Has been within `limit` of the head. block: holds the merge and its
    // unread bytes from then on; disconnect: may be too slow from then on.
    bool engaged = false;
    DropReason dropped = DropReason::none;
    std::vector<SourceId> sources;  // sorted
    bool skip_heartbeats = true;
    uint64_t held_ms = 0;
    std::function<void()> notify;
  };
  struct Place {  // a record in the log
    size_t segment;
    size_t index;
  };

  // The segment the next record of `record_bytes` goes to: the newest one
  // if it has room, else new_segment().
  Segment& writable_segment(size_t record_bytes);
  Segment& new_segment(size_t record_bytes);
  // After a record of `bytes` was written at the segment's end: counts and
  // indexes it. Returns !full().
  bool appended(Segment& segment, size_t bytes, const Key& key, std::span<const SourceId> sources,
                std::span<const Origin> origins);
  // Returns the bytes the segment's index grew by.
  size_t index_record(Segment& segment, const Key& key, std::span<const SourceId> sources);
  void update_trim_point();
  // What an append may have to do besides counting (see appended()).
  void after_append();
  void recompute();
  void trim();
  void drop(Consumer& consumer, DropReason reason);
  // Moves a consumer's cursor (and engages, drops or releases the merge).
  void advance(Consumer& consumer, uint64_t position);
  void account_held(bool was_full);
  // Reports the origins of the records every engaged block consumer has
  // passed (see set_written_callback()).
  void report_written();
  void add_origins(std::span<const Origin> origins);
  std::optional<Place> place_of_offset(uint64_t offset) const;
  std::optional<Place> place_of_position(uint64_t position) const;
  uint64_t position_of(Place place) const;
  Key key_at(Place place) const;
  bool matches(const Consumer& consumer, Place place) const;
  static Consumer filter_of(std::span<const SourceId> sources);
  bool next(Place& place) const;  // the following record; false at the head

  OutputLogOptions options_;
  uint64_t head_position_ = 0;
  uint64_t head_offset_ = 0;
  size_t retained_bytes_ = 0;
  bool ended_ = false;
  uint64_t now_ms_ = 0;
  // The newest key retention dropped: a key resume at or before it may
  // have missed records.
  std::optional<Key> dropped_key_;
  std::deque<std::shared_ptr<Segment>> segments_;
  std::vector<std::shared_ptr<Segment>> spare_;
  static constexpr size_t max_spare_segments = 32;
  std::unordered_map<std::string, SourceId> source_ids_;
  // What heartbeat records carry as their source, once there is one.
  std::optional<SourceId> heartbeat_source_;
  std::unordered_map<ConsumerId, Consumer> consumers_;
  ConsumerId next_id_ = 1;
  // append() is O(1): it compares the head with precomputed positions.
  uint64_t full_at_ = UINT64_MAX;      // min over engaged block consumers of position + limit
  uint64_t overflow_at_ = UINT64_MAX;  // min over disconnect consumers of position + limit + 1
  std::optional<ConsumerId> holder_;   // the consumer at full_at_ while full
  uint64_t trim_above_ = UINT64_MAX;   // retained_bytes_ at which the front may go
  uint64_t held_since_ms_ = 0;
  std::function<void()> on_demand_;
  // Origins of records not yet written, in append order, with the byte
  // position where their record ends.
  struct Unwritten {
    uint64_t end;
    Origin origin;
  };
  std::deque<Unwritten> unwritten_;
  std::function<void(const Origin&)> on_written_;
};

struct OutputLog::Segment {
  uint64_t start = 0;  // byte position of data[0]
  uint64_t first = 0;  // offset of its first record
  std::unique_ptr<char[]> data;
  size_t size = 0;
  size_t capacity = 0;
  // One per record, in order: one push per append.
  struct Entry {
    uint32_t end;         // the record ends before data[end] (after its '\n')
    uint32_t source_end;  // its sources: sources[previous source_end, source_end)
    int64_t ordinal;      // its key
  };
  std::vector<Entry> entries;
  std::vector<SourceId> sources;
  int64_t max_ordinal = INT64_MIN;  // of its keys (what retention drops)
  std::string texts;                // string keys, concatenated
  std::vector<uint32_t> text_ends;  // record i's key text ends before text_ends[i]
  uint64_t last_append_ms = 0;

  uint64_t end() const { return start + size; }
  size_t index_bytes() const;
  size_t footprint() const { return size + index_bytes(); }
  void clear();
};

// The append path is inline: the merge appends every record it emits, and
// the calls of the path were 7 % of the samples of a K=8 one-shot merge,
// most of them for nothing to do (no origins, no consumer to drop, no
// segment to let go).
inline OutputLog::Segment& OutputLog::writable_segment(size_t record_bytes) {
  if (!segments_.empty()) {
    Segment& back = *segments_.back();
    if (back.capacity - back.size >= record_bytes) return back;
  }
  return new_segment(record_bytes);
}

inline size_t OutputLog::index_record(Segment& segment, const Key& key,
                                      std::span<const SourceId> sources) {
  segment.sources.insert(segment.sources.end(), sources.begin(), sources.end());
  segment.entries.push_back(Segment::Entry{static_cast<uint32_t>(segment.size),
                                           static_cast<uint32_t>(segment.sources.size()),
                                           key.ordinal});
  segment.max_ordinal = std::max(segment.max_ordinal, key.ordinal);
  size_t bytes = sizeof(Segment::Entry) + sources.size() * sizeof(SourceId);
  if (options_.key_type == KeyType::string) {
    segment.texts += key.text;
    segment.text_ends.push_back(static_cast<uint32_t>(segment.texts.size()));
    bytes += key.text.size() + sizeof(uint32_t);
  }
  segment.last_append_ms = now_ms_;
  return bytes;  // what the index grew by (Segment::index_bytes)
}

inline bool OutputLog::appended(Segment& segment, size_t bytes, const Key& key,
                                std::span<const SourceId> sources,
                                std::span<const Origin> origins) {
  segment.size += bytes;
  retained_bytes_ += bytes + index_record(segment, key, sources);
  head_position_ += bytes;
  ++head_offset_;
  if (!origins.empty()) add_origins(origins);
  if (head_position_ >= overflow_at_ || retained_bytes_ >= trim_above_ || !unwritten_.empty() ||
      full()) {
    after_append();
  }
  return !full();
}

inline bool OutputLog::append(std::string_view record, const Key& key,
                              std::span<const SourceId> sources, std::span<const Origin> origins) {
  const size_t bytes = record.size() + 1;
  Segment& segment = writable_segment(bytes);
  char* at = segment.data.get() + segment.size;
  std::memcpy(at, record.data(), record.size());
  at[record.size()] = '\n';
  return appended(segment, bytes, key, sources, origins);
}

}  // namespace chronomerge
