// Turning config addresses into libuv listeners and connections.
#pragma once

#include <uv.h>

#include <memory>
#include <string>

#include "config/config.h"
#include "uv/any_stream.h"
#include "uv/uv_handle.h"

namespace chronomerge {

// A config address as a socket address (IPv6 when the host has a ':').
// Returns 0 or a libuv error.
int to_sockaddr(const HostPort& address, sockaddr_storage& out);

// "127.0.0.1:41234" or "[::1]:41234".
std::string format_sockaddr(const sockaddr_storage& address);

// Initializes `server` as a TCP or Unix listener bound to the address and
// listening. Returns 0 or a libuv error. A stale Unix socket file left by a
// previous run is removed first (only if nothing accepts on it).
int listen_on(uv_loop_t* loop, UvHandle<AnyStream>& server, const HostPort* tcp,
              const std::string& unix_path, uv_connection_cb on_connection, void* owner,
              int backlog = 128);

// The address a TCP listener actually bound ("127.0.0.1:41234"), for logs
// and for port 0.
std::string bound_address(const UvHandle<AnyStream>& server);

// Accepts one pending connection into a fresh handle of the server's kind.
// Returns null (after accepting and closing nothing) on failure, with the
// libuv error in `error`.
std::unique_ptr<UvHandle<AnyStream>> accept_from(uv_stream_t* server, int& error);

}  // namespace chronomerge
