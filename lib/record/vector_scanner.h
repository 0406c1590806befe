// The vector scanner: validates one line as JSON 64 bytes at a time.
//
// Stage 1 classifies every byte of a 64-byte chunk at once (AVX-512BW: one
// register; AVX2: two; SSE2: four) into bitmasks — quotes, backslashes,
// whitespace, each structural character, control and non-ASCII bytes, and
// the bytes numbers and literals are made of — then derives the string
// spans from the quote mask (a prefix XOR) and the token starts: structural
// characters and opening quotes outside strings, and the first byte of
// each run of other bytes (a number or literal). A line of at most 128
// bytes (most records) is one 128-bit word; a longer one is a 64-bit word
// per chunk, each carrying into the next.
//
// It decides the common record, a flat object (members whose values are
// strings, numbers and literals): stage 1 checks its whole grammar with
// bit operations, no branch per token — which token may follow which (the
// token after each '{', ',', name, ':' and value, found by an addition
// that carries through the bytes up to it), and which byte may follow
// which inside a number. The key and the heartbeat flag are then read at
// their member names, the last duplicate winning as in the scalar scanner.
// Non-ASCII bytes inside strings are checked as UTF-8 with simdjson's
// validator. Nested lines are left to the scalar scanner: a token walk
// over them measured slower than it.
//
// It is a fast path, not a second authority: it answers "valid, and here
// is what it holds" or "not sure". Anything it does not accept — an error
// of any kind, a backslash escape, a line over max_line_bytes, a nested
// object or array, a top level that is not an object — goes to the scalar
// scanner, which
// decides and names the earliest error. So the two can differ only if this
// one accepts a line the scalar one rejects, or reads another key: what
// the differential tests and the fuzz target check.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "record/line_scan.h"
#include "record/simd_level.h"

namespace chronomerge {

struct VectorScanner {
  // Longer lines go to the scalar scanner (their masks would not fit the
  // stack; telemetry lines are far shorter).
  static constexpr size_t max_line_bytes = 4096;

  // True, with `scan` filled, when `line` is valid JSON; false when the
  // scalar scanner must decide (always at SimdLevel::scalar). `tokens`:
  // the key path's reference tokens.
  static bool scan(SimdLevel level, std::string_view line, const std::string* tokens,
                   int token_count, std::string_view heartbeat_field, LineScan& scan);
};

}  // namespace chronomerge
