// Listener: a listening TCP or Unix socket that accepts its connections
// itself (see the class comment), and what goes with accepting.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "net/host_port.h"
#include "net/socket_access.h"
#include "uv/any_stream.h"
#include "uv/tls_acceptor.h"
#include "uv/uv_error.h"
#include "uv/uv_handle.h"

namespace chronomerge {

// Failures to accept connections, by libuv error name ("EMFILE").
using AcceptErrors = std::map<std::string, uint64_t, std::less<>>;

// Who connected.
struct AcceptedPeer {
  std::string address;         // "127.0.0.1:5000"; empty for Unix sockets
  std::optional<TlsPeer> tls;  // on a TLS listener: the handshake's outcome
};

// A Listener accepts its connections itself, so that its owner sees
// every failure to accept.
//
// Why not uv_listen(): when the process runs out of descriptors, libuv
// accepts the waiting connections and closes them at once (its "EMFILE
// trick") without telling anyone, so they were neither logged nor counted.
// A Listener sheds load the same way but reports it: on EMFILE or ENFILE it
// releases one reserved descriptor (one per process), accepts and closes
// every connection waiting, reserves the descriptor again, and counts and
// reports each connection closed. Without a reserve it stops accepting for
// `retry_ms` instead (the connections wait in the kernel's backlog). Other
// failures are counted and reported too; after ENOBUFS or ENOMEM it pauses
// for `retry_ms` as well, so a persisting error cannot spin the loop.
// At most `accepts_per_turn` connections are accepted per loop turn, and an
// owner at its limit may hold() the Listener: connections then wait in the
// backlog until it lets go.
//
// Ownership: the Listener owns the socket and its uv_poll handle (and a
// timer); close() stops accepting at once. Not copyable or movable: the
// handles point back at it. Loop thread only.
class Listener {
 public:
  // A new connection: a connected socket, non-blocking and close-on-exec,
  // which the callee now owns (open it with open_accepted(), or close it).
  // On a TLS listener it is the plaintext end of a TlsBridge (a Unix
  // stream socket), handed over once the handshake is done.
  using AcceptCallback = std::function<void(uv_os_sock_t socket, const AcceptedPeer& peer)>;
  // Accepting failed with `error` (a libuv error such as UV_EMFILE);
  // `connections` is how many were lost to it (closed at once), already
  // counted in errors(). 0 when none was: without a reserve to release, or
  // after ENOBUFS or ENOMEM, the connections wait in the backlog while the
  // Listener pauses, and are accepted (or shed) later — counted once, then.
  using ErrorCallback = std::function<void(int error, uint64_t connections)>;

  static constexpr uint64_t retry_ms = 100;
  // Connections accepted per loop turn at most, so that a flood of them
  // cannot delay reading the ones already open.
  static constexpr int accepts_per_turn = 64;

  Listener() = default;
  ~Listener() { close(); }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Binds `tcp` (or, if null, the Unix socket `unix_path`, removing a stale
  // socket file first, unless something still accepts on it) and starts accepting. Returns 0
  // or a libuv error (the Listener is then closed).
  // REQUIRES: called at most once.
  int listen(uv_loop_t* loop, const HostPort* tcp, const std::string& unix_path,
             AcceptCallback on_accept, ErrorCallback on_error, int backlog = 128);
  // A Unix socket's file gets this mode and group once bound (before it
  // accepts anyone); failing that, listen() fails. REQUIRES: before
  // listen().
  void set_socket_access(const SocketAccess& access) { access_ = access; }
  // Makes this a TLS listener: every connection is handed over only after
  // its handshake (see TlsAcceptor). `name` names it in logs. REQUIRES:
  // before listen().
  void use_tls(std::shared_ptr<const TlsContext> context, std::string name);
  // New TLS material (a reload): see TlsAcceptor::set_context().
  void set_tls_context(std::shared_ptr<const TlsContext> context);
  // From configuration: use_tls() with the context `config` makes, if it
  // is set. False (after logging) if its files do not load.
  bool configure_tls(const std::optional<TlsConfig>& config, const std::string& name);
  // A reload: the files of `config` are read again; if they do not load,
  // the old material stays (logged).
  void reload_tls(const std::optional<TlsConfig>& config);
  // The owner refused a TLS connection after its handshake (a bad token).
  void count_tls_refusal(TlsFailure failure) {
    if (tls_) tls_->count_refusal(failure);
  }
  // The TLS side's counts; null on a plaintext listener.
  const TlsCounters* tls_counters() const { return tls_ ? &tls_->counters() : nullptr; }

  // Stops accepting and closes the socket (a Unix socket's file is
  // removed); TLS handshakes in flight fail, established TLS connections
  // live on until they end. Idempotent; no callback runs afterwards.
  void close();

  // Holding: no connection is accepted (they wait in the kernel's backlog)
  // until released. For an owner at its limit of connections.
  void hold(bool on);
  bool held() const { return held_; }

  bool is_tcp() const { return tcp_; }
  // "127.0.0.1:41234" (the port actually bound); empty for Unix sockets.
  std::string bound_address() const;
  const AcceptErrors& errors() const { return errors_; }
  // Counts a connection the owner could not take after all (opening its
  // stream failed), with the others in errors().
  void count_error(int error) { ++errors_[uv_error_name(error)]; }

 private:
  static void on_readable(uv_poll_t* handle, int status, int events);
  void accept_ready();
  void fail(int error, uint64_t connections);
  // Out of descriptors: closes every waiting connection, with the reserved
  // descriptor released for the time. How many; 0 without a reserve.
  uint64_t shed();
  void pause();
  // Polls for connections unless held, paused or closed.
  void watch();

  uv_loop_t* loop_ = nullptr;
  int fd_ = -1;
  bool tcp_ = true;
  std::string unix_path_;  // bound by us: removed on close
  SocketAccess access_;
  int apply_access();
  UvHandle<uv_poll_t> poll_;
  UvHandle<uv_timer_t> retry_;
  AcceptCallback on_accept_;
  ErrorCallback on_error_;
  AcceptErrors errors_;
  bool held_ = false;
  bool tls_held_ = false;  // too many TLS handshakes in flight
  bool closed_ = false;
  std::shared_ptr<const TlsContext> tls_context_;
  std::string tls_name_;
  std::unique_ptr<TlsAcceptor> tls_;  // last: its bridges go first
};

// Opens a socket from Listener as a stream of the matching kind (TCP with
// TCP_NODELAY, or Unix). Null on failure, with the libuv error in `error`;
// the socket is closed either way it fails.
// What an accept failure cost, for its log line: " (3 connections closed
// at once)", " (the connections wait)" or nothing for one lost connection.
std::string accept_loss_text(uint64_t connections);

// Whether `socket` is a TCP socket (else a Unix one: a Unix listener's, or
// a TLS listener's plaintext end).
bool is_tcp_socket(uv_os_sock_t socket);

// `socket` is TCP or a Unix stream socket (a TLS listener's plaintext
// end); which one is asked of the socket.
std::unique_ptr<UvHandle<AnyStream>> open_accepted(uv_loop_t* loop, uv_os_sock_t socket,
                                                   int& error);

// The peer of an accepted TCP socket ("127.0.0.1:5000"); empty if unknown
// or not TCP.
std::string peer_address(uv_os_sock_t socket);

}  // namespace chronomerge
