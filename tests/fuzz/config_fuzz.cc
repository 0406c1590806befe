// The configuration loader on arbitrary text (run with -max_len=1048576 so
// that deeply nested documents are reached): it must never crash, throw or
// hang, and every problem it reports must name a place.
//
// A configuration arrives by SIGHUP from a file an operator (or a config
// management tool) wrote; a loader that crashes on it takes the running
// daemon down instead of rejecting the reload.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "config/config.h"

namespace {

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "config_fuzz: %s: %s\n", what, detail.c_str());
  std::abort();
}

bool is_line_column(std::string_view where) {
  const size_t colon = where.find(':');
  if (colon == 0 || colon == std::string_view::npos || colon + 1 == where.size()) return false;
  for (size_t i = 0; i < where.size(); ++i) {
    if (i != colon && (where[i] < '0' || where[i] > '9')) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  const chronomerge::ConfigResult result = chronomerge::parse_config(text);
  if (result.config.has_value() == !result.problems.empty()) {
    fail("a config must come with no problems, and problems without a config",
         std::to_string(result.problems.size()));
  }
  for (const chronomerge::ConfigProblem& problem : result.problems) {
    if (problem.message.empty()) fail("a problem without a message", problem.where);
    const bool pointer = problem.where.empty() || problem.where.front() == '/';
    if (!pointer && !is_line_column(problem.where)) {
      fail("a problem names no place", problem.where + ": " + problem.message);
    }
  }
  const std::string report = chronomerge::format_problems(result.problems);
  size_t lines = 0;
  for (char c : report) lines += c == '\n';
  if (lines < result.problems.size()) fail("format_problems lost a problem", report);
  return 0;
}
