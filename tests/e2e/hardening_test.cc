// End to end: inputs that used to crash chronomerge or make it fail with
// the wrong words. A configuration nested 200,000 levels deep, standard
// descriptors closed by the shell, inputs that are pipes named by path
// (`<(zcat a.gz)`, a FIFO), and errors that must name the right thing.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <filesystem>
#include <iterator>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "harness.h"

using namespace chronomerge::e2e;
using nlohmann::json;

namespace {

std::string nested(size_t levels) {
  return std::string(levels, '[') + std::string(levels, ']');
}

// Runs chronomerge to completion with `options` (stdout and stderr go to
// files in `dir`, unless closed) and returns what it wrote.
RunResult run_with(const TempDir& dir, SpawnOptions options, Millis timeout = 20s) {
  static int runs = 0;
  ++runs;
  options.stdout_path = dir / ("hardening" + std::to_string(runs) + ".out");
  options.stderr_path = dir / ("hardening" + std::to_string(runs) + ".err");
  RunResult result;
  {
    Process child(options);
    result.status = child.wait(timeout);
  }
  result.out = read_file(options.stdout_path);
  result.err = read_file(options.stderr_path);
  return result;
}

// Writes `data` to `fd` and closes it, on a thread of its own; SIGPIPE is
// blocked there, so a reader that went away costs a failed write.
void write_and_close(int fd, const std::string& data) {
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
}

}  // namespace

// --- a configuration nested 200,000 levels deep -----------------------------

