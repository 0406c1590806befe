// Helpers for tests that run a Pipeline in this process on a real libuv
// loop: a scratch directory, file contents, timers, and the usual configs.
#pragma once

#include <uv.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "config/config.h"
#include "daemon/pipeline.h"

namespace chronomerge::testing {

// A fresh directory under the system's temporary directory, removed with
// everything in it on destruction.
struct TempDir {
  std::filesystem::path path;
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  // Writes `content` to `name` (replacing it) and returns its path.
  std::string file(const std::string& name, const std::string& content = {}) const;
};

std::string slurp(const std::string& path);
size_t count_lines(const std::string& text);

// Starts `pipeline` (REQUIREd) over finite inputs and runs the loop until
// it has finished; closes it then. Returns whether it finished.
bool run_to_end(uv_loop_t* loop, Pipeline& pipeline);

// Runs `body` once on the loop after `ms`.
void after(uv_loop_t* loop, uint64_t ms, std::function<void()> body);

// Runs `body` once on the loop as soon as `condition` holds (looked at
// every millisecond), or after `timeout_ms` with a failed CHECK naming
// `what`: the body runs either way, so it can close what it must. For
// what the daemon does on its own timers and threads (a retired feed is
// freed within a few of them), where a fixed delay would race a slow
// machine.
void when(uv_loop_t* loop, std::function<bool()> condition, std::function<void()> body,
          const char* what = "a condition", uint64_t timeout_ms = 10000);

FeedConfig file_feed(const std::string& name, const std::string& path);
FeedConfig simulate_feed(const std::string& name, uint64_t seed);  // 2000 records/s
OutputConfig file_output(const std::string& path);                 // named "archive"

}  // namespace chronomerge::testing
