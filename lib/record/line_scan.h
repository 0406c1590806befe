// LineScan: what a validating pass over one line found, before the key is
// read — shared by the scalar scanner (record_parser.cc) and the vector
// one (vector_scanner.h), so that both feed the same key conversion.
#pragma once

#include <cstdint>

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

}  // namespace chronomerge
