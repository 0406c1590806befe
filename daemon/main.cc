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
#include <CLI/CLI.hpp>

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
  std::string health_url;
  std::string key_type = "integer";
  std::string mode = "interleave";
  std::string log_level_text;
  std::string log_format_text;
  bool help = false;
  bool version = false;

  // CLI11 (Debian's libcli11-dev) parses: --opt value and --opt=value,
  // ranges and choices checked, conflicting options refused. The help text
  // stays ours (usage_text), written for people.
  CLI::App app{"chronomerge"};
  app.set_help_flag();
  app.add_flag("-h,--help", help);
  app.add_flag("--version", version);
  auto* key = app.add_option("--key", one_shot.key)->check([](const std::string& v) {
    return RecordParser::valid_key_path(v)
               ? std::string()
               : fmt::format("'{}' is neither a field name nor a JSON pointer", v);
  });
  auto* type = app.add_option("--key-type", key_type)
                   ->check(CLI::IsMember({"integer", "number", "rfc3339", "string"}));
  auto* merge_mode =
      app.add_option("--mode", mode)->check(CLI::IsMember({"interleave", "combine"}));
  auto* max_line = app.add_option("--max-line-bytes", one_shot.max_line_bytes)
                       ->check(CLI::Range(size_t{64}, size_t{1} << 30));
  const auto needs_name = [](const std::string& option) {
    return [option](const std::string& v) {
      return v.empty() ? option + " needs a file name, got ''" : std::string();
    };
  };
  auto* config = app.add_option("--config", config_path)->check(needs_name("--config"));
  auto* check = app.add_option("--check-config", check_path)->check(needs_name("--check-config"));
  auto* demo = app.add_flag("--demo");
  auto* health = app.add_option("--healthcheck", health_url);
  auto* level = app.add_option("--log-level", log_level_text)
                    ->check(CLI::IsMember({"error", "warn", "info", "debug"}));
  auto* format =
      app.add_option("--log-format", log_format_text)->check(CLI::IsMember({"text", "json"}));
  auto* files = app.add_option("files", one_shot.files);
  // One thing at a time: a daemon, a check, a probe, or a one-shot merge.
  config->excludes(check, demo, health, files, key, type, merge_mode, max_line);
  demo->excludes(check, health, files, key, type, merge_mode, max_line);
  check->excludes(health, files, key, type, merge_mode, max_line, level, format);
  health->excludes(files, key, type, merge_mode, max_line, level, format);
  format->excludes(files);  // one-shot lines are plain, like any command's
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    usage_error(error.what());
  }
  if (help) {
    std::fputs(usage_text, stdout);
    return exit_ok;
  }
  if (version) {
    fmt::print("chronomerge {}\n", CHRONOMERGE_VERSION);
    return exit_ok;
  }
  one_shot.key_type = *parse_key_type(key_type);
  one_shot.mode = *parse_merge_mode(mode);
  std::optional<LogLevel> log_level;
  if (!log_level_text.empty()) log_level = parse_log_level(log_level_text);
  std::optional<LogFormat> log_format;
  if (!log_format_text.empty()) log_format = parse_log_format(log_format_text);
  if (!health_url.empty() || health->count() > 0) {
    std::string error;
    if (probe_health(health_url, 3000, error)) return exit_ok;
    fmt::print(stderr, "chronomerge: unhealthy: {}\n", error);
    return 1;
  }
  const bool run_demo = demo->count() > 0;

  if (!check_path.empty()) {
    ConfigResult result = load_config(check_path);
    if (result.config) {
      // The check opens what the daemon would open (TLS files) and looks
      // at every path it would use, changing nothing; all problems listed.
      std::vector<ConfigProblem> problems = check_tls_files(*result.config);
      std::vector<ConfigProblem> paths = check_config_paths(*result.config);
      problems.insert(problems.end(), paths.begin(), paths.end());
      if (!problems.empty()) {
        result.problems = std::move(problems);
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
  if (!config_path.empty() || run_demo) {
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
