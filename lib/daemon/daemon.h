// The long-running form: `chronomerge --config FILE` (or --demo). Owns the
// loop, the signal handlers and the Pipeline; maps the outcome to an exit
// status.
#pragma once

#include <optional>
#include <string>

#include "config/config.h"

namespace chronomerge {

struct DaemonOptions {
  std::string config_path;  // empty: the built-in demo configuration
  std::optional<LogLevel> log_level;
  std::optional<LogFormat> log_format;  // overrides the configuration's
};

int run_daemon(const DaemonOptions& options);

}  // namespace chronomerge
