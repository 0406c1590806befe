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
  WriteBatch() = default;
  // The buffers point into the batch's own strings, which a move may
  // relocate (short strings live inside the object): a batch not yet
  // partly written rebuilds them; one partly written must not be moved.
  WriteBatch(WriteBatch&& other) noexcept { *this = std::move(other); }
  WriteBatch& operator=(WriteBatch&& other) noexcept;
  WriteBatch(const WriteBatch&) = delete;
  WriteBatch& operator=(const WriteBatch&) = delete;

  // How the records go on the wire.
  enum class Framing {
    raw,      // as they are: one record per line
    chunked,  // one HTTP/1.1 chunk per batch
    events,   // one Server-Sent Event per record, "id: RUN:OFFSET", in one chunk
  };
  Framing framing = Framing::raw;
  std::string run;  // events: the run id of the ids

  // Bytes written before the slices (a resume answer, HTTP headers); not
  // part of the stream, so not in `bytes`.
  std::string preamble;
  std::vector<OutputLog::Slice> slices;
  std::vector<uv_buf_t> bufs;
  size_t bytes = 0;    // in the batch
  size_t written = 0;  // of those, written so far (short writes continue)

  // Takes up to `max_bytes` of what `cursor` has pending (after clearing
  // the batch, but for its framing and preamble); returns the bytes taken. With `whole_records`,
  // the batch ends after its last newline (a record longer than `max_bytes` is taken whole), so a
  // failed write never leaves the cursor inside one.
  size_t fill(OutputCursor& cursor, size_t max_bytes, bool whole_records = false);
  // Points `bufs` at the preamble and the framed slices. fill() calls it;
  // call it again after changing the preamble or the slices by hand.
  void build();
  // After a short write of `n` more bytes: the buffers start at the rest.
  void advance(size_t n);
  void clear();

 private:
  std::string frames_;  // chunk headers and event ids the buffers point into
};

// The bytes of the whole records among the first `limit` bytes of `slices`.
size_t whole_records_in(const std::vector<OutputLog::Slice>& slices, size_t limit);
// Newlines in `slices`: the records they hold.
uint64_t count_records(const std::vector<OutputLog::Slice>& slices);

}  // namespace chronomerge
