// TlsAcceptor: the TLS side of a Listener. Each accepted socket gets a
// TlsBridge; once its handshake is done and the peer verified, the
// plaintext end goes to the Listener's owner as if it had just been
// accepted. Handshakes have a deadline and a limit on how many run at once
// (beyond it the Listener holds, and connections wait in the backlog), so
// unauthenticated sockets never take a feed's or an output's slots.
// Failures are counted by reason and logged rate-limited. A handshake step
// costs up to a millisecond of CPU (ECDSA, certificate checks): at most
// steps_per_turn of them run in one turn of the loop, the rest wait for
// the next turns, so a connect storm cannot stall the loop for long.
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
#include <deque>
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
  uint64_t refused[3] = {};                   // by TlsFailure
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

  static constexpr size_t steps_per_turn = 8;

  // A connection just accepted (`address`: its peer, for logs).
  void accept(uv_os_sock_t socket, std::string address);
  // No more connections: handshakes in flight fail; open connections stay.
  void stop();
  // Reloaded material: new handshakes use `context`; open connections
  // whose peer it no longer accepts are closed and counted (cert).
  void set_context(std::shared_ptr<const TlsContext> context);
  const TlsCounters& counters() const { return counters_; }
  // The owner refused a connection this acceptor handed over (a bad
  // token): counted with the others.
  void count_refusal(TlsFailure failure) { ++counters_.refused[static_cast<size_t>(failure)]; }

 private:
  struct Entry {
    std::unique_ptr<TlsBridge> bridge;
    std::string address;
    uint64_t deadline = 0;
    bool counted = false;  // its handshake's end is counted
  };
  void on_timer();
  // Whether a handshake step may run now; if not, `entry` waits its turn.
  bool may_step(Entry& entry);
  // A new turn of the loop: the waiting steps run, steps_per_turn at most.
  void on_turn();
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
  // Steps taken in this turn, and the entries waiting for a later one
  // (their bridges handshaking, so not reaped while listed).
  size_t steps_ = 0;
  uint64_t steps_at_ = 0;  // loop time of the turn the steps count for
  std::deque<Entry*> waiting_;
  UvHandle<uv_idle_t> turn_;  // active while entries wait: a turn runs them
};

}  // namespace chronomerge
