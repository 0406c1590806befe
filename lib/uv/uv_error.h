// The io layer's error vocabulary: libuv's negative codes rendered once, at
// the boundary, as "ECONNREFUSED (connection refused)".
#pragma once

#include <string>

namespace chronomerge {

std::string uv_error_text(int code);
// A libuv error's name ("EMFILE"), for labels; never allocates per call
// for unknown codes as uv_err_name() does.
std::string uv_error_name(int error);

}  // namespace chronomerge
