// How much the log says: each level includes those before it.
#pragma once

#include <string_view>

namespace chronomerge {

enum class LogLevel { error, warn, info, debug };

std::string_view to_string(LogLevel level);

// How each log line is written: text ("chronomerge warn: ...") or one JSON
// object per line (for Loki, Elasticsearch).
enum class LogFormat { text, json };

}  // namespace chronomerge
