// The one-shot command: `chronomerge [options] FILE... [-]` merges files
// (and standard input) to standard output, like `sort -m` for NDJSON.
#pragma once

#include <string>
#include <vector>

#include "config/config.h"

namespace chronomerge {

struct OneShotOptions {
  std::string key = "time";
  KeyType key_type = KeyType::integer;
  MergeMode mode = MergeMode::interleave;
  size_t max_line_bytes = default_max_line_bytes;
  std::vector<std::string> files;  // "-" is standard input
};

// Exit statuses, as documented in the README.
enum ExitStatus : int { exit_ok = 0, exit_skipped = 1, exit_error = 2 };

// The Config a one-shot run is: one file feed per argument, one stdout
// output, late records emitted (a file going backwards is reported).
Config one_shot_config(const OneShotOptions& options);

// Runs the merge on a fresh loop; prints the per-feed summary of skipped
// lines on stderr. Returns the exit status.
int run_one_shot(const OneShotOptions& options);

}  // namespace chronomerge
