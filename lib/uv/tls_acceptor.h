// TlsAcceptor: the TLS side of a Listener. Each accepted socket gets a
// TlsBridge; once its handshake is done and the peer verified, the
// plaintext end goes to the Listener's owner as if it had just been
// accepted. Handshakes have a deadline and a limit on how many run at once
// (beyond it the Listener holds, and connections wait in the backlog), so
// unauthenticated sockets never take a feed's or an output's slots.
// Failures are counted by reason and logged rate-limited.
//
// The acceptor owns its bridges for their whole life — handshake and
// connection — and frees them once done, from its own timer. stop()
// (the Listener closing) fails the handshakes in flight but leaves the
// established connections to end by themselves.
//
// Loop thread only.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>

#include "log/log.h"
#include "uv/tls_bridge.h"
#include "uv/uv_handle.h"

namespace chronomerge {

struct TlsCounters {
  uint64_t connections = 0;                   // handshakes completed
  uint64_t refused[2] = {};                   // by TlsFailure
  uint64_t in_flight = 0;                     // handshakes now
  std::optional<int64_t> certificate_expiry;  // Unix seconds
};

class TlsAcceptor {
 public:
  using Deliver =
      std::function<void(uv_os_sock_t plaintext, const std::string& address, const TlsPeer& peer)>;
  // `hold(true)`: stop accepting (too many handshakes); false: go on.
  using Hold = std::function<void(bool)>;

  // `name` names the listener in logs ("feed buses").
  TlsAcceptor(uv_loop_t* loop, std::shared_ptr<const TlsContext> context, std::string name,
              Deliver deliver, Hold hold);
  ~TlsAcceptor();
  TlsAcceptor(const TlsAcceptor&) = delete;
  TlsAcceptor& operator=(const TlsAcceptor&) = delete;

  // A connection just accepted (`address`: its peer, for logs).
  void accept(uv_os_sock_t socket, std::string address);
  // No more connections: handshakes in flight fail; open connections stay.
  void stop();
  // Reloaded material: new handshakes use `context`; open connections
  // whose peer it no longer accepts are closed and counted (cert).
  void set_context(std::shared_ptr<const TlsContext> context);
  const TlsCounters& counters() const { return counters_; }

 private:
  struct Entry {
    std::unique_ptr<TlsBridge> bridge;
    std::string address;
    uint64_t deadline = 0;
    bool counted = false;  // its handshake's end is counted
  };
  void on_timer();
  // Frees the bridges that are done. REQUIRES: not inside a bridge's
  // callback.
  void reap();
  void handshake_over(Entry& entry);

  uv_loop_t* loop_;
  std::shared_ptr<const TlsContext> context_;
  std::string name_;
  Deliver deliver_;
  Hold hold_;
  std::list<Entry> entries_;
  TlsCounters counters_;
  bool holding_ = false;
  bool stopped_ = false;
  log::RateLimiter log_{5};
  UvHandle<uv_timer_t> timer_;
};

}  // namespace chronomerge
