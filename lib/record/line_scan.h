// LineScan: what a validating pass over one line found, before the key is
// read — shared by the scalar scanner (record_parser.cc) and the vector
// one (vector_scanner.h), so that both feed the same key conversion.
#pragma once

#include <cstdint>
#include <string_view>

namespace chronomerge {

enum class ValueKind : uint8_t { string, integer, real, true_literal, other };

// The key's value as written in the line.
struct KeyValue {
  const char* begin = nullptr;  // nullptr: not found
  const char* end = nullptr;
  ValueKind kind = ValueKind::other;
  bool escaped = false;  // a string with at least one backslash
};

// A line that is valid JSON (nesting within RecordParser::max_depth).
struct LineScan {
  bool top_is_object = false;
  bool heartbeat = false;  // heartbeat_field: true at top level (the last one)
  KeyValue key;
};

// An RFC 6901 array index: "0" or a decimal without a leading zero; -1 for
// any other token, which then matches no element.
inline int64_t array_index(std::string_view token) {
  if (token.empty() || token.size() > 18 || (token[0] == '0' && token.size() > 1)) return -1;
  int64_t value = 0;
  for (const char c : token) {
    if (c < '0' || c > '9') return -1;
    value = value * 10 + (c - '0');
  }
  return value;
}

}  // namespace chronomerge
