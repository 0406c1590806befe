// End to end: sinks that cannot write. A dead-letter file or a file output
// on a FIFO nobody reads, and a file output on a full disk (a small tmpfs).
// Memory stays bounded, the daemon still exits within drain_timeout_ms +
// 1 s, a file never ends in half a record, and what cannot be written is
// held (on_error: block) or dropped and counted (on_error: skip).
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "harness.h"

using namespace chronomerge::e2e;
using nlohmann::json;

namespace {

// A FIFO that the test holds open for reading and writing, so the
// daemon's open for writing finds a reader, yet nothing is ever read: its
// writes block once the pipe's 64 KiB are full.
class StuckFifo {
 public:
  explicit StuckFifo(std::string path) : path_(std::move(path)) {
    REQUIRE_MESSAGE(::mkfifo(path_.c_str(), 0644) == 0, "mkfifo: " << std::strerror(errno));
    fd_ = ::open(path_.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
    REQUIRE_MESSAGE(fd_ >= 0, "open " << path_ << ": " << std::strerror(errno));
  }
  ~StuckFifo() { ::close(fd_); }
  StuckFifo(const StuckFifo&) = delete;
  StuckFifo& operator=(const StuckFifo&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

// A tmpfs of `bytes` mounted at `path` (needs root, or CAP_SYS_ADMIN),
// unmounted when the object goes away. Declare it after the TempDir that
// holds it, so it is unmounted first.
class SmallDisk {
 public:
  SmallDisk(std::string path, size_t bytes) : path_(std::move(path)) {
    ::mkdir(path_.c_str(), 0755);
    std::string options = "size=" + std::to_string(bytes);
    if (::mount("tmpfs", path_.c_str(), "tmpfs", 0, options.c_str()) == 0) {
      mounted_ = true;
    } else {
      error_ = std::strerror(errno);
    }
  }
  ~SmallDisk() {
    if (mounted_) ::umount2(path_.c_str(), MNT_DETACH);
  }
  SmallDisk(const SmallDisk&) = delete;
  SmallDisk& operator=(const SmallDisk&) = delete;

  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }
  std::string operator/(std::string_view name) const { return path_ + "/" + std::string(name); }

  // Fills the disk with a filler file, then frees `spare` bytes of it
  // (a multiple of the page size: tmpfs allocates pages).
  void fill(size_t spare) {
    int fd = ::open(filler().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    const std::string block(4096, 'f');
    off_t size = 0;
    ssize_t n;
    while ((n = ::write(fd, block.data(), block.size())) > 0) size += n;
    int error = errno;
    CHECK_MESSAGE(error == ENOSPC, "filling the disk: " << std::strerror(error));
    REQUIRE(size > static_cast<off_t>(spare));
    REQUIRE(::ftruncate(fd, size - static_cast<off_t>(spare)) == 0);
    ::close(fd);
  }
  // The space comes back.
  void free_space() { REQUIRE(::unlink(filler().c_str()) == 0); }

 private:
  std::string filler() const { return *this / "filler"; }

  std::string path_;
  bool mounted_ = false;
  std::string error_;
};

// `count` records of about 100 bytes, keys from + 1 on.
std::string bulk_records(int from, int count) {
  std::string out;
  const std::string pad(50, 'y');
  for (int i = from; i < from + count; ++i) {
    out += "{\"time\":" + std::to_string(i + 1) + ",\"feed\":\"bus\",\"seq\":" + std::to_string(i) +
           ",\"pad\":\"" + pad + "\"}\n";
  }
  return out;
}

// True if `text` is whole NDJSON records only: nothing after the last
// newline, and every line parses as an object with a time.
bool whole_records(const std::string& text) {
  if (!text.empty() && text.back() != '\n') return false;
  for (const std::string& line : split_lines(text)) {
    json record = json::parse(line, nullptr, false);
    if (record.is_discarded() || !record.is_object() || !record.contains("time")) return false;
  }
  return true;
}

// True if every line of `part` is a line of `all`, in the same order.
bool in_order_subset(const std::string& part, const std::string& all) {
  std::vector<std::string> lines = split_lines(all);
  auto next = lines.begin();
  for (const std::string& line : split_lines(part)) {
    next = std::find(next, lines.end(), line);
    if (next == lines.end()) return false;
    ++next;
  }
  return true;
}

size_t lines_in(const std::string& text) {
  return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

json file_output(const std::string& name, const std::string& path) {
  return {{"name", name}, {"type", "file"}, {"path", path}};
}

std::string sample_of(const std::string& family, const std::string& output) {
  return family + "{output=\"" + output + "\"}";
}

size_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<size_t>(st.st_size) : 0;
}

Millis since(Clock::time_point start) {
  return std::chrono::duration_cast<Millis>(Clock::now() - start);
}

}  // namespace

// --- a stuck dead-letter file -----------------------------------------------

TEST_CASE("a dead-letter FIFO nobody reads keeps RSS within max_buffer and SIGTERM exits on time") {
  constexpr int drain_timeout_ms = 1000;
  constexpr size_t max_buffer = 1 << 20;
  // Dead letters are larger than the lines they carry: unbounded, they
  // would hold more than the flood itself.
  const size_t flood_bytes = sanitized ? 8 << 20 : 32 << 20;
  TempDir dir;
  StuckFifo fifo(dir / "dead.fifo");
  json config = {{"drain_timeout_ms", drain_timeout_ms},
                 {"feeds", {tcp_feed("bus")}},
                 {"outputs", {file_output("archive", dir / "out.ndjson")}},
                 {"deadletter", {{"path", fifo.path()}, {"max_buffer", max_buffer}}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t feed_port = daemon.feed_port("bus");
  INFO("daemon log (tail):\n" << daemon.log_tail());
  uint64_t rss_before = daemon.memory().rss_kib;

  const std::string line = "garbage " + std::string(991, 'x') + "\n";
  const size_t lines = flood_bytes / line.size();
  std::string flood;
  flood.reserve(lines * line.size());
  for (size_t i = 0; i < lines; ++i) flood += line;
  Socket producer = connect_tcp(feed_port);
  auto started = Clock::now();
  REQUIRE(write_all(producer, flood, 60s));
  auto malformed = wait_sample(
      metrics, "chronomerge_feed_malformed_total{feed=\"bus\",reason=\"not_json\"}",
      [&](double v) { return v >= static_cast<double>(lines); }, 60s);
  REQUIRE(malformed == static_cast<double>(lines));
  Memory memory = daemon.memory();
  MESSAGE("flood of " << (flood_bytes >> 20) << " MiB read in " << since(started).count()
                      << " ms; RSS " << rss_before << " KiB before, VmHWM " << memory.hwm_kib
                      << " KiB after");

  // Every dead letter was either queued for the file or dropped, counted.
  double dropped = scrape(metrics, "chronomerge_deadletter_dropped_total").value_or(-1);
  double queued = scrape(metrics, "chronomerge_deadletter_records_total").value_or(-1);
  CHECK(dropped > 0);
  CHECK(dropped + queued == static_cast<double>(lines));
  CHECK(scrape(metrics, "chronomerge_deadletter_queue_bytes").value_or(-1) <=
        static_cast<double>(max_buffer));
  CHECK(daemon.log_count("dead letters dropped") >= 1);
  if (!sanitized) CHECK(memory.hwm_kib < rss_before + (max_buffer >> 10) + (16 << 10));

  // The write stuck in the FIFO cannot finish: the drain is cut short at
  // its deadline, and the process still exits, with status 0 and a log
  // line naming the dead-letter file.
  auto signalled = Clock::now();
  daemon.signal(SIGTERM);
  ExitStatus status = daemon.wait(Millis(drain_timeout_ms + 5000));
  Millis elapsed = since(signalled);
  MESSAGE("exited " << elapsed.count() << " ms after SIGTERM");
  CHECK(status.code == 0);
  CHECK(status.signal == 0);
  CHECK(elapsed < Millis(drain_timeout_ms + 1000));
  std::vector<std::string> timeout_lines;
  for (const std::string& l : split_lines(daemon.log())) {
    if (l.find("drain timeout") != std::string::npos) timeout_lines.push_back(l);
  }
  REQUIRE(timeout_lines.size() == 1);
  CHECK(timeout_lines[0].find("dead-letter file " + fifo.path()) != std::string::npos);
  CHECK(timeout_lines[0].find("bytes") != std::string::npos);
  CHECK(timeout_lines[0].find("merged output") == std::string::npos);
}

TEST_CASE("a dead-letter FIFO without a reader fails the start at once, naming it") {
  TempDir dir;
  std::string path = dir / "dead.fifo";
  REQUIRE(::mkfifo(path.c_str(), 0644) == 0);
  json config = {{"feeds", {tcp_feed("bus")}},
                 {"outputs", {file_output("archive", dir / "out.ndjson")}},
                 {"deadletter", {{"path", path}}}};
  SpawnOptions options;
  options.args = {"--config", dir.write("config.json", config.dump())};
  options.stderr_path = dir / "daemon.log";
  Process child(options);
  ExitStatus status = child.wait(5s);
  std::string log = read_file(dir / "daemon.log");
  INFO("log:\n" << log);
  CHECK(status.code == 2);
  CHECK(log.find(path) != std::string::npos);
}

// --- a stuck file output ----------------------------------------------------

TEST_CASE("a file output on a FIFO nobody reads does not keep the daemon past the drain") {
  constexpr int drain_timeout_ms = 1000;
  TempDir dir;
  StuckFifo fifo(dir / "out.fifo");
  json config = {{"drain_timeout_ms", drain_timeout_ms},
                 {"feeds", {tcp_feed("bus")}},
                 {"outputs", {file_output("archive", fifo.path())}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t feed_port = daemon.feed_port("bus");
  INFO("daemon log (tail):\n" << daemon.log_tail());

  // Three times what the pipe holds: a write blocks for good once the
  // pipe is full. What the output holds then stays put.
  const std::string records = bulk_records(0, 2000);
  Socket producer = connect_tcp(feed_port);
  REQUIRE(write_all(producer, records));
  const std::string queue = sample_of("chronomerge_output_sink_queue_bytes", "archive");
  const std::string written = sample_of("chronomerge_output_sink_bytes_total", "archive");
  double held = -1;
  auto deadline = Clock::now() + 10s;
  while (Clock::now() < deadline) {
    double q = scrape(metrics, queue).value_or(-1);
    double w = scrape(metrics, written).value_or(-1);
    if (q > 0 && q + w == static_cast<double>(records.size()) && q == held) break;
    held = q;
    ::usleep(100 * 1000);
  }
  INFO("the output holds " << held << " bytes");
  REQUIRE(held > 0);

  auto signalled = Clock::now();
  daemon.signal(SIGTERM);
  ExitStatus status = daemon.wait(Millis(drain_timeout_ms + 5000));
  Millis elapsed = since(signalled);
  MESSAGE("exited " << elapsed.count() << " ms after SIGTERM");
  CHECK(status.code == 0);
  CHECK(status.signal == 0);
  CHECK(elapsed < Millis(drain_timeout_ms + 1000));
  CHECK(daemon.log_count("drain timeout") == 1);
  CHECK(daemon.log_count("output archive (" + fifo.path() + ") still holds " +
                         std::to_string(static_cast<uint64_t>(held)) + " bytes") == 1);
}

// --- a full disk ------------------------------------------------------------

TEST_CASE("a file output on a full disk never ends in half a record") {
  TempDir dir;
  SmallDisk disk(dir / "disk", 1 << 20);
  if (!disk.mounted()) {
    MESSAGE("skipped: cannot mount a tmpfs here (" << disk.error() << ")");
    return;
  }
  // Two pages left: the first records fit, one is cut by the disk.
  disk.fill(8192);
  std::string path = disk / "out.ndjson";
  json output = file_output("archive", path);

  SUBCASE("on_error block holds the merge; a signal or the backoff brings everything") {
    int retry_signal = 0;  // none: the backoff
    SUBCASE("SIGUSR1 retries at once") {
      retry_signal = SIGUSR1;
    }
    SUBCASE("SIGHUP retries at once") {
      retry_signal = SIGHUP;
    }
    SUBCASE("the backoff retries by itself") {}
    json config = {
        {"output_high_water_mark", 65536}, {"feed_high_water_mark", 32768},
        {"feed_low_water_mark", 8192},     {"log_level", "debug"},  // to see the feed paused
        {"feeds", {tcp_feed("bus")}},      {"outputs", {output}}};
    with_metrics(config);
    Daemon daemon(dir, config);
    const uint16_t metrics = daemon.metrics_port();
    const uint16_t feed_port = daemon.feed_port("bus");
    INFO("daemon log (tail):\n" << daemon.log_tail());

    // About 400 KB: more than the output buffer and the feed queue hold.
    const std::string records = bulk_records(0, 4000);
    Socket producer = connect_tcp(feed_port);
    Background writer([&] { write_all(producer, records, 30s); });
    REQUIRE(daemon.wait_log("output archive: cannot write"));
    REQUIRE(daemon.wait_log("feed bus: paused"));
    // Five failed writes (the first and four retries, 1.5 s): the next
    // retry of the backoff is 1.6 s away.
    CHECK(wait_sample(metrics, sample_of("chronomerge_output_sink_write_errors_total", "archive"),
                      [](double v) { return v >= 5; }) >= 5);
    CHECK(scrape(metrics, sample_of("chronomerge_output_sink_blocked_seconds_total", "archive")) >=
          1.5);
    CHECK(scrape(metrics, sample_of("chronomerge_output_sink_failing", "archive")) == 1);
    CHECK(scrape(metrics, "chronomerge_feed_paused{feed=\"bus\"}") == 1);
    std::string held = read_file(path);
    CHECK(!held.empty());
    CHECK(whole_records(held));
    CHECK(records.compare(0, held.size(), held) == 0);
    CHECK(scrape(metrics, sample_of("chronomerge_output_sink_bytes_total", "archive")) ==
          static_cast<double>(held.size()));

    auto freed = Clock::now();
    disk.free_space();
    if (retry_signal) daemon.signal(retry_signal);
    auto written = wait_sample(
        metrics, sample_of("chronomerge_output_sink_bytes_total", "archive"),
        [&](double v) { return v == static_cast<double>(records.size()); }, 15s);
    MESSAGE(std::string(retry_signal ? strsignal(retry_signal) : "the backoff")
            << ": everything written " << since(freed).count() << " ms after the space came back");
    CHECK(written == static_cast<double>(records.size()));
    if (retry_signal) CHECK(since(freed) < 1000ms);  // not by the backoff
    writer.join();
    CHECK(read_file(path) == records);
    CHECK(file_size(path) == records.size());
    CHECK(scrape(metrics, sample_of("chronomerge_output_sink_failing", "archive")) == 0);
    CHECK(scrape(metrics, sample_of("chronomerge_output_sink_dropped_records_total", "archive")) ==
          0);
    CHECK(daemon.wait_log("output archive: writing " + path + " again after"));
    // Logged once per episode, not once per retry.
    CHECK(daemon.log_count("output archive: cannot write") == 1);
    producer.close();
    CHECK(daemon.stop().code == 0);
    CHECK(read_file(path) == records);
  }

  SUBCASE("on_error skip drops and counts what it cannot write, then writes again") {
    output["on_error"] = "skip";
    json config = {{"feeds", {tcp_feed("bus")}}, {"outputs", {output}}};
    with_metrics(config);
    Daemon daemon(dir, config);
    const uint16_t metrics = daemon.metrics_port();
    const uint16_t feed_port = daemon.feed_port("bus");
    INFO("daemon log (tail):\n" << daemon.log_tail());

    const int sent = 4000;
    const std::string records = bulk_records(0, sent);
    Socket producer = connect_tcp(feed_port);
    REQUIRE(write_all(producer, records));
    std::string dropped_records =
        sample_of("chronomerge_output_sink_dropped_records_total", "archive");
    std::string dropped_bytes = sample_of("chronomerge_output_sink_dropped_bytes_total", "archive");
    // Everything merged is either in the file or counted as dropped.
    auto accounted = wait_sample(
        metrics, dropped_records,
        [&](double v) { return v + static_cast<double>(lines_in(read_file(path))) == sent; }, 10s);
    std::string kept = read_file(path);
    INFO(lines_in(kept) << " records written, " << accounted.value_or(-1) << " dropped");
    CHECK(accounted.value_or(0) > 0);
    CHECK(accounted.value_or(0) + static_cast<double>(lines_in(kept)) == sent);
    CHECK(whole_records(kept));
    CHECK(in_order_subset(kept, records));
    CHECK(scrape(metrics, dropped_bytes).value_or(0) + static_cast<double>(kept.size()) ==
          static_cast<double>(records.size()));
    CHECK(scrape(metrics, sample_of("chronomerge_output_sink_bytes_total", "archive")) ==
          static_cast<double>(kept.size()));
    CHECK(scrape(metrics, sample_of("chronomerge_output_sink_blocked_seconds_total", "archive")) ==
          0);
    CHECK(daemon.log_count("output archive: cannot write") == 1);

    // The space comes back: after SIGUSR1 new records are written again.
    disk.free_space();
    daemon.signal(SIGUSR1);
    REQUIRE(daemon.wait_log("reopened"));
    const std::string more = bulk_records(sent, 100);
    REQUIRE(write_all(producer, more));
    CHECK(wait_sample(
              metrics, sample_of("chronomerge_output_sink_bytes_total", "archive"),
              [&](double v) { return v == static_cast<double>(kept.size() + more.size()); },
              10s) == static_cast<double>(kept.size() + more.size()));
    CHECK(read_file(path) == kept + more);
    CHECK(daemon.wait_log("output archive: writing " + path + " again after"));
    producer.close();
    CHECK(daemon.stop().code == 0);
  }
}