// Regression: nlohmann/json copies and destroys values recursively, and
// 150,000 levels ran it out of stack: --check-config died of SIGSEGV, and
// so did a running daemon reloading such a file.
TEST_CASE("a configuration nested 200,000 levels deep is refused, never a crash") {
  SUBCASE("--check-config exits 2 naming the line and column") {
    TempDir dir;
    const std::string stdout_output = R"({"name": "out", "type": "stdout"})";
    struct Deep {
      std::string text;
      std::string where;
    };
    const Deep cases[] = {
        {"{\"x\":" + nested(200'000) + "}", "1:69"},
        {"{\"feeds\": [{\"name\": \"a\", \"type\": \"file\",\n \"path\": " + nested(200'000) +
             "}],\n \"outputs\": [" + stdout_output + "]}",
         "2:71"},
    };
    for (const Deep& deep : cases) {
      const std::string path = dir.write("deep.json", deep.text);
      const auto start = Clock::now();
      RunResult run = run_chronomerge(dir, {"--check-config", path});
      const auto ms = std::chrono::duration_cast<Millis>(Clock::now() - start).count();
      INFO("stderr: " << run.err);
      MESSAGE("--check-config on " << deep.text.size() << " bytes: " << ms << " ms");
      CHECK(run.status.signal == 0);
      CHECK(run.status.code == 2);
      CHECK(run.err.find(deep.where + ": arrays and objects nested deeper than 64 levels") !=
            std::string::npos);
      CHECK(ms < 5000);
    }
  }

  SUBCASE("SIGHUP: the daemon logs it, counts a failed reload and keeps its configuration") {
    TempDir dir;
    json config = {{"feeds", {tcp_feed("in")}}, {"outputs", {tcp_output("clients")}}};
    with_metrics(config);
    Daemon daemon(dir, config);
    const uint16_t metrics = daemon.metrics_port();
    const uint16_t feed_port = daemon.feed_port("in");
    const uint16_t out_port = daemon.output_port("clients");
    INFO("daemon log (tail):\n" << daemon.log_tail());

    Socket client = connect_tcp(out_port);
    REQUIRE(daemon.wait_log("connected (1 now)"));
    Socket producer = connect_tcp(feed_port);
    const std::string first = record(1, "in", 1) + "\n";
    REQUIRE(write_all(producer, first));
    CHECK(read_lines(client, 1, 5s).data == first);

    // The same configuration with a field of the feed nested 200,000
    // levels deep (a deep value inside a feed is what crashed).
    json deep = config;
    deep["feeds"][0]["x"] = "DEEP";
    std::string text = deep.dump();
    text.replace(text.find("\"DEEP\""), 6, nested(200'000));
    dir.write("config.json", text);
    daemon.signal(SIGHUP);
    const bool logged = daemon.wait_log("arrays and objects nested deeper than 64 levels");
    REQUIRE(daemon.check_alive());
    REQUIRE(logged);
    CHECK(daemon.log_count("reload of " + (dir / "config.json") + " rejected") == 1);
    CHECK(wait_sample(metrics, "chronomerge_reloads_total{result=\"failure\"}",
                      [](double v) { return v == 1; }) == 1);
    CHECK(scrape(metrics, "chronomerge_reloads_total{result=\"success\"}") == 0);

    // The old configuration still serves: same producer, same client.
    const std::string second = record(2, "in", 2) + "\n";
    REQUIRE(write_all(producer, second));
    CHECK(read_lines(client, 1, 5s).data == second);
    CHECK(daemon.stop().code == 0);
  }
}

// --- closed standard descriptors --------------------------------------------

// Regression: started with `<&-`, `>&-` or `2>&-`, chronomerge gave that
// descriptor number to a file or socket of its own, and libuv aborted on
// closing it (exit 134, "uv__close: Assertion `fd > STDERR_FILENO'").
TEST_CASE("chronomerge runs with standard input, output or error closed") {
  const std::vector<std::vector<int>> closed_sets = {{0}, {1}, {2}, {0, 1, 2}};

  SUBCASE("the one-shot merge") {
    TempDir dir;
    const std::string a = lines_of({record(1, "a", 0), record(3, "a", 1)});
    const std::string b = lines_of({record(2, "b", 0), record(3, "b", 1)});
    const std::string a_path = dir.write("a.ndjson", a);
    const std::string b_path = dir.write("b.ndjson", b);
    for (const auto& closed : closed_sets) {
      CAPTURE(closed);
      SpawnOptions options;
      options.args = {a_path, b_path};
      options.closed = closed;
      RunResult run = run_with(dir, options);
      INFO("stderr: " << run.err);
      CHECK(run.status.signal == 0);
      CHECK(run.status.code == 0);
      const bool stdout_closed = std::count(closed.begin(), closed.end(), 1) > 0;
      CHECK(run.out == (stdout_closed ? "" : stable_merge({a, b})));
    }
  }

  SUBCASE("the daemon") {
    for (const auto& closed : closed_sets) {
      CAPTURE(closed);
      TempDir dir;
      // Ports named up front (free_port, not port 0): with standard error
      // closed there is no log to read the bound ports from.
      const uint16_t feed_port = free_port();
      const uint16_t out_port = free_port();
      const uint16_t metrics = free_port();
      json config = {
          {"feeds", {tcp_feed("in", feed_port)}},
          {"outputs", {tcp_output("clients", out_port), {{"name", "console"}, {"type", "stdout"}}}},
          {"metrics", {{"listen", loopback(metrics)}}}};
      SpawnOptions options;
      options.args = {"--config", dir.write("config.json", config.dump())};
      options.stdout_path = dir / "daemon.out";
      options.stderr_path = dir / "daemon.log";
      options.closed = closed;
      Process daemon(options);
      INFO("daemon log:\n" << read_file(dir / "daemon.log"));

      // Its log may be /dev/null: the metrics say when the client is in.
      Socket client = connect_tcp(out_port);
      REQUIRE(wait_sample(metrics, "chronomerge_output_sink_clients{output=\"clients\"}",
                          [](double v) { return v == 1; }) == 1);
      Socket producer = connect_tcp(feed_port);
      const std::string records = lines_of({record(1, "in", 1), record(2, "in", 2)});
      REQUIRE(write_all(producer, records));
      CHECK(read_lines(client, 2, 5s).data == records);
      daemon.signal(SIGTERM);
      ExitStatus status = daemon.wait(15s);
      CHECK(status.signal == 0);
      CHECK(status.code == 0);
      if (std::count(closed.begin(), closed.end(), 1) == 0) {
        CHECK(read_file(dir / "daemon.out") == records);
      }
    }
  }
}

// --- thread priorities -----------------------------------------------------

namespace {

// The nice value of each thread of `pid`, by thread id (/proc/PID/task).
std::map<pid_t, int> thread_nice_values(pid_t pid) {
  std::map<pid_t, int> values;
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  for (const auto& entry : std::filesystem::directory_iterator(tasks)) {
    const std::string stat = read_file(entry.path() / "stat");
    // The fields after the command (which may hold spaces) start at field
    // 3, the state; the nice value is field 19.
    std::istringstream rest(stat.substr(stat.rfind(')') + 2));
    const std::vector<std::string> fields{std::istream_iterator<std::string>(rest), {}};
    values[static_cast<pid_t>(std::stoi(entry.path().filename().string()))] =
        std::stoi(fields.at(19 - 3));
  }
  return values;
}

}  // namespace

// The loop thread merges; pool threads only read and validate ahead of
// it, and run 5 nice levels lower (as the README says) so as not to
// preempt it.
TEST_CASE("a file feed's reads run on pool threads below the merging thread") {
  const int base = getpriority(PRIO_PROCESS, static_cast<id_t>(gettid()));
  if (base > 19 - 5) {
    MESSAGE("the tests run at nice ", base, ": nothing to lower");
    return;
  }
  TempDir dir;
  int in[2];
  REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
  int out[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, out) == 0);
  Socket merged(out[0]);
  SpawnOptions options;
  options.args = {"/dev/fd/" + std::to_string(in[0])};
  options.inherited = {in[0]};
  options.stdout_fd = out[1];
  options.stderr_path = dir / "run.err";
  Process child(options);
  ::close(in[0]);
  ::close(out[1]);
  const std::string line = record(1, "a", 0) + "\n";
  REQUIRE(::write(in[1], line.data(), line.size()) == static_cast<ssize_t>(line.size()));
  // Out, so a pool thread has opened and read the pipe.
  CHECK(read_lines(merged, 1).data == line);
  const std::map<pid_t, int> nice = thread_nice_values(child.pid());
  ::close(in[1]);
  CHECK(child.wait(10s).code == 0);
  INFO("stderr: " << read_file(dir / "run.err"));
  REQUIRE(nice.count(child.pid()) == 1);
  CHECK(nice.at(child.pid()) == base);
  CHECK(std::count_if(nice.begin(), nice.end(), [&](const auto& thread) {
          return thread.first != child.pid() && thread.second == base + 5;
        }) >= 1);
}

// --- pipes and FIFOs by name ------------------------------------------------

// Regression: `chronomerge <(zcat a.gz) <(zcat b.gz)` and a FIFO failed with
// ESPIPE: files were read with pread() at an offset, which a pipe refuses.
TEST_CASE("the one-shot merge reads pipes and FIFOs named on the command line") {
  std::mt19937 rng(7);
  // Several reads' worth each, with ties within and across the feeds.
  const std::string a = sorted_feed(rng, "a", 30'000);
  const std::string b = sorted_feed(rng, "b", 20'000);
  const std::string c = sorted_feed(rng, "c", 500);

  SUBCASE("two pipes named /dev/fd/N, as <(zcat a.gz) <(zcat b.gz) passes them") {
    TempDir dir;
    int pipe_a[2];
    int pipe_b[2];
    REQUIRE(::pipe2(pipe_a, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(pipe_b, O_CLOEXEC) == 0);
    SpawnOptions options;
    options.args = {"/dev/fd/" + std::to_string(pipe_a[0]), dir.write("c.ndjson", c),
                    "/dev/fd/" + std::to_string(pipe_b[0])};
    options.inherited = {pipe_a[0], pipe_b[0]};
    options.stdout_path = dir / "merged.out";
    options.stderr_path = dir / "merged.err";
    ExitStatus status;
    {
      Process child(options);
      ::close(pipe_a[0]);
      ::close(pipe_b[0]);
      Background write_a([&] { write_and_close(pipe_a[1], a); });
      Background write_b([&] { write_and_close(pipe_b[1], b); });
      status = child.wait(20s);
    }
    INFO("stderr: " << read_file(dir / "merged.err"));
    CHECK(status.code == 0);
    const std::string out = read_file(dir / "merged.out");
    CHECK(out.size() == a.size() + b.size() + c.size());
    CHECK(out == stable_merge({a, c, b}));
  }

  SUBCASE("a FIFO next to a regular file") {
    TempDir dir;
    const std::string fifo = dir / "b.fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    SpawnOptions options;
    options.args = {dir.write("a.ndjson", a), fifo};
    options.stdout_path = dir / "merged.out";
    options.stderr_path = dir / "merged.err";
    ExitStatus status;
    {
      Process child(options);
      // Opening for writing waits for chronomerge to open it for reading.
      Background writer([&] {
        int fd = ::open(fifo.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd >= 0) write_and_close(fd, b);
      });
      status = child.wait(20s);
      // Had chronomerge never opened the FIFO, the writer would wait in
      // open() for ever: a reader of our own releases it.
      int unblock = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
      writer.join();
      if (unblock >= 0) ::close(unblock);
    }
    INFO("stderr: " << read_file(dir / "merged.err"));
    CHECK(status.code == 0);
    CHECK(read_file(dir / "merged.out") == stable_merge({a, b}));
  }
}

// --- errors that name the right thing ---------------------------------------

TEST_CASE("errors name what failed") {
  // Regression: the error said "output file /tmp/...: cannot open", which
  // sent operators looking for an output that was not there.
  SUBCASE("a dead-letter path that is a directory is named as the dead-letter file") {
    TempDir dir;
    // Every line that names `path` names it as the dead-letter file.
    const auto check_named = [](const std::string& log, const std::string& path) {
      for (const std::string& line : split_lines(log)) {
        if (line.find(path) == std::string::npos) continue;
        CHECK(line.find("dead-letter file") != std::string::npos);
        CHECK(line.find("output") == std::string::npos);
      }
    };
    const std::string letters = dir / "letters";
    REQUIRE(::mkdir(letters.c_str(), 0700) == 0);
    json config = {
        {"feeds", {{{"name", "in"}, {"type", "file"}, {"path", dir.write("in.ndjson", "")}}}},
        {"outputs", {{{"name", "archive"}, {"type", "file"}, {"path", dir / "archive.ndjson"}}}},
        {"deadletter", {{"path", letters}}}};
    RunResult run = run_chronomerge(dir, {"--config", dir.write("config.json", config.dump())});
    INFO("stderr: " << run.err);
    CHECK(run.status.code == 2);
    CHECK(run.err.find("dead-letter file: cannot open " + letters + ": EISDIR") !=
          std::string::npos);
    check_named(run.err, letters);

    // A running daemon: the file becomes a directory before SIGUSR1, and a
    // reload names a directory.
    const std::string rotated = dir / "rotated";
    json live = {{"feeds", {tcp_feed("in")}},
                 {"outputs", {tcp_output("clients")}},
                 {"deadletter", {{"path", rotated}}}};
    Daemon daemon(dir, live);
    INFO("daemon log (tail):\n" << daemon.log_tail());
    REQUIRE(::unlink(rotated.c_str()) == 0);
    REQUIRE(::mkdir(rotated.c_str(), 0700) == 0);
    daemon.signal(SIGUSR1);
    CHECK(daemon.wait_log("dead-letter file: cannot reopen " + rotated + ": EISDIR"));
    live["deadletter"]["path"] = letters;
    dir.write("config.json", live.dump());
    daemon.signal(SIGHUP);
    CHECK(daemon.wait_log("dead-letter file: cannot open " + letters + ": EISDIR"));
    CHECK(daemon.wait_log("the dead-letter file could not be opened"));
    REQUIRE(daemon.check_alive());
    check_named(daemon.log(), rotated);
    check_named(daemon.log(), letters);
    CHECK(daemon.stop().code == 0);
  }

  // Regression: libuv reports bind() of a socket in a missing directory as
  // EACCES, and the log said "permission denied".
  SUBCASE("a Unix socket in a missing directory is ENOENT, not EACCES") {
    TempDir dir;
    const std::string missing = dir / "missing/sock";
    const json unix_feed = {{"name", "in"}, {"type", "unix-listen"}, {"path", missing}};
    const json unix_output = {{"name", "clients"}, {"type", "unix-listen"}, {"path", missing}};
    const json stdout_output = {{"name", "console"}, {"type", "stdout"}};
    const json file_feed = {{"name", "in"}, {"type", "file"}, {"path", dir.write("in", "")}};
    for (const json& config : {json{{"feeds", {unix_feed}}, {"outputs", {stdout_output}}},
                               json{{"feeds", {file_feed}}, {"outputs", {unix_output}}}}) {
      RunResult run = run_chronomerge(dir, {"--config", dir.write("config.json", config.dump())});
      INFO("stderr: " << run.err);
      CHECK(run.status.code == 2);
      CHECK(run.err.find(missing) != std::string::npos);
      CHECK(run.err.find("ENOENT") != std::string::npos);
      CHECK(run.err.find("EACCES") == std::string::npos);
    }
  }

  SUBCASE("an empty file name after --check-config or --config is a usage error") {
    TempDir dir;
    for (const char* option : {"--check-config", "--config"}) {
      CAPTURE(option);
      RunResult run = run_chronomerge(dir, {option, ""});
      INFO("stderr: " << run.err);
      CHECK(run.status.code == 2);
      CHECK(run.err.find(std::string(option) + " needs a file name") != std::string::npos);
      CHECK(run.err.find("no input files") == std::string::npos);
    }
  }
}
