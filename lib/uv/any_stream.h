// AnyStream: storage for any libuv stream handle, so one owner type
// (UvHandle<AnyStream>) serves pipes, TCP sockets and terminals alike.
#pragma once

#include <uv.h>

namespace chronomerge {

union AnyStream {
  uv_handle_t handle;
  uv_stream_t stream;
  uv_pipe_t pipe;
  uv_tcp_t tcp;
  uv_tty_t tty;
};

}  // namespace chronomerge
