// End-to-end harness: runs the built chronomerge binary as a real process
// and talks to it over real sockets, the way systemd, producers and clients
// do.
//
// Everything here waits for events (poll on sockets, the systemd notify
// socket, a pidfd, inotify on the log file) with a timeout; nothing sleeps
// for a fixed time. A helper that runs out of time reports it to doctest
// (and kills the child) rather than hanging the suite.
//
// Every descriptor the harness creates is close-on-exec, so a daemon never
// inherits a test's socket (closing it in the test would then not close the
// connection). Writes use MSG_NOSIGNAL: a test never dies of SIGPIPE. The
// daemon, by contrast, starts with every signal at its default disposition
// and an empty mask, as it would from a shell or a container.
//
// Test thread only, except Collector (its own thread) and the free
// functions on sockets (any thread, one socket per thread).
#pragma once

#include <spawn.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace chronomerge::e2e {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;
using namespace std::chrono_literals;

// Built with AddressSanitizer (tests/run.sh does): about three times
// slower, and memory figures are meaningless.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool sanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool sanitized = true;
#else
inline constexpr bool sanitized = false;
#endif
#else
inline constexpr bool sanitized = false;
#endif

// --- files ------------------------------------------------------------------

// A fresh directory under $TMPDIR (or /tmp), removed with its content when
// the object goes away (kept, and named on stderr, when the environment has
// CHRONOMERGE_E2E_KEEP=1, to look at logs after a failure). Short paths:
// Unix socket paths must fit sun_path.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // The path of `name` inside the directory (nothing is created).
  std::string operator/(std::string_view name) const;
  // Writes `content` to `name` (replacing it) and returns its path.
  std::string write(std::string_view name, std::string_view content) const;

 private:
  std::string path_;
};

// The whole file; empty if it does not exist.
std::string read_file(const std::string& path);
void write_file(const std::string& path, std::string_view content);

// Lines of `text` without their '\n'; a final unterminated piece counts.
std::vector<std::string> split_lines(std::string_view text);

// --- processes --------------------------------------------------------------

// How a child ended. `code` is the exit status, or -1 if it died of a
// signal (then `signal` says which).
struct ExitStatus {
  int code = -1;
  int signal = 0;
};

struct SpawnOptions {
  std::vector<std::string> args;  // without argv[0]
  // Standard input: a file to open, else a descriptor to dup (e.g. a pipe's
  // read end; the caller keeps and closes its copy), else /dev/null.
  std::string stdin_path;
  int stdin_fd = -1;
  std::string stdout_path;  // default /dev/null
  int stdout_fd = -1;       // if set, dup'ed instead of stdout_path
  std::string stderr_path;  // default /dev/null
  // Sets NOTIFY_SOCKET (and removes inherited systemd variables).
  std::string notify_socket;
  // More NAME=value entries for the environment (e.g. WATCHDOG_USEC).
  std::vector<std::string> env;
  // Standard descriptors (0, 1, 2) the child starts with closed, as after
  // `<&-`, `>&-` or `2>&-`; what the fields above say for them is ignored.
  std::vector<int> closed;
  // The caller's descriptors (e.g. a pipe's read end, for /dev/fd/N) that
  // the child inherits under the same number; the caller keeps and closes
  // its copy. Other descriptors of the test stay close-on-exec.
  std::vector<int> inherited;
  // If not 0, the child's open-files limit (RLIMIT_NOFILE, soft and hard
  // alike, so the daemon cannot raise it), set by /bin/sh's `ulimit -n`
  // just before it execs the binary under the same pid.
  uint64_t open_files_limit = 0;
};

// Initializes `attr` so that a spawned child starts with every signal at
// its default disposition and an empty mask, whatever the test runner set.
// The caller destroys it (posix_spawnattr_destroy).
void init_default_signals(posix_spawnattr_t& attr);

