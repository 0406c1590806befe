// LineBatch: one read of a feed, framed into lines and validated, ready to
// be queued without a copy.
//
// Every transport ends here: the bytes of a read lie in a block, frame()
// cuts them into lines with the feed's LineFramer (which carries a line
// that spans reads over to the next one) and validates them with the
// feed's RecordParser: the whole lines of the read in one run of the
// vector scanner, the rest (lines it leaves to the scalar scanner, lines
// spanning reads) one by one. The records that lie whole in the block stay views
// into it; the few lines assembled from two reads are copied into one
// small block of their own. The feed then hands the runs() to its host, in
// arrival order, each with the block that keeps its bytes alive.
//
// A batch is not thread-safe; it belongs to one thread at a time. A feed
// hands it to a thread-pool worker for frame() and takes it back on the
// loop thread (see StreamFeed, FileFeed); since the framer's state lives in
// the batch, a feed has at most one batch in flight and reads in order.
// It needs no event loop.
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "merge/feed_queue.h"
#include "record/line_framer.h"
#include "record/record_parser.h"

namespace chronomerge {

class LineBatch {
 public:
  LineBatch(size_t max_line_bytes, RecordParser parser);

  // Records of one block, consecutive in arrival order, with their keys'
  // texts where the key type is string.
  using Run = RecordRun;
  // A line that is not a record, with its length for an overlong one.
  struct Rejected {
    LineError error;
    std::string text;  // the line, or the head of an overlong one
    size_t length;
    uint64_t line_number;  // in the feed's input, from 1 (LineFramer::line_number())
  };

  // Frames the first `n` bytes of `block`, after what earlier calls left
  // unfinished, and validates the lines. `block` counts with `block_bytes`
  // against its queue's water marks (its capacity, or less if that is all
  // it occupies). Results accumulate until clear().
  // The reference is moved, never copied, so that a worker thread leaves
  // the block's count of references alone (see RecordBlockPool).
  void frame(std::shared_ptr<RecordBlock>&& block, size_t n, size_t block_bytes);
  // End of input: a final unterminated line is delivered as a line.
  void finish();
  // The producer went away mid-line: forget the partial line. Returns the
  // bytes discarded (0 if none).
  size_t discard_partial() { return framer_.discard_partial(); }

  // The results, in arrival order. The views stay valid until clear().
  std::span<Run> runs();
  std::span<Rejected> rejected() { return rejected_; }
  // Lets go of the results and of every reference to a block.
  void clear();

  // The parser, replaced when a reload changed the feed's key settings;
  // `version` tells the feed which settings the batch has.
  const RecordParser& parser() const { return parser_; }
  uint64_t parser_version() const { return parser_version_; }
  // REQUIRES: between batches (no results held): whether a record keeps
  // its key's text follows the parser.
  void set_parser(RecordParser parser, uint64_t version) {
    assert(records_.empty());
    parser_ = std::move(parser);
    parser_version_ = version;
  }

  // Whether lines() scans runs shorter than one step of the vector
  // scanner too (tests and the fuzzer do, to compare the two scanners on
  // every input); by default such runs are parsed line by line.
  void scan_short_runs(bool scan) { scan_short_runs_ = scan; }

  // LineFramer visitor. lines() takes the whole lines of a block in one
  // run: with a vector level the parser scans the run at once
  // (RecordParser::scan_lines), and only the lines it did not accept are
  // framed and parsed one by one, by the scalar scanner.
  void line(std::string_view text);
  void lines(std::string_view run);
  void overlong(std::string_view head, size_t total);

 private:
  // Moves the lines assembled in carry_ into a block of their own and cuts
  // the records into runs.
  void seal();
  // A valid record, from the scalar scanner: of the block being framed,
  // or (`owner` carried_owner) assembled in carry_.
  void add(std::string_view text, ParsedRecord&& parsed, uint32_t owner);
  // Whether records_ has a key text beside each record (texts_).
  bool keeps_texts() const { return parser_.spec().type == KeyType::string; }
  void reject(LineError error, std::string_view text);

  LineFramer framer_;
  RecordParser parser_;
  uint64_t parser_version_ = 0;
  const RecordBlock* block_ = nullptr;  // what frame() is framing
  std::vector<BlockRecord> records_;
  // The keys' texts, parallel to records_ where keeps_texts(), else empty.
  std::vector<std::string> texts_;
  // The owner of each record, parallel to records_: owners_[i] indexes
  // blocks_.
  std::vector<uint32_t> owners_;
  std::vector<BlockOwner> blocks_;
  // Lines assembled from two reads, back to back, and where they go.
  std::string carry_;
  struct Carried {
    size_t record;  // index in records_
    size_t offset;  // in carry_
    size_t length;
  };
  std::vector<Carried> carried_;
  std::vector<Run> runs_;
  std::vector<Rejected> rejected_;
  std::vector<ScannedLine> scanned_;  // lines(), reused
  // How many runs lines() frames line by line before it tries the vector
  // scanner again, after a run where it accepted under half of the lines.
  static constexpr int skipped_runs = 16;
  int skip_scans_ = 0;
  bool scan_short_runs_ = false;
  bool sealed_ = true;
};

}  // namespace chronomerge
