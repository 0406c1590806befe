// Config addresses as socket addresses, and back as text.
#pragma once

#include <uv.h>

#include <string>

#include "net/host_port.h"

namespace chronomerge {

// A config address as a socket address (IPv6 when the host has a ':').
// Returns 0 or a libuv error.
int to_sockaddr(const HostPort& address, sockaddr_storage& out);

// "127.0.0.1:41234" or "[::1]:41234".
std::string format_sockaddr(const sockaddr_storage& address);

}  // namespace chronomerge
