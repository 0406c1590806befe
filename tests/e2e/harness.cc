#include "harness.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <tuple>

extern char** environ;

namespace chronomerge::e2e {
namespace fs = std::filesystem;

namespace {

// Milliseconds left until `deadline`, as poll() wants them (0 when past).
int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

std::string errno_text(int error) {
  return std::strerror(error);
}

sockaddr_in loopback_address(uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

}  // namespace

// --- files ------------------------------------------------------------------

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/cm-e2e-XXXXXX";
  char* made = mkdtemp(tmpl.data());
  REQUIRE_MESSAGE(made != nullptr, "mkdtemp: " << errno_text(errno));
  path_ = made;
}

TempDir::~TempDir() {
  const char* keep = std::getenv("CHRONOMERGE_E2E_KEEP");
  if (keep && std::string_view(keep) == "1") {
    std::fprintf(stderr, "kept %s\n", path_.c_str());
    return;
  }
  std::error_code ignored;
  fs::remove_all(path_, ignored);
}

std::string TempDir::operator/(std::string_view name) const {
  return path_ + "/" + std::string(name);
}

std::string TempDir::write(std::string_view name, std::string_view content) const {
  std::string path = *this / name;
  write_file(path, content);
  return path;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, std::string_view content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  REQUIRE_MESSAGE(out.good(), "cannot write " << path);
}

std::vector<std::string> split_lines(std::string_view text) {
  std::vector<std::string> lines;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    if (nl == std::string_view::npos) {
      lines.emplace_back(text);
      break;
    }
    lines.emplace_back(text.substr(0, nl));
    text.remove_prefix(nl + 1);
  }
  return lines;
}

// --- processes --------------------------------------------------------------

void init_default_signals(posix_spawnattr_t& attr) {
  posix_spawnattr_init(&attr);
  sigset_t all;
  sigset_t none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
}

Process::Process(const SpawnOptions& options) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (options.stdin_fd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, options.stdin_fd, 0);
  } else {
    posix_spawn_file_actions_addopen(
        &actions, 0, options.stdin_path.empty() ? "/dev/null" : options.stdin_path.c_str(),
        O_RDONLY, 0);
  }
  auto output = [&](int fd, const std::string& path) {
    posix_spawn_file_actions_addopen(&actions, fd, path.empty() ? "/dev/null" : path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
  };
  if (options.stdout_fd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, options.stdout_fd, 1);
  } else {
    output(1, options.stdout_path);
  }
  output(2, options.stderr_path);
  for (int fd : options.closed) posix_spawn_file_actions_addclose(&actions, fd);
  // dup2 onto itself clears FD_CLOEXEC (POSIX 2018; glibc 2.29).
  for (int fd : options.inherited) posix_spawn_file_actions_adddup2(&actions, fd, fd);

  // Default dispositions and an empty mask, whatever the test runner set:
  // the daemon must cope with SIGPIPE and friends on its own.
  posix_spawnattr_t attr;
  init_default_signals(attr);

  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view var = *e;
    bool systemd = false;
    for (std::string_view name : {"NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID=",
                                  "LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES="}) {
      systemd = systemd || var.substr(0, name.size()) == name;
    }
    if (!systemd) env.emplace_back(var);
  }
  if (!options.notify_socket.empty()) env.push_back("NOTIFY_SOCKET=" + options.notify_socket);
  env.insert(env.end(), options.env.begin(), options.env.end());

  std::vector<std::string> args{CHRONOMERGE_BINARY};
  args.insert(args.end(), options.args.begin(), options.args.end());
  std::string program = CHRONOMERGE_BINARY;
  if (options.open_files_limit > 0) {
    // posix_spawn cannot set a limit for the child alone: a shell sets it
    // and becomes the binary ($0 is its path, "$@" its arguments).
    args.insert(args.begin(), {"/bin/sh", "-c",
                               "ulimit -n " + std::to_string(options.open_files_limit) +
                                   " && exec \"$0\" \"$@\""});
    program = "/bin/sh";
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  int rc = posix_spawn(&pid_, program.c_str(), &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  REQUIRE_MESSAGE(rc == 0, "posix_spawn " << CHRONOMERGE_BINARY << ": " << errno_text(rc));
  // A pidfd turns "the child exited" into an event poll() can wait for.
  pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
}

Process::~Process() {
  if (pid_ > 0 && !exited_) {
    ::kill(pid_, SIGKILL);
    reap(true);
  }
  if (pidfd_ >= 0) ::close(pidfd_);
}

bool Process::reap(bool block) {
  if (exited_) return true;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r != pid_) return false;
  exited_ = true;
  if (WIFEXITED(status)) {
    status_.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    status_.signal = WTERMSIG(status);
  }
  return true;
}

