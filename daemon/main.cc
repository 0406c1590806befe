// chronomerge: parse the command line, then run the one-shot merge, check a
// config, or run the daemon. Everything else lives in the library.
#include <fcntl.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include <fmt/core.h>

#include "config/config.h"
#include "daemon/daemon.h"
#include "daemon/one_shot.h"
#include "log/log.h"
#include "metrics/health_probe.h"
#include "net/tls_context.h"
#include "record/record_parser.h"

using namespace chronomerge;

namespace {

constexpr const char* usage_text =
    R"(Usage:
  chronomerge [--key K] [--key-type T] [--mode M] [--max-line-bytes N] FILE... [-]
  chronomerge --config FILE [--log-level L] [--log-format F]
  chronomerge --demo [--log-level L] [--log-format F]
  chronomerge --check-config FILE
  chronomerge --healthcheck URL

Merges NDJSON feeds into one chronological stream.

The first form merges sorted files ('-' is standard input) to standard
output, like `sort -m` for NDJSON, validating every line.

Options:
  --key K             time field name, or JSON pointer such as /meta/ts (default: time)
  --key-type T        integer | number | rfc3339 | string (default: integer)
  --mode M            interleave | combine (default: interleave)
  --max-line-bytes N  longer lines are skipped (default: 1048576)
  --config FILE       run the daemon with this JSON configuration
  --demo              run the daemon with the built-in demo configuration
  --check-config FILE validate a configuration and exit
  --log-level L       error | warn | info | debug (overrides the config)
  --log-format F      text | json (overrides the config; the daemon's lines
                      start with a timestamp, or with a syslog priority
                      when standard error is the systemd journal)
  --healthcheck URL   GET URL (http://127.0.0.1:9464/healthz) and exit 0 if it
                      answers 200 within 3 s, else 1: a container's health
                      check without curl
  -h, --help          show this help
  --version           show the version

Exit status: 0 all merged; 1 some lines skipped (malformed or late);
2 usage, configuration or I/O error (an unreadable input fails before any
output); killed by SIGPIPE when the reader of the output goes away.
)";

[[noreturn]] void usage_error(const std::string& message) {
  fmt::print(stderr, "chronomerge: {}\nTry 'chronomerge --help'.\n", message);
  std::exit(exit_error);
}

// libuv's thread pool reads, frames and validates files and writes file
// sinks. Its default of four threads oversubscribes a small machine: on two
// cores, two threads merge two files about 25% faster than four, which
// spend the difference waking and preempting each other. One thread per
// core (at least two, so a read and a write can overlap), unless the
// operator chose a size.
void size_thread_pool() {
  unsigned threads = std::clamp(uv_available_parallelism(), 2u, 16u);
  setenv("UV_THREADPOOL_SIZE", std::to_string(threads).c_str(), /*overwrite=*/0);
}

// Started with standard input, output or error closed (`<&-`, `>&-`,
// `2>&-`), the process would hand those numbers to the first files and
// sockets it opens: libuv aborts when it is asked to close one of them
// ("uv__close: Assertion 'fd > STDERR_FILENO'"), and a log line could land
// in a client's socket. Each closed one is opened on /dev/null instead, in
// order, so open() returns exactly that number.
void open_closed_standard_descriptors() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    if (::open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY) != fd) std::_Exit(exit_error);
  }
}

}  // namespace

