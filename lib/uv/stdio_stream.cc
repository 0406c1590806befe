#include "uv/stdio_stream.h"

namespace chronomerge {

int open_stdio_stream(uv_loop_t* loop, UvHandle<AnyStream>& stream, uv_file fd, void* owner) {
  if (uv_guess_handle(fd) == UV_TTY) {
    int rc = uv_tty_init(loop, &stream.get()->tty, fd, 0);
    if (rc == 0) stream.initialized(owner);
    return rc;
  }
  int rc = uv_pipe_init(loop, &stream.get()->pipe, 0);
  if (rc < 0) return rc;
  stream.initialized(owner);
  return uv_pipe_open(&stream.get()->pipe, fd);
}

}  // namespace chronomerge
