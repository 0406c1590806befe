// WriteBatch: what one write of a writer carries — views of the merged
// stream (which keep their chunks alive while the write is in flight) and
// the libuv buffers pointing into them.
#pragma once

#include <uv.h>

#include <cstddef>
#include <string>
#include <vector>

#include "output/output_cursor.h"

namespace chronomerge {

struct WriteBatch {
  // Bytes written before the slices (a resume answer); not part of the
  // stream, so not in `bytes`.
  std::string preamble;
  std::vector<OutputLog::Slice> slices;
  std::vector<uv_buf_t> bufs;
  size_t bytes = 0;    // in the batch
  size_t written = 0;  // of those, written so far (short writes continue)

  // Takes up to `max_bytes` of what `cursor` has pending (after clearing
  // the batch, but for its preamble); returns the bytes taken. With `whole_records`, the batch
  // ends after its last newline (a record longer than `max_bytes` is
  // taken whole), so a failed write never leaves the cursor inside one.
  size_t fill(OutputCursor& cursor, size_t max_bytes, bool whole_records = false);
  // After a short write of `n` more bytes: the buffers start at the rest.
  void advance(size_t n);
  void clear();
};

// The bytes of the whole records among the first `limit` bytes of `slices`.
size_t whole_records_in(const std::vector<OutputLog::Slice>& slices, size_t limit);
// Newlines in `slices`: the records they hold.
uint64_t count_records(const std::vector<OutputLog::Slice>& slices);

}  // namespace chronomerge
