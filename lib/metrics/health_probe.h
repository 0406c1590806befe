// The daemon's own health check from the outside (`--healthcheck URL`), so
// that a container needs no curl: one HTTP/1.0 GET, answered 200 or not.
//
// Blocking, bounded by `timeout_ms` in all; no event loop.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace chronomerge {

// True if `url` ("http://HOST:PORT/PATH", HOST a name or an IPv4 or
// bracketed IPv6 address, the path defaulting to /healthz) answers 200;
// otherwise false with `error` saying why (unreachable, timed out, the
// status line).
bool probe_health(std::string_view url, uint64_t timeout_ms, std::string& error);

}  // namespace chronomerge
