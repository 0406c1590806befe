#include "sinks/write_batch.h"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <string>

using namespace chronomerge;

namespace {

std::string wire(const WriteBatch& batch) {
  std::string out;
  for (const uv_buf_t& buf : batch.bufs) out.append(buf.base, buf.len);
  return out;
}

struct Log {
  Log() {
    OutputLogOptions options;
    options.run_id = "00000000000000ab";
    options.retention_bytes = 1 << 20;
    log = std::make_unique<OutputLog>(options);
  }
  std::unique_ptr<OutputLog> log;
};

}  // namespace

TEST_CASE("WriteBatch framing") {
  Log l;
  OutputLog& log = *l.log;
  log.append("{\"t\":1}");
  log.append("{\"t\":2}");
  OutputLog::ConsumerOptions from_start = OutputLog::ConsumerOptions::lossless(SIZE_MAX);
  from_start.start = 0;
  OutputCursor cursor(log, from_start, nullptr);
  WriteBatch batch;

  SUBCASE("raw: the records as they are, after the preamble") {
    batch.preamble = "hello\n";
    CHECK(batch.fill(cursor, SIZE_MAX) == 16);
    CHECK(wire(batch) == "hello\n{\"t\":1}\n{\"t\":2}\n");
  }
  SUBCASE("chunked: one HTTP chunk for the batch") {
    batch.framing = WriteBatch::Framing::chunked;
    batch.fill(cursor, SIZE_MAX);
    CHECK(wire(batch) == "10\r\n{\"t\":1}\n{\"t\":2}\n\r\n");
  }
  SUBCASE("events: one event per record, its id the run and the offset, in one chunk") {
    batch.framing = WriteBatch::Framing::events;
    batch.run = log.run_id();
    batch.fill(cursor, SIZE_MAX);
    const std::string events =
        "id: 00000000000000ab:0\ndata: {\"t\":1}\n\nid: 00000000000000ab:1\ndata: {\"t\":2}\n\n";
    CHECK(wire(batch) == fmt::format("{:x}\r\n{}\r\n", events.size(), events));
  }
  SUBCASE("a moved batch still points at its own bytes (short strings move with the object)") {
    // Regression: the chunk header and a short preamble live inside the
    // std::string objects; moving the batch into the write request left
    // the buffers pointing at the moved-from batch.
    batch.framing = WriteBatch::Framing::chunked;
    batch.preamble = "0\r\n";
    batch.fill(cursor, SIZE_MAX);
    const std::string before = wire(batch);
    WriteBatch moved = std::move(batch);
    batch.preamble = "XXXXXXXX";  // reuse the moved-from object
    CHECK(wire(moved) == before);
  }
}
