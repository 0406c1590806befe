// SocketAccess: who may use a listening Unix socket, as the configuration
// writes it.
//
// Plain data, no sockets: the configuration parses and checks it, the io
// layer (uv/listener.h) applies it to the socket's file once bound.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace chronomerge {

// The socket file's mode and group, set once it is bound (the systemd
// unit's UMask=0027 would otherwise leave a socket meant for others
// srwxr-x---).
struct SocketAccess {
  std::optional<uint32_t> mode;  // e.g. 0660
  std::string group;             // a group name; empty: the daemon's
  friend bool operator==(const SocketAccess&, const SocketAccess&) = default;
};

// The gid of group `name` (getgrnam_r: safe on any thread); nullopt if
// there is no such group.
std::optional<gid_t> group_id(const std::string& name);

}  // namespace chronomerge
