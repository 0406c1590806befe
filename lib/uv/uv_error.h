// The io layer's error vocabulary: libuv's negative codes rendered once, at
// the boundary, as "ECONNREFUSED (connection refused)".
#pragma once

#include <string>

namespace chronomerge {

std::string uv_error_text(int code);

}  // namespace chronomerge
