// The vector scanner: validates runs of NDJSON lines 64 bytes at a time.
//
// Stage 1 classifies every byte of a 64-byte chunk at once (AVX-512BW: one
// register; AVX2: two; SSE2: four) into bitmasks — quotes, backslashes,
// whitespace, newlines, each structural character, control and non-ASCII
// bytes, and the bytes numbers and literals are made of — and derives the
// string spans from the quote mask (a prefix XOR) and the token starts:
// structural characters, newlines and opening quotes outside strings, and
// the first byte of each run of other bytes (a number or literal).
//
// It works on a whole run of lines at once, not line by line: the masks of
// one chunk carry into the next across line ends, newlines are tokens like
// the others, and the string and array parities restart at every newline,
// so a broken line cannot disturb the next. The fixed cost per line is
// then a few bit operations where its newline falls, and reading its key.
// The rules run on words of masks: one chunk per 64-bit word at SSE2, and
// 8 (AVX-512) or 4 (AVX2) chunks side by side in a vector register, one
// per lane, for runs without whitespace between tokens (what NDJSON
// writers emit); vector_scanner_stage1.inc writes them once for every
// word type.
//
// It decides the common record: an object whose members are strings,
// numbers, literals and arrays of those. The whole grammar is checked with
// bit operations, no branch per token: which token may follow which (the
// token after each '{', ',', name, ':', '[', value and newline: one byte
// on where there is no whitespace between tokens, else found by an
// addition that carries through the bytes up to it), and which byte may
// follow which inside a number. The key and the heartbeat flag are read at
// their member names (stage 1 marks the names of their size and first
// byte), the last duplicate winning as in the scalar scanner.
// Non-ASCII bytes inside strings are checked as UTF-8 with simdjson's
// validator.
//
// It is a fast path, not a second authority: for each line it answers
// "valid, and here is what it holds" or "not sure". Anything it does not
// accept — an error of any kind, a backslash escape, an object nested in
// another, an array in an array, a top level that is not an object, a line
// over max_line_bytes, an empty line — the scalar scanner and the framer decide,
// and they name the earliest error. So the two can differ only if this
// one accepts a line the scalar one rejects, or reads another key: what
// the differential tests and the fuzz targets check.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "record/line_scan.h"
#include "record/simd_level.h"

namespace chronomerge {

// One line of a run, as the vector scanner saw it.
struct ScannedLine {
  uint32_t begin = 0;     // offset of its first byte in the run
  uint32_t length = 0;    // up to its '\n' (excluded); a '\r' before it included
  bool accepted = false;  // valid JSON, `scan` filled; else the scalar scanner decides
  LineScan scan;          // pointers into the run
};

struct VectorScanner {
  // Lines longer than this go to the scalar scanner (their masks would not
  // fit the scanner's window; telemetry lines are far shorter).
  static constexpr size_t max_line_bytes = 62 * 64;
  // The key's and the heartbeat field's names it finds are at most this
  // long (RecordParser::scans_runs() sends longer ones to the scalar
  // scanner).
  static constexpr size_t max_name_bytes = 63;

  // Scans `lines`, a run of whole lines each ending in '\n' (a last one
  // without is a line too), and appends one ScannedLine per line, empty
  // ones included, in order. `key_field`: the key's top-level member name.
  // At SimdLevel::scalar, appends nothing: the caller frames line by line.
  static void scan_lines(SimdLevel level, std::string_view lines, std::string_view key_field,
                         std::string_view heartbeat_field, std::vector<ScannedLine>& out);
  // The bytes one step of scan_lines() classifies at `level` (a run is
  // padded to whole steps): 512 at AVX-512, 256 at AVX2, 64 at SSE2, 0 at
  // the scalar level.
  static size_t step_bytes(SimdLevel level);
};

}  // namespace chronomerge