// A child process running the chronomerge binary (CHRONOMERGE_BINARY).
// Killed with SIGKILL and reaped on destruction if still running.
class Process {
 public:
  explicit Process(const SpawnOptions& options);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  // A pidfd for the child (readable once it exits), or -1 if the kernel
  // has none.
  int pidfd() const { return pidfd_; }
  // True until the child has exited (reaps it if it just did).
  bool running();
  void signal(int signum);
  // Waits for the child to exit. On timeout: FAILs the test, kills the
  // child with SIGKILL, and returns the (signal) status.
  ExitStatus wait(Millis timeout);

 private:
  bool reap(bool block);

  pid_t pid_ = -1;
  int pidfd_ = -1;
  bool exited_ = false;
  ExitStatus status_;
};

// A one-shot run: the child's whole stdout and stderr and its status.
struct RunResult {
  ExitStatus status;
  std::string out;
  std::string err;
};
// What a one-shot run reads on standard input: nothing (/dev/null), bytes
// through a pipe, or a regular file (chronomerge reads those differently).
struct Stdin {
  std::optional<std::string> pipe;
  std::string file;
};
// Runs chronomerge with `args` to completion (FAILs after `timeout`).
RunResult run_chronomerge(const TempDir& dir, const std::vector<std::string>& args,
                          const Stdin& in = {}, Millis timeout = 20s);

// What one chronomerge merging `feeds` (each a list of lines, in this
// order) writes: the flat merge a merge tree must equal. REQUIREs success.
std::string flat_merge(const std::vector<std::vector<std::string>>& feeds);

// Memory of a running process from /proc/PID/status, in KiB.
struct Memory {
  uint64_t rss_kib = 0;  // VmRSS
  uint64_t hwm_kib = 0;  // VmHWM, the peak RSS
};
Memory memory_of(pid_t pid);

// How a test wants the daemon started, beyond its configuration.
struct DaemonOptions {
  Millis ready_timeout = 10s;
  std::vector<std::string> env;   // more NAME=value entries
  uint64_t open_files_limit = 0;  // see SpawnOptions
};

// The daemon: `chronomerge --config DIR/config.json`, stderr to
// DIR/daemon.log, stdout to DIR/daemon.out. The constructor returns once
// the daemon has sent READY=1 on its notify socket (REQUIREd within
// `ready_timeout`; the log is shown if it exits or times out instead).
class Daemon {
 public:
  Daemon(const TempDir& dir, const nlohmann::json& config, Millis ready_timeout = 10s,
         std::vector<std::string> env = {});
  Daemon(const TempDir& dir, const nlohmann::json& config, const DaemonOptions& options);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  pid_t pid() const { return process_.pid(); }
  bool running() { return process_.running(); }
  // CHECKs that the daemon is still running; if it is not, the failure
  // says how it ended (exit status or signal).
  bool check_alive();
  void signal(int signum) { process_.signal(signum); }
  // SIGTERM, then the exit status (FAILs after `timeout`).
  ExitStatus stop(Millis timeout = 15s);
  // The exit status (FAILs after `timeout`). Also CHECKs that the daemon
  // did not report handles left open at exit (its loop must close
  // cleanly).
  ExitStatus wait(Millis timeout);

  // Standard error so far.
  std::string log() const { return read_file(log_path_); }
  // Its last `lines` lines, for failure messages.
  std::string log_tail(size_t lines = 30) const;
  // Lines of the log containing `needle`.
  size_t log_count(std::string_view needle) const;
  // Waits until the log holds `needle` at least `count` times (woken by
  // inotify on the log file). False on timeout or if the daemon exited.
  bool wait_log(std::string_view needle, Millis timeout = 5s, size_t count = 1);
  // How many datagrams on the notify socket held `needle` (e.g.
  // "STOPPING=1"); reads what has arrived since the last call, no waiting.
  size_t notified(std::string_view needle);
  // Waits (woken by the notify socket) until `count` datagrams have held
  // `needle`. False on timeout.
  bool wait_notified(std::string_view needle, size_t count, Millis timeout = 5s);
  Memory memory() const { return memory_of(pid()); }
  const std::string& stdout_path() const { return out_path_; }

