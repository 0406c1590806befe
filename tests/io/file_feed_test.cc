// FileFeed on a real loop. A file is read and framed in blocks on the
// thread pool, so these cases put line ends, CRLF pairs, empty lines, long
// and overlong lines on and across block boundaries and at the end of the
// file, and check that the merged output is exactly the file's valid
// lines, in file order, with every other line counted once.
#include "feeds/file_feed.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "daemon/pipeline.h"
#include "io/loop_support.h"

using namespace chronomerge;
using namespace chronomerge::testing;

namespace {

struct Run {
  std::string output;
  FeedCounters counters;
};

// Gives `config` a file output in `dir`; returns the file's path.
std::string add_file_output(Config& config, const TempDir& dir) {
  std::string path = (dir.path / "out.ndjson").string();
  config.outputs.push_back(file_output(path));
  return path;
}

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
  const std::string output = add_file_output(config, dir);

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

// Read sizes follow the marks (FileFeed::read_bytes); run_file() sets the
// low mark to a quarter of the high one.
constexpr size_t small_reads = 16 << 10;  // reads of FileFeed::min_read_bytes
constexpr size_t large_reads = 1 << 20;   // reads of 192 KiB

}  // namespace

TEST_CASE("FileFeed reads blocks that fit under the low mark with their records' slots") {
  // A paused feed resumes at its low mark; with a block as large as that
  // mark, the block's ring slots kept memory() above it until the block
  // was almost merged, and the merge waited for the next read.
  auto fits = [](size_t high, size_t low) {
    FeedConfig config;
    config.high_water_mark = high;
    config.low_water_mark = low;
    const size_t read = FileFeed::read_bytes(config);
    CAPTURE(high);
    CAPTURE(low);
    CAPTURE(read);
    CHECK(read >= FileFeed::min_read_bytes);
    CHECK(read <= FileFeed::max_read_bytes);
    CHECK(read <= std::max(high / 4, FileFeed::min_read_bytes));
    // Records of 96 bytes: one slot per 96 bytes of block.
    if (low / 4 * 3 >= FileFeed::min_read_bytes) {
      CHECK(read + read / 96 * FeedQueue::slot_bytes <= low);
    }
  };
  fits(default_feed_high_water_mark, default_feed_low_water_mark);
  fits(1 << 20, 256 << 10);  // a one-shot run of up to 16 files
  fits(64 << 20, 16 << 20);
  fits(1 << 20, 512 << 10);
  fits(16 << 10, 4 << 10);  // a thousand files: the smallest reads
  CHECK(FileFeed::read_bytes(FeedConfig{}) == 192 << 10);
}

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
  // 8 KiB reads, lines capped at 6000 bytes: each 20,000-byte line spans
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
  constexpr size_t read_size = FileFeed::min_read_bytes;
  for (size_t size : {size_t{100}, read_size - 1, read_size, read_size + 1, read_size * 3 / 2}) {
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

namespace {

// Writes `data` to `fd` and closes it, on a thread of its own, so that a
// pipe can be fuller than its kernel buffer; SIGPIPE is blocked there.
std::thread write_and_close(int fd, std::string data) {
  return std::thread([fd, data = std::move(data)] {
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
    std::string_view rest = data;
    while (!rest.empty()) {
      ssize_t n = ::write(fd, rest.data(), rest.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      rest.remove_prefix(static_cast<size_t>(n));
    }
    ::close(fd);
  });
}

// Records with keys 0, 2, 4, ... (`odd`: 1, 3, 5, ...) up to `bytes`.
std::string keyed_records(size_t bytes, bool odd) {
  std::string out;
  for (int64_t time = odd ? 1 : 0; out.size() < bytes; time += 2) {
    out += record(time, static_cast<size_t>(time % 97)) + "\n";
  }
  return out;
}

std::string dev_fd(int fd) {
  return "/dev/fd/" + std::to_string(fd);
}

}  // namespace

// Regression: a pipe named by path (`<(zcat a.gz)` is /dev/fd/N) or a FIFO
// failed at its first read with ESPIPE, pread() at an offset.
TEST_CASE("FileFeed reads pipes and FIFOs in order") {
  SUBCASE("a FIFO whose writer comes after the feed opened it") {
    TempDir dir;
    const std::string fifo = (dir.path / "in.fifo").string();
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    // Lines across 8 KiB reads, CRLF and a malformed line mixed in.
    std::string input;
    std::string expected;
    for (int64_t time = 0; input.size() < 300'000; ++time) {
      const std::string line = record(time, static_cast<size_t>(time * 31 % 5000));
      input += line + (time % 3 ? "\n" : "\r\n");
      expected += line + "\n";
      if (time == 17) input += "{\"time\":,}\n";
    }
    Config config;
    FeedConfig feed = file_feed("in", fifo);
    feed.high_water_mark = small_reads;
    feed.low_water_mark = small_reads / 4;
    config.feeds.push_back(feed);
    const std::string output = add_file_output(config, dir);

    uv_loop_t loop;
    REQUIRE(uv_loop_init(&loop) == 0);
    std::thread writer;
    {
      Pipeline pipeline(&loop, config, false);
      // Once the loop runs, the feed has opened the FIFO (or is about to):
      // the writer opens it then, which a reader must not take for EOF.
      after(&loop, 20, [&] {
        writer = std::thread([&] {
          int fd = ::open(fifo.c_str(), O_WRONLY | O_CLOEXEC);
          if (fd >= 0) write_and_close(fd, input).join();
        });
      });
      CHECK(run_to_end(&loop, pipeline));
      const FeedCounters& counters = pipeline.feeds()[0]->counters();
      CHECK(counters.bytes_read == input.size());
      CHECK(counters.malformed == 1);
      CHECK_FALSE(counters.io_error);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
    writer.join();
    CHECK(slurp(output) == expected);
  }

  SUBCASE("a feed ahead of a silent one reads no more than a file would") {
    // "ahead" is ready, "silent" holds the merge: ahead is paused at its
    // high-water mark and the rest stays in the pipe, however much is
    // written. Then silent speaks and both merge to the end.
    int ahead[2];
    int silent[2];
    REQUIRE(::pipe2(ahead, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(silent, O_CLOEXEC) == 0);
    TempDir dir;
    Config config;
    for (auto [name, fd] : {std::pair{"ahead", ahead[0]}, std::pair{"silent", silent[0]}}) {
      FeedConfig feed = file_feed(name, dev_fd(fd));
      feed.high_water_mark = small_reads;
      feed.low_water_mark = small_reads / 4;
      config.feeds.push_back(feed);
    }
    const std::string output = add_file_output(config, dir);
    const std::string ahead_data = keyed_records(4 << 20, false);
    const std::string silent_data = keyed_records(200'000, true);

    uv_loop_t loop;
    REQUIRE(uv_loop_init(&loop) == 0);
    std::thread ahead_writer = write_and_close(ahead[1], ahead_data);
    std::thread silent_writer;
    size_t most_read = 0;
    {
      Pipeline pipeline(&loop, config, false);
      // Checked every 5 ms for 200 ms while "silent" has written nothing.
      std::function<void(int)> watch = [&](int ticks) {
        most_read = std::max<size_t>(most_read, pipeline.feeds()[0]->counters().bytes_read);
        if (ticks > 0) {
          after(&loop, 5, [&watch, ticks] { watch(ticks - 1); });
        } else {
          silent_writer = write_and_close(silent[1], silent_data);
        }
      };
      after(&loop, 5, [&watch] { watch(40); });
      CHECK(run_to_end(&loop, pipeline));
      CHECK(pipeline.feeds()[0]->counters().bytes_read == ahead_data.size());
      CHECK(pipeline.feeds()[1]->counters().bytes_read == silent_data.size());
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
    // With no reader left, a writer the feed did not drain fails (EPIPE)
    // instead of waiting for ever.
    ::close(ahead[0]);
    ::close(silent[0]);
    ahead_writer.join();
    if (silent_writer.joinable()) silent_writer.join();
    // The high-water mark, one read over it, and one in flight.
    MESSAGE("read ahead of a silent feed: " << most_read << " bytes");
    CHECK(most_read > 0);
    CHECK(most_read <= small_reads + 2 * FileFeed::min_read_bytes);
    // Even keys from one, odd from the other: the merge is every line in
    // key order.
    std::vector<std::string> lines;
    for (const std::string* data : {&ahead_data, &silent_data}) {
      for (size_t at = 0; at < data->size();) {
        const size_t nl = data->find('\n', at);
        lines.push_back(data->substr(at, nl + 1 - at));
        at = nl + 1;
      }
    }
    const auto key = [](const std::string& line) { return std::stoll(line.substr(8)); };
    std::sort(lines.begin(), lines.end(),
              [&](const std::string& a, const std::string& b) { return key(a) < key(b); });
    std::string expected;
    for (const std::string& line : lines) expected += line;
    CHECK(slurp(output) == expected);
  }

  SUBCASE("an empty pipe holds no thread: closing the feed ends the loop at once") {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    TempDir dir;
    Config config;
    config.feeds.push_back(file_feed("quiet", dev_fd(fds[0])));
    add_file_output(config, dir);
    uv_loop_t loop;
    REQUIRE(uv_loop_init(&loop) == 0);
    {
      Pipeline pipeline(&loop, config, false);
      REQUIRE(pipeline.start());
      // A read blocked in the pool would keep uv_run from returning until
      // the writer, which never writes, went away.
      after(&loop, 50, [&] { pipeline.close(); });
      uv_run(&loop, UV_RUN_DEFAULT);
      CHECK(pipeline.feeds()[0]->counters().bytes_read == 0);
      CHECK_FALSE(pipeline.feeds()[0]->counters().io_error);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
    ::close(fds[0]);
    ::close(fds[1]);
  }
}

// A pipe written a line at a time (or a followed file appended to) is read
// a little at a time. Each short read must count with its own bytes, not
// with a whole read block: at the default 1 MiB marks (256 KiB reads) the
// fourth line read would otherwise pause the feed while another holds the
// merge.
TEST_CASE("FileFeed gives a short read a block of its own size") {
  int trickle[2];
  int silent[2];
  REQUIRE(::pipe2(trickle, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(silent, O_CLOEXEC) == 0);
  TempDir dir;
  Config config;
  config.feeds.push_back(file_feed("trickle", dev_fd(trickle[0])));
  config.feeds.push_back(file_feed("silent", dev_fd(silent[0])));
  const std::string output = add_file_output(config, dir);

  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  std::string written;
  {
    Pipeline pipeline(&loop, config, false);
    // One line, then wait until the feed has read it; "silent" holds the
    // merge meanwhile, so every line stays queued.
    int lines = 0;
    std::function<void()> next = [&] {
      const bool all_read = pipeline.feeds()[0]->counters().bytes_read == written.size();
      if (lines == 12 || !all_read) {
        CHECK(all_read);
        CHECK_FALSE(pipeline.merger().paused(0));
        ::close(trickle[1]);
        ::close(silent[1]);  // both end: the merge runs to the end
        return;
      }
      const std::string line = record(2 * lines++, 10) + "\n";
      REQUIRE(::write(trickle[1], line.data(), line.size()) == static_cast<ssize_t>(line.size()));
      written += line;
      when(
          &loop, [&] { return pipeline.feeds()[0]->counters().bytes_read == written.size(); }, next,
          "the feed to read the line");
    };
    after(&loop, 1, next);
    CHECK(run_to_end(&loop, pipeline));
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
  ::close(trickle[0]);
  ::close(silent[0]);
  CHECK(slurp(output) == written);
}
