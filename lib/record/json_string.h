// Writing a JSON string: what the heartbeat records and the JSON log lines
// need, without a JSON library in the core.
#pragma once

#include <string>
#include <string_view>

namespace chronomerge {

// Appends `text` to `out` as a JSON string: quoted, with '"', '\\' and
// control characters escaped. Other bytes are copied as they are.
void append_json_string(std::string& out, std::string_view text);

}  // namespace chronomerge
