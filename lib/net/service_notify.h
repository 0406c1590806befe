// The service manager's notification protocol (systemd's sd_notify(3)):
// one datagram of newline-separated VAR=value lines ("READY=1",
// "STATUS=...", "WATCHDOG=1") sent to the AF_UNIX socket named by the
// NOTIFY_SOCKET environment variable, a path or, after a leading '@', an
// abstract name. systemd documents the protocol as stable and meant to be
// spoken without its library; speaking it here keeps libsystemd and what
// it loads besides (libgcrypt, libgpg-error, liblzma, libcap) out of a
// network-facing daemon that needs one datagram.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace chronomerge {

// Sends `state` in one datagram to the socket named `socket_name` (the
// value of NOTIFY_SOCKET). An empty name means no service manager is
// listening: nothing is sent and that is not an error. Returns the empty
// string on success, else what failed, naming the socket. Blocking, like
// sd_notify(): the service manager reads its socket at once.
std::string notify_service_manager(std::string_view socket_name, std::string_view state);

// The same, to the socket NOTIFY_SOCKET names in this process's
// environment.
std::string notify_service_manager(std::string_view state);

// WatchdogSec=: how often the service manager wants WATCHDOG=1, from the
// values of WATCHDOG_USEC and WATCHDOG_PID (null when unset). Nullopt when
// there is no watchdog: no or an invalid or zero WATCHDOG_USEC, or a
// WATCHDOG_PID that is not `self` (the variables were meant for a parent).
std::optional<std::chrono::microseconds> service_watchdog_interval(const char* usec,
                                                                   const char* pid, pid_t self);

// The same, from this process's environment and pid.
std::optional<std::chrono::microseconds> service_watchdog_interval();

}  // namespace chronomerge