int main(int argc, char** argv) {
  // First, before anything can open a descriptor.
  open_closed_standard_descriptors();
  // A peer that goes away must cost one failed write (EPIPE, handled where
  // it happens), never the whole process.
  std::signal(SIGPIPE, SIG_IGN);
  size_thread_pool();
  OneShotOptions one_shot;
  std::string config_path;
  std::string check_path;
  bool demo = false;
  std::optional<LogLevel> log_level;
  std::optional<LogFormat> log_format;
  bool options_done = false;

  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&](std::string_view name) -> std::string {
      if (i + 1 >= argc) usage_error(fmt::format("{} needs a value", name));
      return argv[++i];
    };
    if (options_done || arg == "-" || arg.empty() || arg[0] != '-') {
      one_shot.files.emplace_back(arg);
    } else if (arg == "--") {
      options_done = true;
    } else if (arg == "-h" || arg == "--help") {
      std::fputs(usage_text, stdout);
      return exit_ok;
    } else if (arg == "--version") {
      fmt::print("chronomerge {}\n", CHRONOMERGE_VERSION);
      return exit_ok;
    } else if (arg == "--key") {
      one_shot.key = value(arg);
      if (one_shot.key.empty() || !RecordParser::valid_key_path(one_shot.key)) {
        usage_error(
            fmt::format("--key '{}' is neither a field name nor a JSON pointer", one_shot.key));
      }
    } else if (arg == "--key-type") {
      std::string v = value(arg);
      auto type = parse_key_type(v);
      if (!type) usage_error(fmt::format("unknown key type '{}'", v));
      one_shot.key_type = *type;
    } else if (arg == "--mode") {
      std::string v = value(arg);
      auto mode = parse_merge_mode(v);
      if (!mode) usage_error(fmt::format("unknown mode '{}'", v));
      one_shot.mode = *mode;
    } else if (arg == "--max-line-bytes") {
      std::string v = value(arg);
      char* end = nullptr;
      unsigned long long n = std::strtoull(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 64 || n > (1ull << 30)) {
        usage_error(
            fmt::format("--max-line-bytes must be a number from 64 to 1073741824, got '{}'", v));
      }
      one_shot.max_line_bytes = static_cast<size_t>(n);
    } else if (arg == "--config") {
      config_path = value(arg);
      if (config_path.empty()) usage_error("--config needs a file name, got ''");
    } else if (arg == "--check-config") {
      check_path = value(arg);
      if (check_path.empty()) usage_error("--check-config needs a file name, got ''");
    } else if (arg == "--demo") {
      demo = true;
    } else if (arg == "--healthcheck") {
      const std::string url = value(arg);
      std::string error;
      if (probe_health(url, 3000, error)) return exit_ok;
      fmt::print(stderr, "chronomerge: unhealthy: {}\n", error);
      return 1;
    } else if (arg == "--log-format") {
      std::string v = value(arg);
      log_format = parse_log_format(v);
      if (!log_format) usage_error(fmt::format("unknown log format '{}' (text or json)", v));
    } else if (arg == "--log-level") {
      std::string v = value(arg);
      log_level = parse_log_level(v);
      if (!log_level) usage_error(fmt::format("unknown log level '{}'", v));
    } else {
      usage_error(fmt::format("unknown option '{}'", arg));
    }
  }

  if (!check_path.empty()) {
    ConfigResult result = load_config(check_path);
    check_tls_files(result);  // the check opens what the daemon would open
    if (result.config) {
      // ... and looks at every path it would use, changing nothing.
      std::vector<ConfigProblem> paths = check_config_paths(*result.config);
      if (!paths.empty()) {
        result.problems = std::move(paths);
        result.config.reset();
      }
    }
    if (!result.problems.empty()) {
      fmt::print(stderr, "{}: {} problem{}:\n{}", check_path, result.problems.size(),
                 result.problems.size() == 1 ? "" : "s", format_problems(result.problems));
      return exit_error;
    }
    fmt::print("{}: ok ({} feeds, {} outputs)\n", check_path, result.config->feeds.size(),
               result.config->outputs.size());
    return exit_ok;
  }
  if (!config_path.empty() || demo) {
    if (!one_shot.files.empty()) usage_error("files cannot be given with --config or --demo");
    DaemonOptions options;
    options.config_path = config_path;
    options.log_level = log_level;
    options.log_format = log_format;
    return run_daemon(options);
  }
  if (one_shot.files.empty()) usage_error("no input files (use '-' for standard input)");
  if (log_level) log::set_level(*log_level);
  return run_one_shot(one_shot);
}
