// ConnectFeed: tcp-connect and unix-connect feeds. Connects to an upstream
// and reconnects whenever the connection fails or ends, with exponential
// backoff (100 ms doubling to 30 s, with up to 50% random jitter so many
// daemons do not reconnect in lockstep). Logs once per state change, not
// once per attempt. Never ends by itself.
//
// With `tls`, each TCP connection is handed to a TlsBridge (client side:
// the server's certificate is verified against `ca` and its name); the
// feed reads the plaintext end once the handshake is done. A failed
// handshake counts as a failed attempt, and is counted by reason.
#pragma once

#include <random>

#include "feeds/stream_feed.h"
#include "uv/tls_acceptor.h"
#include "uv/tls_bridge.h"
#include "uv/uv_request.h"

namespace chronomerge {

class ConnectFeed final : public StreamFeed {
 public:
  static constexpr uint64_t min_backoff_ms = 100;
  static constexpr uint64_t max_backoff_ms = 30000;

  ConnectFeed(FeedHost& host, FeedId id, FeedConfig config, size_t max_line_bytes);
  bool start() override;
  void reload_tls() override;
  uint64_t attempts() const { return attempts_; }
  // Null without TLS.
  const TlsCounters* tls_counters() const { return tls_ ? &tls_counters_ : nullptr; }

 protected:
  void connection_ended(int status) override;
  void close_transport() override;

 private:
  void connect();
  void connected(std::unique_ptr<Connection> connection);
  void start_tls(std::unique_ptr<Connection> connection);
  void failed(int status);
  void schedule_retry();
  std::string target() const;

  UvHandle<uv_timer_t> retry_timer_;
  // A connection attempt in flight, carrying the handle it connects.
  UvRequest<uv_connect_t, std::unique_ptr<Connection>> connect_;
  uint64_t backoff_ms_ = min_backoff_ms;
  uint64_t attempts_ = 0;
  bool failing_logged_ = false;
  std::minstd_rand jitter_;
  std::shared_ptr<TlsContext> tls_;
  TlsCounters tls_counters_;
  // The TLS connection (freed when the next attempt starts or the feed
  // goes, never inside its own callbacks).
  std::unique_ptr<TlsBridge> bridge_;
};

}  // namespace chronomerge