bool Process::running() {
  return !reap(false);
}

void Process::signal(int signum) {
  if (!exited_) ::kill(pid_, signum);
}

ExitStatus Process::wait(Millis timeout) {
  auto deadline = Clock::now() + timeout;
  while (!reap(false)) {
    int left = remaining_ms(deadline);
    if (left == 0) {
      FAIL_CHECK("chronomerge (pid " << pid_ << ") did not exit within " << timeout.count()
                                     << " ms; killing it");
      ::kill(pid_, SIGKILL);
      reap(true);
      break;
    }
    if (pidfd_ >= 0) {
      pollfd p{pidfd_, POLLIN, 0};
      ::poll(&p, 1, left);
    } else {
      ::poll(nullptr, 0, std::min(left, 10));  // no pidfd: a short bounded wait
    }
  }
  return status_;
}

RunResult run_chronomerge(const TempDir& dir, const std::vector<std::string>& args, const Stdin& in,
                          Millis timeout) {
  static int runs = 0;
  ++runs;
  SpawnOptions options;
  options.args = args;
  options.stdout_path = dir / ("run" + std::to_string(runs) + ".out");
  options.stderr_path = dir / ("run" + std::to_string(runs) + ".err");
  options.stdin_path = in.file;
  const std::string* stdin_data = in.pipe ? &*in.pipe : nullptr;
  int pipe_fds[2] = {-1, -1};
  if (stdin_data) {
    REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
    options.stdin_fd = pipe_fds[0];
  }
  RunResult result;
  {
    Process child(options);
    std::thread writer;
    if (stdin_data) {
      ::close(pipe_fds[0]);
      int fd = pipe_fds[1];
      writer = std::thread([fd, stdin_data] {
        // A child that exits without reading must not kill the test with
        // SIGPIPE: block it on this thread, so write() fails with EPIPE.
        sigset_t pipe_set;
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
        std::string_view rest = *stdin_data;
        while (!rest.empty()) {
          ssize_t n = ::write(fd, rest.data(), rest.size());
          if (n < 0 && errno == EINTR) continue;
          if (n <= 0) break;
          rest.remove_prefix(static_cast<size_t>(n));
        }
        ::close(fd);
      });
    }
    result.status = child.wait(timeout);
    if (writer.joinable()) writer.join();
  }
  result.out = read_file(options.stdout_path);
  result.err = read_file(options.stderr_path);
  return result;
}

std::string flat_merge(const std::vector<std::vector<std::string>>& feeds) {
  TempDir dir;
  std::vector<std::string> args;
  for (size_t f = 0; f < feeds.size(); ++f) {
    args.push_back(dir.write("f" + std::to_string(f) + ".ndjson", lines_of(feeds[f])));
  }
  const RunResult flat = run_chronomerge(dir, args);
  REQUIRE(flat.status.code == 0);
  return flat.out;
}

Memory memory_of(pid_t pid) {
  Memory memory;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    auto value = [&](std::string_view field) -> std::optional<uint64_t> {
      if (line.compare(0, field.size(), field) != 0) return std::nullopt;
      return std::strtoull(line.c_str() + field.size(), nullptr, 10);
    };
    if (auto v = value("VmRSS:")) memory.rss_kib = *v;
    if (auto v = value("VmHWM:")) memory.hwm_kib = *v;
  }
  return memory;
}

// --- the daemon -------------------------------------------------------------

