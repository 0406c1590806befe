// FileFeed on a real loop. A file is read and framed in blocks on the
// thread pool, so these cases put line ends, CRLF pairs, empty lines, long
// and overlong lines on and across block boundaries and at the end of the
// file, and check that the merged output is exactly the file's valid
// lines, in file order, with every other line counted once.
#include "feeds/file_feed.h"

#include <doctest/doctest.h>
#include <uv.h>

#include <random>
#include <string>

#include "daemon/pipeline.h"
#include "io/loop_support.h"

using namespace chronomerge;
using namespace chronomerge::testing;

namespace {

struct Run {
  std::string output;
  FeedCounters counters;
};

// Merges the single file `content` into a file output with the given
// feed high-water mark (which sets the read size) and max_line_bytes.
Run run_file(const std::string& content, size_t high_water_mark, size_t max_line_bytes) {
  TempDir dir;
  Config config;
  config.max_line_bytes = max_line_bytes;
  FeedConfig feed = file_feed("in", dir.file("in.ndjson", content));
  feed.high_water_mark = high_water_mark;
  feed.low_water_mark = high_water_mark / 4;
  config.feeds.push_back(feed);
  const std::string output = (dir.path / "out.ndjson").string();
  config.outputs.push_back(file_output(output));

  Run run;
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    Pipeline pipeline(&loop, config, false);
    CHECK(run_to_end(&loop, pipeline));
    run.counters = pipeline.feeds()[0]->counters();
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
  run.output = slurp(output);
  return run;
}

std::string record(int64_t time, size_t pad) {
  return "{\"time\":" + std::to_string(time) + ",\"pad\":\"" + std::string(pad, 'x') + "\"}";
}

// Read sizes follow the high-water mark: a quarter of it, 4 KiB at least.
constexpr size_t small_reads = 16 << 10;  // 4 KiB reads
constexpr size_t large_reads = 1 << 20;   // the largest reads

}  // namespace

TEST_CASE("FileFeed frames lines across read boundaries") {
  for (size_t high : {small_reads, large_reads}) {
    CAPTURE(high);
    // Lines from 1 byte to twice the small read size, in random order so
    // that every offset of a read boundary is hit somewhere; CRLF, empty
    // and malformed lines mixed in.
    std::mt19937 rng(static_cast<unsigned>(high));
    std::string input;
    std::string expected;
    uint64_t malformed = 0;
    const size_t target = high == small_reads ? 600'000 : 6'000'000;
    for (int64_t time = 0; input.size() < target; ++time) {
      const unsigned roll = rng() % 100;
      if (roll < 3) {
        input += roll == 0 ? "\n" : roll == 1 ? "\r\n" : "{\"time\":1,}\n";
        malformed += roll == 2;
        continue;
      }
      const size_t pad = roll < 5 ? rng() % 9000 : rng() % 300;
      const std::string line = record(time, pad);
      input += line + (roll % 2 ? "\r\n" : "\n");
      expected += line + "\n";
    }
    Run run = run_file(input, high, 1 << 20);
    CHECK(run.output.size() == expected.size());
    CHECK(run.output == expected);
    CHECK(run.counters.malformed == malformed);
    CHECK(run.counters.bytes_read == input.size());
  }
}

TEST_CASE("FileFeed skips overlong lines that span several reads") {
  // 4 KiB reads, lines capped at 6000 bytes: each 20,000-byte line spans
  // several reads and is counted once; its neighbours arrive intact.
  std::string input;
  std::string expected;
  for (int64_t time = 0; time < 40; ++time) {
    const std::string good = record(time, static_cast<size_t>(time) * 37);
    input += good + "\n" + record(time, 20'000) + "\n";
    expected += good + "\n";
  }
  Run run = run_file(input, small_reads, 6000);
  CHECK(run.output == expected);
  CHECK(run.counters.malformed == 40);
  CHECK(run.counters.malformed_by[static_cast<int>(LineError::too_long)] == 40);
}

TEST_CASE("FileFeed delivers a final line without a newline and ends at EOF") {
  for (size_t size : {size_t{100}, size_t{4095}, size_t{4096}, size_t{4097}, size_t{12'000}}) {
    CAPTURE(size);
    // Records end exactly around the read size: the last line has no
    // newline and is padded so that the file is `size` bytes long.
    std::string input;
    std::string expected;
    int64_t time = 0;
    while (input.size() + 200 < size) {
      std::string line = record(time++, 100);
      input += line + "\n";
      expected += line + "\n";
    }
    const size_t bare = record(time, 0).size();
    std::string last = record(time, size - input.size() - bare);
    input += last;
    expected += last + "\n";
    REQUIRE(input.size() == size);
    Run run = run_file(input, small_reads, 1 << 20);
    CHECK(run.output == expected);
    CHECK(run.counters.malformed == 0);
  }
}
