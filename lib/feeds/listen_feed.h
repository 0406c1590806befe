// ListenFeed: tcp-listen and unix-listen feeds. One producer connection at
// a time: a second concurrent connection is accepted and closed at once, so
// a misconfigured sender cannot interleave with the real one. A producer may
// disconnect and reconnect; a line cut by the disconnect is discarded and
// counted. The feed never ends by itself.
//
// A refused connection is counted (refused()), with the bytes its producer
// had already sent that the kernel held (refused_bytes(): discarded unread;
// closing with them unread resets the connection, so the producer's next
// write fails). The log says why: another producer is connected, or the
// previous connection is still open — paused by backpressure, or closed by
// its producer but not yet read to its end. A producer that reconnects must
// wait for its previous connection to be closed by the daemon (back off and
// retry): the daemon reads the old connection to its end first. Refusals,
// accept failures (out of descriptors: counted by reason in
// accept_errors()), connects and disconnects are logged rate-limited.
#pragma once

#include "feeds/stream_feed.h"
#include "log/log.h"
#include "uv/listener.h"

namespace chronomerge {

class ListenFeed final : public StreamFeed {
 public:
  using StreamFeed::StreamFeed;
  bool start() override;
  void reload_tls() override;
  // "127.0.0.1:7001" (the port actually bound) or the socket path.
  const std::string& address() const { return address_; }
  // Producer connections refused while one was attached.
  uint64_t refused() const { return counters_.refused; }
  // Bytes refused producers had sent before they were refused (discarded).
  uint64_t refused_bytes() const { return counters_.refused_bytes; }
  const AcceptErrors& accept_errors() const { return listener_.errors(); }
  // Null unless it listens with TLS.
  const TlsCounters* tls_counters() const { return listener_.tls_counters(); }

 protected:
  void connection_ended(int status) override;
  void close_transport() override;

 private:
  void accepted(uv_os_sock_t socket, const std::string& peer);
  void refuse(uv_os_sock_t socket, const std::string& peer);
  void accept_failed(int error, uint64_t connections);
  // Arms the timer that writes the rate limiters' summaries on time.
  void schedule_summary();

  Listener listener_;
  std::string address_;
  // The attached producer's socket, while attached() (to see whether its
  // producer has hung up).
  uv_os_sock_t producer_socket_ = -1;
  log::RateLimiter refusal_log_;     // refusals and accept failures
  log::RateLimiter connection_log_;  // connects and disconnects
  UvHandle<uv_timer_t> summary_timer_;
};

}  // namespace chronomerge