namespace {

int open_notify_socket(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  REQUIRE_MESSAGE(fd >= 0, "socket: " << errno_text(errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  REQUIRE(path.size() < sizeof(addr.sun_path));
  path.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
  int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  REQUIRE_MESSAGE(rc == 0, "bind " << path << ": " << errno_text(errno));
  return fd;
}

SpawnOptions daemon_options(const TempDir& dir, const nlohmann::json& config,
                            std::vector<std::string> env) {
  SpawnOptions options;
  options.env = std::move(env);
  options.args = {"--config", dir.write("config.json", config.dump(2))};
  options.stdout_path = dir / "daemon.out";
  options.stderr_path = dir / "daemon.log";
  options.notify_socket = dir / "notify.sock";
  return options;
}

SpawnOptions daemon_options(const TempDir& dir, const nlohmann::json& config,
                            const DaemonOptions& extra) {
  SpawnOptions options = daemon_options(dir, config, extra.env);
  options.open_files_limit = extra.open_files_limit;
  return options;
}

}  // namespace

Daemon::Daemon(const TempDir& dir, const nlohmann::json& config, Millis ready_timeout,
               std::vector<std::string> env)
    : Daemon(dir, config, DaemonOptions{ready_timeout, std::move(env), 0}) {}

Daemon::Daemon(const TempDir& dir, const nlohmann::json& config, const DaemonOptions& options)
    : log_path_(dir / "daemon.log"),
      out_path_(dir / "daemon.out"),
      notify_fd_(open_notify_socket(dir / "notify.sock")),
      process_(daemon_options(dir, config, options)) {
  const Millis ready_timeout = options.ready_timeout;
  collect_notifications(ready_timeout);
  bool ready = std::any_of(notifications_.begin(), notifications_.end(),
                           [](const auto& n) { return n.find("READY=1") != std::string::npos; });
  if (!ready) {
    std::string log_text = log();
    ExitStatus status;
    bool exited = !process_.running();
    if (exited) status = process_.wait(0ms);
    FAIL("chronomerge did not send READY=1 within "
         << ready_timeout.count() << " ms"
         << (exited ? " (it exited with " + std::to_string(status.code) + ", signal " +
                          std::to_string(status.signal) + ")"
                    : "")
         << "; its log:\n"
         << log_text);
  }
}

Daemon::~Daemon() {
  if (notify_fd_ >= 0) ::close(notify_fd_);
}

// Reads notify datagrams until READY=1 arrives, the daemon exits, or the
// timeout passes; a pidfd makes the exit an event too.
void Daemon::collect_notifications(Millis timeout) {
  auto deadline = Clock::now() + timeout;
  while (true) {
    receive_notifications();
    for (const std::string& n : notifications_) {
      if (n.find("READY=1") != std::string::npos) return;
    }
    if (!process_.running()) {
      receive_notifications();  // sent just before exiting
      return;
    }
    int left = remaining_ms(deadline);
    if (left == 0) return;
    pollfd fds[2] = {{notify_fd_, POLLIN, 0}, {process_.pidfd(), POLLIN, 0}};
    ::poll(fds, fds[1].fd >= 0 ? 2 : 1, fds[1].fd >= 0 ? left : std::min(left, 20));
  }
}

bool Daemon::check_alive() {
  if (process_.running()) return true;
  ExitStatus status = process_.wait(0ms);
  FAIL_CHECK("chronomerge is not running any more: "
             << (status.signal ? std::string("killed by ") + strsignal(status.signal)
                               : "exited with " + std::to_string(status.code))
             << "; its log ends:\n"
             << log_tail());
  return false;
}

void Daemon::receive_notifications() {
  char buffer[4096];
  ssize_t n;
  while ((n = ::recv(notify_fd_, buffer, sizeof(buffer), 0)) > 0) {
    notifications_.emplace_back(buffer, static_cast<size_t>(n));
  }
}

size_t Daemon::notified(std::string_view needle) {
  receive_notifications();
  return static_cast<size_t>(
      std::count_if(notifications_.begin(), notifications_.end(),
                    [&](const std::string& n) { return n.find(needle) != std::string::npos; }));
}

bool Daemon::wait_notified(std::string_view needle, size_t count, Millis timeout) {
  auto deadline = Clock::now() + timeout;
  while (notified(needle) < count) {
    int left = remaining_ms(deadline);
    if (left == 0) return false;
    pollfd fd{notify_fd_, POLLIN, 0};
    ::poll(&fd, 1, left);
  }
  return true;
}

ExitStatus Daemon::wait(Millis timeout) {
  ExitStatus status = process_.wait(timeout);
  CHECK_MESSAGE(log_count("internal:") == 0, "the daemon reported an internal error:\n"
                                                 << log_tail());
  return status;
}

ExitStatus Daemon::stop(Millis timeout) {
  signal(SIGTERM);
  return wait(timeout);
}

std::string Daemon::log_tail(size_t lines) const {
  std::vector<std::string> all = split_lines(log());
  std::string out;
  for (size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) {
    out += all[i] + "\n";
  }
  return out;
}

size_t Daemon::log_count(std::string_view needle) const {
  size_t count = 0;
  for (const std::string& line : split_lines(log())) {
    if (line.find(needle) != std::string::npos) ++count;
  }
  return count;
}

bool Daemon::wait_log(std::string_view needle, Millis timeout, size_t count) {
  auto deadline = Clock::now() + timeout;
  int watch = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (watch >= 0) ::inotify_add_watch(watch, log_path_.c_str(), IN_MODIFY);
  bool found = false;
  while (true) {
    // Check after arming the watch, so a write in between is not missed.
    if (log_count(needle) >= count) {
      found = true;
      break;
    }
    if (!process_.running()) break;
    int left = remaining_ms(deadline);
    if (left == 0) break;
    pollfd fds[2] = {{watch, POLLIN, 0}, {process_.pidfd(), POLLIN, 0}};
    if (watch < 0) left = std::min(left, 10);
    ::poll(fds, 2, left);
    char events[4096];
    while (watch >= 0 && ::read(watch, events, sizeof(events)) > 0) {
    }
  }
  if (watch >= 0) ::close(watch);
  return found;
}

uint16_t Daemon::listening_port(const std::string& listener, size_t count, Millis timeout) {
  const std::string needle = listener + ": listening on ";
  REQUIRE_MESSAGE(wait_log(needle, timeout, count), "no \"" << needle << "\" line (" << count
                                                            << " wanted) within " << timeout.count()
                                                            << " ms; the log ends:\n"
                                                            << log_tail());
  std::string address;
  for (const std::string& line : split_lines(log())) {
    size_t at = line.find(needle);
    if (at != std::string::npos) address = line.substr(at + needle.size());
  }
  // "127.0.0.1:41234", or "http://127.0.0.1:41234" for metrics.
  size_t colon = address.rfind(':');
  REQUIRE_MESSAGE(colon != std::string::npos, "no port in \"" << address << "\"");
  int port = std::atoi(address.c_str() + colon + 1);
  REQUIRE_MESSAGE((port > 0 && port <= 65535),
                  listener << " logged \"" << address << "\", not the port it bound");
  return static_cast<uint16_t>(port);
}

uint16_t Daemon::feed_port(const std::string& name, size_t count, Millis timeout) {
  return listening_port("feed " + name, count, timeout);
}

uint16_t Daemon::output_port(const std::string& name, size_t count, Millis timeout) {
  return listening_port("output " + name, count, timeout);
}

uint16_t Daemon::metrics_port(size_t count, Millis timeout) {
  return listening_port("metrics", count, timeout);
}

// --- sockets ----------------------------------------------------------------

Socket& Socket::operator=(Socket&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

void Socket::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void Socket::reset() {
  if (fd_ < 0) return;
  linger lg{1, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  close();
}

void Socket::shutdown_write() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

void Socket::set_nonblocking(bool on) {
  int flags = ::fcntl(fd_, F_GETFL);
  ::fcntl(fd_, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK);
}

uint16_t free_port() {
  // The kernel may hand the same free port to two binds in a row once the
  // first socket is closed; a test asking for several ports needs them
  // distinct, so none is handed out twice by this process.
  static std::set<uint16_t> given;
  static std::mutex mutex;
  for (;;) {
    Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(s);
    sockaddr_in addr = loopback_address(0);
    REQUIRE(::bind(s.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    socklen_t len = sizeof(addr);
    REQUIRE(::getsockname(s.fd(), reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    std::lock_guard lock(mutex);
    if (given.insert(ntohs(addr.sin_port)).second) return ntohs(addr.sin_port);
  }
}

uint16_t port_of(const Socket& socket) {
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  REQUIRE(::getsockname(socket.fd(), reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  return ntohs(addr.sin_port);
}

std::string loopback(uint16_t port) {
  return "127.0.0.1:" + std::to_string(port);
}

nlohmann::json tcp_feed(const std::string& name, uint16_t port) {
  return {{"name", name}, {"type", "tcp-listen"}, {"listen", loopback(port)}};
}

nlohmann::json tcp_output(const std::string& name, uint16_t port) {
  nlohmann::json output = tcp_feed(name, port);
  output["slow_client"] = "block";
  return output;
}

void with_metrics(nlohmann::json& config) {
  config["metrics"] = {{"listen", loopback(0)}};
}

nlohmann::json resume_output(const std::string& name, uint16_t port) {
  return {{"name", name}, {"type", "tcp-listen"}, {"listen", loopback(port)}, {"resume", true}};
}

std::string record(int64_t time, const std::string& feed, int64_t seq) {
  return "{\"time\":" + std::to_string(time) + ",\"feed\":\"" + feed +
         "\",\"seq\":" + std::to_string(seq) + "}";
}

std::string sorted_feed(std::mt19937& rng, const std::string& name, int count) {
  std::string out;
  int64_t time = 1000;
  for (int i = 0; i < count; ++i) {
    time += static_cast<int64_t>(rng() % 3);
    out += record(time, name, i) + "\n";
  }
  return out;
}

std::string lines_of(const std::vector<std::string>& records) {
  std::string out;
  for (const auto& r : records) out += r + "\n";
  return out;
}

bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

Socket connect_tcp(uint16_t port, Millis timeout, int rcvbuf) {
  auto deadline = Clock::now() + timeout;
  int last_error = 0;
  while (true) {
    Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(s);
    if (rcvbuf > 0) ::setsockopt(s.fd(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    sockaddr_in addr = loopback_address(port);
    if (::connect(s.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) return s;
    last_error = errno;
    int left = remaining_ms(deadline);
    if (left == 0 || (last_error != ECONNREFUSED && last_error != EINTR)) break;
    ::poll(nullptr, 0, std::min(left, 20));  // retry: the listener may be about to bind
  }
  FAIL("cannot connect to 127.0.0.1:" << port << ": " << errno_text(last_error));
  return Socket();
}

Socket listen_tcp(uint16_t port) {
  Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(s);
  int one = 1;
  ::setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  ::setsockopt(s.fd(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  sockaddr_in addr = loopback_address(port);
  REQUIRE_MESSAGE(::bind(s.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0,
                  "bind 127.0.0.1:" << port << ": " << errno_text(errno));
  REQUIRE(::listen(s.fd(), 16) == 0);
  return s;
}

Socket hold_tcp(uint16_t port) {
  Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(s);
  int one = 1;
  ::setsockopt(s.fd(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  sockaddr_in addr = loopback_address(port);
  REQUIRE_MESSAGE(::bind(s.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0,
                  "bind 127.0.0.1:" << port << ": " << errno_text(errno));
  return s;
}

Socket connect_unix(const std::string& path) {
  Socket s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(s);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  REQUIRE(path.size() < sizeof(addr.sun_path));
  path.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
  REQUIRE_MESSAGE(::connect(s.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0,
                  "connect " << path << ": " << errno_text(errno));
  return s;
}

Socket accept_tcp(const Socket& listener, Millis timeout) {
  REQUIRE_MESSAGE(wait_readable(listener, timeout),
                  "no connection within " << timeout.count() << " ms");
  Socket s(::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC));
  REQUIRE_MESSAGE(s, "accept: " << errno_text(errno));
  return s;
}

bool wait_readable(const Socket& socket, Millis timeout) {
  pollfd p{socket.fd(), POLLIN, 0};
  int rc;
  auto deadline = Clock::now() + timeout;
  do {
    rc = ::poll(&p, 1, remaining_ms(deadline));
  } while (rc < 0 && errno == EINTR);
  return rc > 0;
}

bool wait_writable(const Socket& socket, Millis timeout) {
  pollfd p{socket.fd(), POLLOUT, 0};
  int rc;
  auto deadline = Clock::now() + timeout;
  do {
    rc = ::poll(&p, 1, remaining_ms(deadline));
  } while (rc < 0 && errno == EINTR);
  return rc > 0 && (p.revents & POLLOUT);
}

bool write_all(const Socket& socket, std::string_view data, Millis timeout) {
  auto deadline = Clock::now() + timeout;
  while (!data.empty()) {
    ssize_t n = ::send(socket.fd(), data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return false;
    pollfd p{socket.fd(), POLLOUT, 0};
    int left = remaining_ms(deadline);
    if (left == 0) return false;
    ::poll(&p, 1, left);
  }
  return true;
}

ssize_t try_write(const Socket& socket, std::string_view data) {
  ssize_t n = ::send(socket.fd(), data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n >= 0) return n;
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
}

namespace {

// Reads what is there into `result`; false once the stream is over.
bool read_available(const Socket& socket, ReadResult& result, size_t max) {
  char buffer[64 << 10];
  ssize_t n = ::recv(socket.fd(), buffer, std::min(max, sizeof(buffer)), MSG_DONTWAIT);
  if (n > 0) {
    result.data.append(buffer, static_cast<size_t>(n));
    return true;
  }
  if (n == 0) {
    result.eof = true;
    return false;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return true;
  result.error = true;
  return false;
}

template <typename Done>
ReadResult read_until(const Socket& socket, Millis timeout, size_t max, Done done) {
  ReadResult result;
  auto deadline = Clock::now() + timeout;
  while (!done(result)) {
    if (!wait_readable(socket, Millis(remaining_ms(deadline)))) break;
    if (!read_available(socket, result, max - result.data.size())) break;
  }
  return result;
}

}  // namespace

ReadResult read_lines(const Socket& socket, size_t lines, Millis timeout) {
  return read_until(socket, timeout, SIZE_MAX, [lines](const ReadResult& r) {
    return static_cast<size_t>(std::count(r.data.begin(), r.data.end(), '\n')) >= lines;
  });
}

ReadResult read_to_eof(const Socket& socket, Millis timeout) {
  return read_until(socket, timeout, SIZE_MAX, [](const ReadResult&) { return false; });
}

ReadResult read_some(const Socket& socket, size_t max, Millis timeout) {
  return read_until(socket, timeout, max, [](const ReadResult& r) { return !r.data.empty(); });
}

// --- Collector --------------------------------------------------------------

namespace {
// Collectors signal progress through one process-wide condition variable:
// waiters re-check their own counter.
std::mutex collector_mutex;
std::condition_variable collector_progress;
}  // namespace

Collector::Collector(Socket socket, Millis timeout) : socket_(std::move(socket)) {
  thread_ = std::thread([this, timeout] {
    auto deadline = Clock::now() + timeout;
    while (true) {
      if (!wait_readable(socket_, Millis(remaining_ms(deadline)))) break;
      size_t before = result_.data.size();
      bool more = read_available(socket_, result_, SIZE_MAX);
      {
        std::lock_guard<std::mutex> lock(collector_mutex);
        bytes_ += result_.data.size() - before;
      }
      collector_progress.notify_all();
      if (!more) break;
    }
    {
      std::lock_guard<std::mutex> lock(collector_mutex);
      over_ = true;
    }
    collector_progress.notify_all();
  });
}

Collector::~Collector() {
  // Abandoned early (a failed check): wake the thread with a shutdown
  // rather than waiting out its timeout.
  if (thread_.joinable()) {
    ::shutdown(socket_.fd(), SHUT_RDWR);
    thread_.join();
  }
}

const ReadResult& Collector::finish() {
  if (thread_.joinable()) thread_.join();
  return result_;
}

bool Collector::wait_bytes(size_t bytes, Millis timeout) {
  std::unique_lock<std::mutex> lock(collector_mutex);
  collector_progress.wait_for(lock, timeout, [&] { return bytes_ >= bytes || over_; });
  return bytes_ >= bytes;
}

// --- ResumeReader -----------------------------------------------------------

bool ResumeReader::send_line(std::string_view line, Millis timeout) {
  std::string text(line);
  text += '\n';
  return write_all(socket_, text, timeout);
}

bool ResumeReader::read_more(Clock::time_point deadline) {
  if (eof_ || error_) return false;
  if (!wait_readable(socket_, Millis(remaining_ms(deadline)))) return false;
  constexpr size_t chunk = 256 << 10;
  const size_t before = data_.size();
  data_.resize(before + chunk);
  ssize_t n = ::recv(socket_.fd(), data_.data() + before, chunk, MSG_DONTWAIT);
  data_.resize(before + static_cast<size_t>(std::max<ssize_t>(n, 0)));
  if (n == 0) {
    eof_ = true;
    return false;
  }
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return true;
    error_ = true;
    return false;
  }
  // Count only the new bytes: a reader of millions of records never
  // rescans what it holds.
  for (const char* p = data_.data() + before; p < data_.data() + data_.size(); ++p) {
    p = static_cast<const char*>(std::memchr(p, '\n', data_.data() + data_.size() - p));
    if (p == nullptr) break;
    if (lines_++ == 0) answer_end_ = static_cast<size_t>(p - data_.data()) + 1;
  }
  return true;
}

nlohmann::json ResumeReader::answer(Millis timeout) {
  auto deadline = Clock::now() + timeout;
  while (lines_ == 0) {
    if (!read_more(deadline) && (eof_ || error_ || Clock::now() >= deadline)) break;
  }
  if (lines_ == 0) return nullptr;
  return nlohmann::json::parse(answer_line(), nullptr, /*allow_exceptions=*/false);
}

std::string ResumeReader::answer_line() const {
  return lines_ == 0 ? std::string() : data_.substr(0, answer_end_ - 1);
}

size_t ResumeReader::records() const {
  return lines_ == 0 ? 0 : lines_ - 1;
}

bool ResumeReader::read_records(size_t count, Millis timeout) {
  auto deadline = Clock::now() + timeout;
  while (records() < count || lines_ == 0) {
    if (!read_more(deadline) && (eof_ || error_ || Clock::now() >= deadline)) break;
  }
  return lines_ > 0 && records() >= count;
}

bool ResumeReader::read_to_eof(Millis timeout) {
  auto deadline = Clock::now() + timeout;
  while (!eof_ && !error_) {
    if (!read_more(deadline) && Clock::now() >= deadline) break;
  }
  return eof_;
}

std::string_view ResumeReader::records_text(size_t count) const {
  if (lines_ == 0) return {};
  std::string_view rest(data_);
  rest.remove_prefix(answer_end_);
  if (count == SIZE_MAX) return rest;
  size_t end = 0;
  for (size_t i = 0; i < count; ++i) {
    size_t nl = rest.find('\n', end);
    if (nl == std::string_view::npos) return rest.substr(0, end);
    end = nl + 1;
  }
  return rest.substr(0, end);
}

// --- metrics ----------------------------------------------------------------

HttpResponse http_request(uint16_t port, std::string_view path) {
  Socket s = connect_tcp(port);
  REQUIRE(write_all(s, "GET " + std::string(path) + " HTTP/1.0\r\nHost: localhost\r\n\r\n"));
  ReadResult response = read_to_eof(s, 5s);
  REQUIRE(response.eof);
  INFO("response: " << response.data.substr(0, 200));
  REQUIRE(starts_with(response.data, "HTTP/1."));
  HttpResponse out;
  size_t sp = response.data.find(' ');
  REQUIRE(sp != std::string::npos);
  out.status = std::atoi(response.data.c_str() + sp + 1);
  size_t body = response.data.find("\r\n\r\n");
  REQUIRE(body != std::string::npos);
  out.head = response.data.substr(0, body + 2);
  out.body = response.data.substr(body + 4);
  return out;
}

std::string http_get(uint16_t port, std::string_view path) {
  HttpResponse response = http_request(port, path);
  REQUIRE(response.status == 200);
  return response.body;
}

std::optional<double> scrape(uint16_t port, std::string_view sample) {
  for (const std::string& line : split_lines(http_get(port, "/metrics"))) {
    if (line.size() > sample.size() && starts_with(line, sample) && line[sample.size()] == ' ') {
      return std::strtod(line.c_str() + sample.size() + 1, nullptr);
    }
  }
  return std::nullopt;
}

std::map<std::string, double> scrape_all(uint16_t port) {
  std::map<std::string, double> samples;
  for (const std::string& line : split_lines(http_get(port, "/metrics"))) {
    if (line.empty() || line[0] == '#') continue;
    size_t sp = line.rfind(' ');
    if (sp == std::string::npos) continue;
    samples[line.substr(0, sp)] = std::strtod(line.c_str() + sp + 1, nullptr);
  }
  return samples;
}

bool wait_metrics(uint16_t port,
                  const std::function<bool(const std::map<std::string, double>&)>& done,
                  Millis timeout) {
  auto deadline = Clock::now() + timeout;
  while (true) {
    if (done(scrape_all(port))) return true;
    if (Clock::now() >= deadline) return false;
    ::poll(nullptr, 0, 5);
  }
}

std::optional<double> wait_sample(uint16_t port, std::string_view sample,
                                  const std::function<bool(double)>& done, Millis timeout) {
  auto deadline = Clock::now() + timeout;
  std::optional<double> value;
  while (true) {
    value = scrape(port, sample);
    if (value && done(*value)) return value;
    if (Clock::now() >= deadline) return value;
    ::poll(nullptr, 0, 10);
  }
}

// --- records ----------------------------------------------------------------

std::string stable_merge(const std::vector<std::string>& feeds, const std::string& key) {
  std::vector<std::pair<int64_t, std::string>> records;
  for (const std::string& feed : feeds) {
    for (std::string& line : split_lines(feed)) {
      int64_t k = nlohmann::json::parse(line).at(key).get<int64_t>();
      records.emplace_back(k, std::move(line));
    }
  }
  // Feeds are concatenated in order, so a stable sort by key alone breaks
  // ties by feed position, then by arrival within the feed.
  std::stable_sort(records.begin(), records.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string out;
  for (const auto& [k, line] : records) out += line + "\n";
  return out;
}

// --- fleets -----------------------------------------------------------------

nlohmann::json field(const nlohmann::json& obj, const std::string& key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() ? nlohmann::json() : *it;
}

nlohmann::json fleet_of(uint16_t metrics, const std::string& name) {
  const nlohmann::json all =
      nlohmann::json::parse(http_get(metrics, "/fleet"), nullptr, /*allow_exceptions=*/false);
  if (!all.is_object() || !all.contains("fleets") || !all["fleets"].is_array()) return nullptr;
  for (const nlohmann::json& fleet : all["fleets"]) {
    if (field(fleet, "name") == name) return fleet;
  }
  return nullptr;
}

nlohmann::json wait_fleet(uint16_t metrics, const std::function<bool(const nlohmann::json&)>& done,
                          Millis timeout, const std::string& name) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    nlohmann::json fleet = fleet_of(metrics, name);
    if (fleet.is_object() && done(fleet)) return fleet;
    if (Clock::now() >= deadline) return fleet;
    std::this_thread::sleep_for(10ms);  // a pause between polls, not a wait for an event
  }
}

nlohmann::json member_of(const nlohmann::json& fleet, const std::string& name) {
  const nlohmann::json members = field(fleet, "members");
  if (!members.is_array()) return nullptr;
  for (const nlohmann::json& member : members) {
    if (field(member, "name") == name) return member;
  }
  return nullptr;
}

std::vector<std::string> member_names(const nlohmann::json& fleet) {
  std::vector<std::string> names;
  const nlohmann::json members = field(fleet, "members");
  if (!members.is_array()) return names;
  for (const nlohmann::json& member : members) {
    const nlohmann::json name = field(member, "name");
    names.push_back(name.is_string() ? name.get<std::string>() : "");
  }
  return names;
}

int64_t records_of(const nlohmann::json& fleet, const std::string& name) {
  const nlohmann::json records = field(member_of(fleet, name), "records");
  return records.is_number_integer() ? records.get<int64_t>() : -1;
}

}  // namespace chronomerge::e2e
