// RecordParser: decides whether one line is a record and extracts its key.
//
// One pass over the line validates it completely as a JSON object (RFC 8259:
// strings with their escapes and UTF-8, numbers, literals, nesting, no
// trailing commas, nothing after the closing brace but JSON whitespace) and,
// in the same pass, locates the key and the optional heartbeat flag. Nothing
// is allocated for a record whose key is not a string.
//
// Two scanners make that pass: the vector scanner (vector_scanner.h),
// which accepts the common record 64 bytes at a time over a whole run of
// lines (scan_lines(), what feeds use), and the scalar scanner, the
// reference, which parse() runs on one line and which decides every line
// the vector scanner does not accept.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "record/key.h"
#include "record/simd_level.h"
#include "record/vector_scanner.h"

namespace chronomerge {

// Why a line is not a record. Values are stable: they name metrics labels.
enum class LineError {
  not_json,        // not valid JSON (syntax, broken escape, trailing comma...)
  not_object,      // valid JSON, but not an object
  missing_key,     // the key field or pointer target is absent
  wrong_key_type,  // present but of another JSON type or unparsable as key
  key_overflow,    // an integer key that does not fit in int64
  too_long,        // longer than max_line_bytes (reported by the framer)
  too_deep,        // nested deeper than RecordParser::max_depth
};
// Every LineError, in the order of their values: counters indexed by
// LineError are arrays of this size.
inline constexpr std::array<LineError, 7> line_errors = {
    LineError::not_json,       LineError::not_object,   LineError::missing_key,
    LineError::wrong_key_type, LineError::key_overflow, LineError::too_long,
    LineError::too_deep,
};
static_assert(static_cast<size_t>(line_errors.back()) + 1 == line_errors.size(),
              "line_errors lists every LineError in order");
// Counts by LineError.
using LineErrorCounts = std::array<uint64_t, line_errors.size()>;

std::string_view to_string(LineError error);

// Where the key is and how to read it.
struct KeySpec {
  // A top-level field name ("time") or an RFC 6901 JSON pointer
  // ("/meta/ts"); a leading '/' selects pointer syntax.
  std::string path = "time";
  KeyType type = KeyType::integer;
  // Optional top-level boolean field marking heartbeat lines.
  std::string heartbeat_field;
};

struct ParsedRecord {
  Key key;
  // The key's JSON value as written in the line (for combine output).
  uint32_t key_offset = 0;
  uint32_t key_length = 0;
  // The line has `heartbeat_field: true` at top level.
  bool heartbeat = false;
  // Where the line came from, for a source that commits what was written
  // (a Kafka partition: the message's offset + 1, the offset to commit
  // once it is written). 0: not tracked. Set by the feed, not the parser.
  uint64_t origin = 0;
};

// A record as a run of them travels from a feed's read block to the
// merger's queue, which stores it as it is: 32 bytes, copied with the run
// rather than field by field. What does not fit beside it travels apart:
// a string key's text (see RecordRun), never an origin (runs come from
// stream and file feeds, which track none).
struct BlockRecord {
  int64_t ordinal = 0;         // Key::ordinal
  const char* data = nullptr;  // the line, without its newline
  uint32_t length = 0;
  uint32_t key_offset = 0;  // the key's JSON value as written in the line
  uint32_t key_length = 0;
  bool heartbeat = false;

  BlockRecord() = default;
  // `parsed` without a key text or an origin: a BlockRecord has no room
  // for them.
  BlockRecord(std::string_view bytes, const ParsedRecord& parsed);
  std::string_view bytes() const { return {data, length}; }
};
static_assert(sizeof(BlockRecord) == 32, "a queue slot: keep it at half a cache line");

class RecordParser {
 public:
  static constexpr int max_depth = 64;

  // `level`: the vector scanner's instruction set (see vector_scanner.h);
  // scalar runs the reference scanner alone. Every level gives the same
  // answers.
  explicit RecordParser(KeySpec spec, SimdLevel level = default_simd_level());

  // Validates `line` (no trailing newline; may be empty -> not_json) and
  // fills `out`. Returns nullopt on success. `out` is unspecified on error.
  // Errors rank: not_json / too_deep (whichever the scan meets first), then
  // not_object, missing_key, and the key's own errors. When a member name
  // repeats, the last occurrence wins (for the key's path and for the
  // heartbeat field), as in nlohmann/json.
  // Thread-safe: a RecordParser holds no per-call state, so one instance
  // may be shared by threads.
  std::optional<LineError> parse(std::string_view line, ParsedRecord& out) const;

  // Whether scan_lines() scans whole runs of lines: at a vector level, for a key that is a
  // top-level member (a pointer into a member can reach an array element
  // the vector scanner does not read) whose name, and the heartbeat
  // field's, holds no quote, backslash or control byte.
  bool scans_runs() const;
  // Scans a run of whole lines with the vector scanner (see
  // VectorScanner::scan_lines; appends nothing unless scans_runs()). A line
  // it accepted becomes a record with finish(); the others go to parse().
  void scan_lines(std::string_view lines, std::vector<ScannedLine>& out) const;
  // The record of `line`, which a scan found valid JSON (`scan` points
  // into it): the key's own errors, or nullopt with `out` filled.
  std::optional<LineError> finish(std::string_view line, const LineScan& scan,
                                  ParsedRecord& out) const;
  // The same into a BlockRecord; a string key's text goes to `text`
  // (REQUIRES: not null for KeyType::string; other types leave it alone).
  // Inline, around a call that returns a plain code: a std::optional
  // returned from a call is built in memory by two stores and read back
  // by one load, which the CPU cannot forward from them: a stall per
  // line.
  std::optional<LineError> finish(std::string_view line, const LineScan& scan, BlockRecord& out,
                                  std::string* text) const {
    const int code = finish_code(line, scan, out, text);
    if (code == 0) return std::nullopt;
    return static_cast<LineError>(code - 1);
  }

  const KeySpec& spec() const { return spec_; }
  SimdLevel simd_level() const { return level_; }

  // False for a pointer path with a '~' not followed by '0' or '1' (RFC 6901
  // escapes); the constructor would keep such a '~' literally. Field names
  // (no leading '/') are always valid.
  static bool valid_key_path(std::string_view path);

 private:
  // finish()'s work: 0, or the line's LineError + 1.
  int finish_code(std::string_view line, const LineScan& scan, BlockRecord& out,
                  std::string* text) const;
  // The pointer's reference tokens into tokens_.
  void split_pointer(std::string_view path);

  KeySpec spec_;
  SimdLevel level_;
  bool vector_ = false;  // scans_runs()
  // The pointer's reference tokens, unescaped (~1 -> /, ~0 -> ~); a plain
  // field name is one token.
  std::vector<std::string> tokens_;
};

}  // namespace chronomerge