  // The port a listener of the daemon bound, read from its log line
  // "feed NAME: listening on 127.0.0.1:PORT" (output NAME, metrics alike):
  // configs ask for port 0, so no two tests, and no two test processes, are
  // ever handed the same port. Waits (woken by inotify) until the log holds
  // `count` such lines and returns the port of the last, which after a
  // restart or reload is the one now listening. REQUIREs the line within
  // `timeout`, and a port other than 0 (the log must show the bound port,
  // not the configured one).
  uint16_t feed_port(const std::string& name, size_t count = 1, Millis timeout = 5s);
  uint16_t output_port(const std::string& name, size_t count = 1, Millis timeout = 5s);
  uint16_t metrics_port(size_t count = 1, Millis timeout = 5s);

 private:
  void collect_notifications(Millis timeout);
  void receive_notifications();
  uint16_t listening_port(const std::string& listener, size_t count, Millis timeout);

  std::string log_path_;
  std::string out_path_;
  int notify_fd_ = -1;
  std::vector<std::string> notifications_;
  Process process_;
};

// --- sockets ----------------------------------------------------------------

// An owned socket descriptor, closed on destruction. Movable.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() { close(); }
  Socket(Socket&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Socket& operator=(Socket&& other) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  int fd() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void close();
  // Closes with SO_LINGER {1, 0}: unsent data is dropped and the peer gets
  // a reset (RST) instead of an orderly FIN.
  void reset();
  // shutdown(SHUT_WR): the peer reads EOF, we can still read.
  void shutdown_write();
  void set_nonblocking(bool on);

 private:
  int fd_ = -1;
};

// An unused loopback port: bind 127.0.0.1:0, read it back, close. Another
// process (ctest runs two at once) can take it before the daemon binds it,
// so prefer port 0 and Daemon::feed_port() and friends; this is only for a
// config that must name its port before the daemon first binds it.
uint16_t free_port();
// The local port of a bound socket.
uint16_t port_of(const Socket& socket);
// "127.0.0.1:PORT"
std::string loopback(uint16_t port);

// --- configs and records ----------------------------------------------------

// A tcp-listen feed or output on 127.0.0.1:port; by default port 0, and
// the daemon picks one (ask Daemon::feed_port() or output_port() for it).
nlohmann::json tcp_feed(const std::string& name, uint16_t port = 0);
// slow_client "block": lossless, the merge waits for every client (the
// default for network clients is "disconnect").
nlohmann::json tcp_output(const std::string& name, uint16_t port = 0);
// Adds a metrics endpoint on 127.0.0.1:0 to `config` (its port:
// Daemon::metrics_port()).
void with_metrics(nlohmann::json& config);
// A tcp-listen output whose clients start with a resume request line
// ("resume": true), and otherwise a network output's defaults: slow_client
// "disconnect", max_buffer retention_bytes.
nlohmann::json resume_output(const std::string& name, uint16_t port = 0);
// {"time":T,"feed":"F","seq":S}
std::string record(int64_t time, const std::string& feed, int64_t seq);
// A sorted feed of `count` records (record(), one per line) whose keys
// advance by 0, 1 or 2, so there are ties within the feed and across feeds.
std::string sorted_feed(std::mt19937& rng, const std::string& name, int count);
// The records, one per line.
std::string lines_of(const std::vector<std::string>& records);
bool starts_with(std::string_view text, std::string_view prefix);

