// HttpServer: a minimal HTTP/1.1 responder on the daemon's libuv loop, for
// `GET /metrics` and `GET /healthz`.
//
// Why hand-written: Debian's prometheus-cpp exposer runs civetweb with its
// own threads, but the pipeline's state lives on the loop thread and must
// not be read from another thread. This server runs on the same loop, so the
// handler reads that state directly, between two events, without locks.
//
// Deliberately small, because scrapers and health checkers need no more:
// - GET and HEAD only: HEAD gets the status and headers GET would get, with
//   the Content-Length of GET's body, and no body (RFC 9110 §9.3.2); any
//   other method gets 405 (with `Allow: GET, HEAD`);
// - one request per connection: every response carries `Connection: close`,
//   then the server shuts its side down and closes; request bodies and
//   pipelined requests are read and ignored;
// - the request head (request line and headers) is capped at 8 KiB: 431;
// - a malformed request line or header gets 400, an HTTP major version
//   other than 1 gets 505;
// - the request head must arrive within `head_ms` (2 s) of the connection:
//   a client that sent nothing by then is closed, one that sent part of a
//   head gets 408; after the response is queued the client has `linger_ms`
//   (5 s) to read it and hang up;
// - at most 64 connections at once. The health check and the scraper must
//   get through whoever else holds connections, so at the limit a new
//   connection evicts the oldest *idle* one (its request head not complete:
//   a silent or slowloris client) once that has had 50 ms to send its
//   request, else the oldest one already answered that only waits for its
//   client to hang up. Until one can go, new connections wait in the
//   kernel's backlog (1024 long), where their requests arrive; bytes that
//   came with a new connection are read the moment it is accepted, and a
//   connection about to be evicted is read first (if its request has
//   arrived, it is answered). So a flood that reconnects as fast as it is
//   evicted cannot turn the slots over faster than that, and a scraper's
//   request is answered as soon as its turn comes;
// - evictions, timeouts, refusals, accept failures and responses by status
//   are counted (counters()), and logged rate-limited.
// No keep-alive, no chunked encoding, no TLS.
// The request head is read by parse_http_request() (http_request.h).
//
// Ownership: the server owns its listener and every connection. A
// connection embeds its TCP handle and its timer and is freed by the close
// callback of the last of them; each write request owns its bytes. The
// handler may call close(), and the server may be destroyed with
// connections still closing: their callbacks no longer reach it.
//
// Loop thread only.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "log/log.h"
#include "uv/listener.h"
#include "uv/uv_handle.h"
#include "uv/uv_request.h"

namespace chronomerge {

// How long an HttpServer waits for its clients (milliseconds).
struct HttpTimeouts {
  uint64_t head_ms = 2000;    // from accept to a complete request head
  uint64_t linger_ms = 5000;  // from the response to the client hanging up
};

class HttpServer {
 public:
  struct Response {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
  };
  // Called for every well-formed GET or HEAD with the method and the
  // request path (the query string removed). It answers HEAD as it would
  // GET (the server drops the body). Unknown paths are the handler's to
  // answer with 404. Runs on the loop thread; it may call close().
  using Handler = std::function<Response(std::string_view method, std::string_view path)>;

  using Timeouts = HttpTimeouts;

  // What the server has done since it started.
  struct Counters {
    uint64_t connections = 0;           // accepted
    uint64_t evicted = 0;               // closed at the limit to make room
    uint64_t refused = 0;               // closed at once: the limit, none evictable
    uint64_t head_timeouts = 0;         // no complete request head in time
    uint64_t linger_timeouts = 0;       // answered, but the client never hung up
    std::map<int, uint64_t> responses;  // by status code
  };

  static constexpr size_t max_head_bytes = 8 << 10;
  static constexpr size_t max_connections = 64;
  // Connections the kernel may hold for accept(): more than a flood of
  // hundreds, so that a health check's connection is not dropped.
  static constexpr int backlog = 1024;
  // At the limit, an idle connection is evicted only once it has had this
  // long to send its request (new ones wait in the backlog meanwhile).
  static constexpr uint64_t min_idle_ms = 10;

  HttpServer(uv_loop_t* loop, HostPort listen, Handler handler, Timeouts timeouts = {});
  // Serves HTTPS (see Listener::use_tls). REQUIRES: before start().
  void use_tls(std::shared_ptr<const TlsContext> context);
  // Every request must carry `Authorization: Bearer T` with a T whose
  // SHA-256 is in `hashes` (else 401); empty: no token asked.
  void require_tokens(std::vector<std::string> hashes) { tokens_ = std::move(hashes); }
  void reload_tls(std::shared_ptr<const TlsContext> context) {
    listener_.set_tls_context(std::move(context));
  }
  const TlsCounters* tls_counters() const { return listener_.tls_counters(); }
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens; logs the bound address at info. False (after
  // logging an error) when the address cannot be bound.
  // REQUIRES: called at most once, before close().
  bool start();
  // The address actually bound ("127.0.0.1:41234"; the port is real when
  // 0 was asked for). Empty before a successful start().
  const std::string& address() const { return address_; }
  // Closes the listener and every connection (responses not yet written
  // are lost). Idempotent. The loop then runs out once the close callbacks
  // have run.
  void close();

  // Connections open now (not counting those already closing).
  size_t connection_count() const { return connections_.size(); }
  // Connections closed at once because max_connections were open and
  // none could be evicted.
  uint64_t refused() const { return counters_.refused; }
  const Counters& counters() const { return counters_; }
  // Failures to accept, by reason (EMFILE: out of descriptors).
  const AcceptErrors& accept_errors() const { return listener_.errors(); }

  // The server whose handler is running now, if any: render_metrics()
  // adds the counters of the server that serves the exposition.
  static const HttpServer* current() { return current_; }

 private:
  struct Connection;

  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void on_timeout(uv_timer_t* timer);

  void accepted(uv_os_sock_t socket);
  void accept_failed(int error, uint64_t connections);
  // At the limit: closes the connection that can best go. False if none
  // (or if the server was closed meanwhile).
  bool make_room();
  void evict(Connection& victim);
  // Holds or releases the listener at the limit (see the .cc).
  void update_hold();
  // Reads and processes what the connection's socket holds now.
  void read_now(Connection& connection);
  // `nread` bytes at the start of the connection's buffer, or an error.
  void received(Connection& connection, ssize_t nread);
  void process(Connection& connection);
  void handle_request(Connection& connection, std::string_view method, std::string_view path);
  void respond(Connection& connection, int status, std::string_view content_type,
               std::string_view body, bool send_body = true);
  void written(Connection& connection, ssize_t status);
  void shut_down(Connection& connection, ssize_t status);
  void close_connection(Connection& connection);
  void schedule_summary();

  uv_loop_t* loop_;
  HostPort listen_;
  Handler handler_;
  Timeouts timeouts_;
  Listener listener_;
  std::string address_;
  std::string scheme_ = "http";
  std::vector<std::string> tokens_;
  // Open connections, oldest first (eviction order), and those closed but
  // not yet freed (see close_connection()).
  std::list<std::unique_ptr<Connection>> connections_;
  std::vector<std::unique_ptr<Connection>> closed_connections_;
  Counters counters_;
  // Evictions, refusals, timeouts and accept failures: a flood of
  // connections must not flood the log.
  log::RateLimiter event_log_;
  UvHandle<uv_timer_t> hold_timer_;
  UvHandle<uv_timer_t> summary_timer_;
  bool closed_ = false;

  static inline const HttpServer* current_ = nullptr;
};

}  // namespace chronomerge
