#include "record/json_depth.h"

namespace chronomerge {

std::optional<size_t> find_excess_nesting(std::string_view text, size_t max_depth) {
  size_t depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character, a quote or a backslash included
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return i;
    } else if ((c == ']' || c == '}') && depth > 0) {
      // Unbalanced closers are a syntax error for the parser to report.
      --depth;
    }
  }
  return std::nullopt;
}

}  // namespace chronomerge
