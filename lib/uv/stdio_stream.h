// Standard input or output as a libuv stream: a terminal or a pipe (a
// socket passed as stdin/stdout is opened as a pipe too). Regular files are
// not streams: callers read or write those on the thread pool instead.
#pragma once

#include <uv.h>

#include "uv/any_stream.h"
#include "uv/uv_handle.h"

namespace chronomerge {

// Initializes `stream` on descriptor `fd` (0 or 1). Returns 0 or a libuv
// error; on success the handle is owned by `stream` with `owner` as data.
int open_stdio_stream(uv_loop_t* loop, UvHandle<AnyStream>& stream, uv_file fd, void* owner);

}  // namespace chronomerge