// Connects to 127.0.0.1:port, retrying while refused until `timeout`
// (REQUIREs success). rcvbuf > 0 sets SO_RCVBUF before connecting, so the
// advertised window stays small (a slow reader).
Socket connect_tcp(uint16_t port, Millis timeout = 5s, int rcvbuf = 0);
// A listening socket on 127.0.0.1:port (by default 0: any free port, see
// port_of()) with SO_REUSEADDR and SO_REUSEPORT.
Socket listen_tcp(uint16_t port = 0);
// A socket bound to 127.0.0.1:port that does not listen: connections are
// refused, but no other process can take the port (listen_tcp() can, as
// both set SO_REUSEPORT), so a test can close its listener and open it again
// on the same port.
Socket hold_tcp(uint16_t port);
// Connects to the Unix socket at `path` (REQUIREs success).
Socket connect_unix(const std::string& path);
// Accepts one connection (REQUIREd within `timeout`).
Socket accept_tcp(const Socket& listener, Millis timeout = 5s);

// Writes everything, waiting with poll while the socket is full. False on
// error (e.g. a reset) or when `timeout` passes.
bool write_all(const Socket& socket, std::string_view data, Millis timeout = 10s);
// One non-blocking send: the bytes taken, 0 if the socket is full (EAGAIN),
// -1 on error. The socket must be non-blocking.
ssize_t try_write(const Socket& socket, std::string_view data);
bool wait_readable(const Socket& socket, Millis timeout);
bool wait_writable(const Socket& socket, Millis timeout);

// What a read helper saw.
struct ReadResult {
  std::string data;
  bool eof = false;    // orderly end of stream
  bool error = false;  // reset or other error
};
// Reads until `data` holds at least `lines` newlines, the stream ends, or
// `timeout` passes.
ReadResult read_lines(const Socket& socket, size_t lines, Millis timeout = 5s);
// Reads until the stream ends or `timeout` passes.
ReadResult read_to_eof(const Socket& socket, Millis timeout = 10s);
// At most `max` bytes, if any arrive within `timeout`.
ReadResult read_some(const Socket& socket, size_t max, Millis timeout);

// Reads one socket to its end on a thread of its own, so a test can drive
// producers while clients drain. Runs until EOF, an error, or `timeout`.
class Collector {
 public:
  explicit Collector(Socket socket, Millis timeout = 30s);
  ~Collector();
  Collector(const Collector&) = delete;
  Collector& operator=(const Collector&) = delete;

  // Joins the thread and returns everything read.
  const ReadResult& finish();
  size_t bytes_so_far() const { return bytes_.load(); }
  // Blocks until at least `bytes` were read (false on timeout or if the
  // stream ended short).
  bool wait_bytes(size_t bytes, Millis timeout);

 private:
  Socket socket_;
  ReadResult result_;
  std::atomic<size_t> bytes_{0};
  std::atomic<bool> over_{false};  // the thread has stopped reading
  std::thread thread_;
};

// A client of a resume output: sends its request line, then reads the
// answer line and the records after it. Records are counted as they
// arrive, so reading millions of them costs one pass. Test thread only (or
// one thread per reader); no doctest assertions inside, so a reader may
// run on a Background thread.
class ResumeReader {
 public:
  explicit ResumeReader(Socket socket) : socket_(std::move(socket)) {}
  ResumeReader(const ResumeReader&) = delete;
  ResumeReader& operator=(const ResumeReader&) = delete;

  // Writes `line` and a '\n'. False if the write failed.
  bool send_line(std::string_view line, Millis timeout = 5s);
  // The request as one line of JSON.
  bool send(const nlohmann::json& request, Millis timeout = 5s) {
    return send_line(request.dump(), timeout);
  }
  // Reads until the answer line is complete and returns it parsed; null if
  // the stream ended or `timeout` passed first, or the line is not JSON.
  nlohmann::json answer(Millis timeout = 5s);
  // The answer line as sent, without its '\n' (empty until it came).
  std::string answer_line() const;
  // Reads until `count` records follow the answer line (true), or the
  // stream ends or `timeout` passes (false).
  bool read_records(size_t count, Millis timeout = 10s);
  // Reads until the stream ends (true) or `timeout` passes (false).
  bool read_to_eof(Millis timeout = 10s);
  // Complete records read so far (the answer line excluded).
  size_t records() const;
  // The first `count` records, each with its '\n'; everything after the
  // answer line if `count` is SIZE_MAX. Valid until the next read.
  std::string_view records_text(size_t count = SIZE_MAX) const;
  bool eof() const { return eof_; }
  bool error() const { return error_; }
  Socket& socket() { return socket_; }

