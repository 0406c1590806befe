// HttpServer: a minimal HTTP/1.1 responder on the daemon's libuv loop, for
// `GET /metrics` and `GET /healthz`.
//
// Why hand-written: Debian's prometheus-cpp exposer runs civetweb with its
// own threads, but the pipeline's state lives on the loop thread and must
// not be read from another thread. This server runs on the same loop, so the
// handler reads that state directly, between two events, without locks.
//
// Deliberately small, because scrapers and health checkers need no more:
// - GET only: any other method gets 405 (with `Allow: GET`);
// - one request per connection: every response carries `Connection: close`,
//   then the server shuts its side down and closes; request bodies and
//   pipelined requests are read and ignored;
// - the request head (request line and headers) is capped at 8 KiB: 431;
// - a malformed request line or header gets 400, an HTTP major version
//   other than 1 gets 505;
// - each connection is closed `timeout_ms` (5 s) after it was accepted if
//   its request has not arrived by then, and the same again after the
//   response was queued if the client has not read it and gone;
// - at most 64 connections at once: further ones are accepted and closed at
//   once (a warning is logged, rate-limited).
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
#include <string>
#include <string_view>
#include <unordered_set>

#include "config/config.h"
#include "log/log.h"
#include "uv/any_stream.h"
#include "uv/uv_handle.h"

namespace chronomerge {

class HttpServer {
 public:
  struct Response {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
  };
  // Called for every well-formed GET with the request path (the query
  // string removed). Unknown paths are the handler's to answer with 404.
  // Runs on the loop thread; it may call close().
  using Handler = std::function<Response(std::string_view method, std::string_view path)>;

  static constexpr size_t max_head_bytes = 8 << 10;
  static constexpr size_t max_connections = 64;
  static constexpr uint64_t default_timeout_ms = 5000;

  HttpServer(uv_loop_t* loop, HostPort listen, Handler handler,
             uint64_t timeout_ms = default_timeout_ms);
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
  // Connections closed at once because max_connections were open.
  uint64_t refused() const { return refused_; }

 private:
  struct Connection;
  struct WriteRequest;

  static void on_connection(uv_stream_t* listener, int status);
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_shutdown(uv_shutdown_t* req, int status);
  static void on_timeout(uv_timer_t* timer);
  static void on_closed(uv_handle_t* handle);

  void refuse(uv_stream_t* listener);
  void process(Connection& connection);
  void handle_request(Connection& connection, std::string_view path);
  void respond(Connection& connection, int status, std::string_view content_type,
               std::string_view body);
  static void close_connection(Connection& connection);

  uv_loop_t* loop_;
  HostPort listen_;
  Handler handler_;
  uint64_t timeout_ms_;
  UvHandle<AnyStream> listener_;
  std::string address_;
  std::unordered_set<Connection*> connections_;
  uint64_t refused_ = 0;
  log::RateLimiter refused_limiter_;
  bool closed_ = false;
};

// The standard reason phrase for `status` ("Not Found"); "Unknown" for
// codes this server never sends.
std::string_view http_reason(int status);

}  // namespace chronomerge