 private:
  // One wait and one read; false once the stream is over or the deadline
  // passed without data.
  bool read_more(Clock::time_point deadline);

  Socket socket_;
  std::string data_;
  size_t lines_ = 0;                       // complete lines, the answer's included
  size_t answer_end_ = std::string::npos;  // just past the answer's '\n'
  bool eof_ = false;
  bool error_ = false;
};

// --- metrics ----------------------------------------------------------------

// GET `path` from 127.0.0.1:port (HTTP/1.0); the body if the status is 200
// (REQUIREd).
// An HTTP/1.0 GET of any status.
struct HttpResponse {
  int status = 0;
  std::string head;  // the status line and header fields, up to the blank line
  std::string body;
};
HttpResponse http_request(uint16_t port, std::string_view path);
// The body of a GET that must answer 200.
std::string http_get(uint16_t port, std::string_view path);
// The value of one sample, named exactly as exposed, e.g.
// `chronomerge_feed_late_total{feed="a"}`, scraped from the metrics
// endpoint on `port`; nullopt if the sample is absent.
std::optional<double> scrape(uint16_t port, std::string_view sample);
// Scrapes `sample` until `done` holds for its value or `timeout` passes;
// the last value seen (nullopt if the sample was never there). Each scrape
// is a round trip through the daemon's loop, with a short pause between.
std::optional<double> wait_sample(uint16_t port, std::string_view sample,
                                  const std::function<bool(double)>& done, Millis timeout = 5s);

// Every sample of one scrape, by its name with labels as exposed.
std::map<std::string, double> scrape_all(uint16_t port);
// Scrapes until `done` holds for a whole scrape (true) or `timeout`
// passes (false): for conditions on several samples at once.
bool wait_metrics(uint16_t port,
                  const std::function<bool(const std::map<std::string, double>&)>& done,
                  Millis timeout = 5s);

// --- fleets -----------------------------------------------------------------

// obj[key] if `obj` is an object that has it; null otherwise (so a check
// on an answer of the wrong shape fails rather than throws).
nlohmann::json field(const nlohmann::json& obj, const std::string& key);
// The entry of fleet `name` in GET /fleet on the metrics port; null if it
// is not there.
nlohmann::json fleet_of(uint16_t metrics, const std::string& name = "buses");
// Polls GET /fleet until `done` holds for fleet `name` or `timeout`
// passes; the last entry seen.
nlohmann::json wait_fleet(uint16_t metrics, const std::function<bool(const nlohmann::json&)>& done,
                          Millis timeout = 10s, const std::string& name = "buses");
// The member `name` of a /fleet entry; null if it is not listed.
nlohmann::json member_of(const nlohmann::json& fleet, const std::string& name);
// The names of a /fleet entry's members, as listed.
std::vector<std::string> member_names(const nlohmann::json& fleet);
// The member's `records`, or -1.
int64_t records_of(const nlohmann::json& fleet, const std::string& name);

// --- records ----------------------------------------------------------------

// Stable merge of sorted NDJSON texts by an integer `time` field: the
// order chronomerge promises (key, then the feed's position, then arrival).
std::string stable_merge(const std::vector<std::string>& feeds, const std::string& key = "time");

// Runs `body` on a thread; join() waits for it.
class Background {
 public:
  explicit Background(std::function<void()> body) : thread_(std::move(body)) {}
  ~Background() { join(); }
  void join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::thread thread_;
};

}  // namespace chronomerge::e2e
