#include "metrics/http_server.h"

#include "net/token.h"

#include <fmt/core.h>

#include <sys/socket.h>
#include <unistd.h>

#include <exception>
#include <memory>
#include <optional>
#include <vector>

#include "metrics/http_request.h"
#include "uv/uv_error.h"

namespace chronomerge {

// One accepted client. Its handles and requests own their memory (freed by
// their own close and completion callbacks), so the object can go once it
// is closed: close_connection() hands it to closed_connections_, freed
// outside its callbacks.
struct HttpServer::Connection {
  explicit Connection(HttpServer& s)
      : server(s),
        write([this](std::string&, ssize_t status) { server.written(*this, status); }),
        shutdown([this](NoPayload&, ssize_t status) { server.shut_down(*this, status); }) {}
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  HttpServer& server;
  std::list<std::unique_ptr<Connection>>::iterator position;  // in server.connections_
  uint64_t accepted_at = 0;                                   // loop time
  UvHandle<AnyStream> stream;  // TCP, or a TLS listener's plaintext end
  UvHandle<uv_timer_t> timer;
  UvRequest<uv_write_t, std::string> write;  // the response
  UvRequest<uv_shutdown_t> shutdown;
  bool closing = false;
  bool responded = false;  // a response was queued; what arrives now is ignored
  bool shut_down = false;  // the response was written and our side shut down
  bool peer_eof = false;
  std::string head;  // the request head received so far
  char buffer[4096];
};

namespace {

const char* const plain_text = "text/plain; charset=utf-8";

// A client that sent only line ends (or nothing) has not begun a request.
bool blank(const std::string& head) {
  return head.find_first_not_of("\r\n") == std::string::npos;
}

}  // namespace

HttpServer::HttpServer(uv_loop_t* loop, HostPort listen, Handler handler, Timeouts timeouts)
    : loop_(loop), listen_(std::move(listen)), handler_(std::move(handler)), timeouts_(timeouts) {}

HttpServer::~HttpServer() {
  close();
  closed_connections_.clear();
}

void HttpServer::use_tls(std::shared_ptr<const TlsContext> context) {
  listener_.use_tls(std::move(context), "metrics");
  scheme_ = "https";
}

bool HttpServer::start() {
  // A long backlog: while a flood of connections fills it, a health check's
  // SYN is dropped and retried only after a second (the kernel caps it at
  // net.core.somaxconn).
  int rc = listener_.listen(
      loop_, &listen_, std::string(),
      [this](uv_os_sock_t socket, const AcceptedPeer&) { accepted(socket); },
      [this](int error, uint64_t connections) { accept_failed(error, connections); }, backlog);
  if (rc < 0) {
    log::error("metrics: cannot listen on {}: {}", to_string(listen_), uv_error_text(rc));
    listener_.close();
    return false;
  }
  address_ = listener_.bound_address();
  if (uv_timer_init(loop_, hold_timer_.get()) == 0) hold_timer_.initialized(this);
  if (uv_timer_init(loop_, summary_timer_.get()) == 0) {
    summary_timer_.initialized(this);
    // A summary is not worth keeping the loop alive for.
    uv_unref(summary_timer_.base());
  }
  log::info("metrics: listening on {}://{}", scheme_, address_);
  return true;
}

void HttpServer::close() {
  if (closed_) return;
  closed_ = true;
  listener_.close();
  hold_timer_.close();
  summary_timer_.close();
  while (!connections_.empty()) close_connection(*connections_.front());
}

void HttpServer::accepted(uv_os_sock_t socket) {
  if (connections_.size() >= max_connections && !make_room()) {
    if (closed_) {  // by the handler of a request make_room() answered
      ::close(socket);
      return;
    }
    // Every connection is busy answering: a flood of clients costs one
    // descriptor for a moment each and nothing more.
    ++counters_.refused;
    ::close(socket);
    event_log_.log(uv_now(loop_), LogLevel::warn, {"metrics", ""}, "refused connections",
                   "metrics: {} connections open, all answering: refused another", max_connections);
    schedule_summary();
    return;
  }
  // Connections closed since the last accept are freed here, never inside
  // a callback of their own.
  closed_connections_.clear();
  auto owned = std::make_unique<Connection>(*this);
  Connection* c = owned.get();
  const bool tcp = is_tcp_socket(socket);
  AnyStream& stream = *c->stream.get();
  if ((tcp ? uv_tcp_init(loop_, &stream.tcp) : uv_pipe_init(loop_, &stream.pipe, 0)) < 0) {
    // Cannot happen in practice (no socket is created for AF_UNSPEC).
    ::close(socket);
    return;
  }
  c->stream.initialized(c);
  uv_timer_init(loop_, c->timer.get());  // cannot fail
  c->timer.initialized(c);
  c->position = connections_.insert(connections_.end(), std::move(owned));
  c->accepted_at = uv_now(loop_);
  int rc = tcp ? uv_tcp_open(&stream.tcp, socket) : uv_pipe_open(&stream.pipe, socket);
  if (rc < 0) {
    ::close(socket);
    listener_.count_error(rc);
    log::warn("metrics: cannot accept a connection: {}", uv_error_text(rc));
    close_connection(*c);
    return;
  }
  ++counters_.connections;
  uv_timer_start(c->timer.get(), on_timeout, timeouts_.head_ms, 0);
  rc = uv_read_start(
      c->stream.stream(),
      [](uv_handle_t* handle, size_t, uv_buf_t* buf) {
        auto* connection = static_cast<Connection*>(handle->data);
        *buf = uv_buf_init(connection->buffer, sizeof(connection->buffer));
      },
      on_read);
  if (rc < 0) {
    close_connection(*c);
    return;
  }
  // A scraper sends its request with the connection: read it now rather
  // than at the next loop turn, so that it is answered (no longer idle)
  // before a burst of later connections could evict it.
  read_now(*c);
  update_hold();
}

// At the limit, a new connection is accepted only when one can make room
// for it: an idle one that has had min_idle_ms to send its request, or one
// already answered. Until then new connections wait in the kernel's
// backlog, where their requests arrive and are read the moment they are
// accepted. Without this, a flood that reconnects at once would turn every
// slot over in a few milliseconds, evicting health checks before their
// requests could arrive.
void HttpServer::update_hold() {
  if (closed_) return;
  if (connections_.size() < max_connections) {
    listener_.hold(false);
    return;
  }
  const uint64_t now = uv_now(loop_);
  std::optional<uint64_t> wait;  // until a connection can go; none: until one closes
  for (const auto& c : connections_) {
    if (c->shut_down) {
      wait = 0;
      break;
    }
    if (!c->responded && !wait) {
      uint64_t ripe = c->accepted_at + min_idle_ms;
      wait = ripe > now ? ripe - now : 0;
    }
  }
  if (wait && *wait == 0) {
    listener_.hold(false);
    return;
  }
  listener_.hold(true);
  if (wait && hold_timer_.open()) {
    uv_timer_start(
        hold_timer_.get(),
        [](uv_timer_t* timer) {
          if (auto* self = static_cast<HttpServer*>(timer->data)) self->update_hold();
        },
        *wait, 0);
  }
}

// Reading outside libuv is harmless: its poll is level-triggered, and it
// reads only when told the socket is readable.
void HttpServer::read_now(Connection& c) {
  uv_os_fd_t fd;
  if (uv_fileno(c.stream.base(), &fd) != 0) return;
  while (!c.closing && !c.responded && !c.peer_eof) {
    ssize_t n = ::recv(fd, c.buffer, sizeof(c.buffer), MSG_DONTWAIT);
    if (n > 0) {
      received(c, n);
    } else if (n == 0) {
      received(c, UV_EOF);
    } else {
      return;  // nothing more yet (EAGAIN), or an error the next read reports
    }
  }
}

void HttpServer::accept_failed(int error, uint64_t connections) {
  event_log_.log(uv_now(loop_), LogLevel::warn, {"metrics", ""}, "accept failures",
                 "metrics: cannot accept connections: {}{}", uv_error_text(error),
                 accept_loss_text(connections));
  schedule_summary();
}

bool HttpServer::make_room() {
  // The oldest that has not sent a whole request head: a client that holds
  // a connection without using it goes before anyone being served. What a
  // candidate has sent is read first: a request that has arrived but was
  // not read yet is answered, not evicted.
  for (auto it = connections_.begin(); it != connections_.end();) {
    Connection* c = (it++)->get();  // only `c` can leave the list below
    if (c->responded) continue;
    read_now(*c);  // may answer or close it; the handler may close the server
    if (closed_ || c->closing) return !closed_;
    if (c->responded) continue;
    evict(*c);
    return true;
  }
  // Else the oldest that was answered and only waits for its client to
  // hang up: what it had to say is written.
  for (const auto& c : connections_) {
    if (c->shut_down) {
      evict(*c);
      return true;
    }
  }
  return false;
}

void HttpServer::evict(Connection& victim) {
  ++counters_.evicted;
  const uint64_t now = uv_now(loop_);
  event_log_.log(now, LogLevel::warn, {"metrics", ""}, "evicted connections",
                 "metrics: {} connections open: closed the oldest {} one ({} ms old{})",
                 max_connections, victim.responded ? "answered" : "idle", now - victim.accepted_at,
                 victim.responded ? std::string()
                                  : fmt::format(", {} bytes of request head", victim.head.size()));
  schedule_summary();
  close_connection(victim);
}

void HttpServer::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t*) {
  auto* c = static_cast<Connection*>(stream->data);
  if (c == nullptr || c->closing) return;
  c->server.received(*c, nread);
}

void HttpServer::received(Connection& c, ssize_t nread) {
  if (c.closing || nread == 0) return;
  if (nread < 0) {
    if (nread != UV_EOF) {
      close_connection(c);
      return;
    }
    c.peer_eof = true;
    uv_read_stop(c.stream.stream());
    if (c.responded) {
      // The client has read the response and gone (or gave up on it).
      if (c.shut_down) close_connection(c);
    } else if (blank(c.head)) {
      close_connection(c);  // connected and said nothing
    } else {
      // A half-closed client (`printf ... | nc`) can still read: tell it.
      respond(c, 400, plain_text, "incomplete request\n");
    }
    return;
  }
  // Bodies and pipelined requests are not served: read and dropped, so that
  // closing does not reset the connection under an unread response.
  if (c.responded) return;
  c.head.append(c.buffer, static_cast<size_t>(nread));
  process(c);
}

void HttpServer::process(Connection& c) {
  HttpRequest request = parse_http_request(c.head, max_head_bytes, true);
  switch (request.outcome) {
    case HttpRequest::Outcome::incomplete:
      // Empty lines before the request line are dropped as they come, so
      // they never count against the head's limit nor fill the buffer.
      c.head.erase(0, request.blank_prefix);
      return;
    case HttpRequest::Outcome::refused:
      respond(c, request.status, plain_text, request.message);
      return;
    case HttpRequest::Outcome::get:
      if (!tokens_.empty() && !token_allowed(bearer_token(request.authorization), tokens_)) {
        listener_.count_tls_refusal(TlsFailure::token);
        event_log_.log(uv_now(loop_), LogLevel::warn, {"metrics", ""}, "refused requests",
                       "metrics: refused a request without a valid bearer token");
        respond(c, 401, plain_text, "a valid Authorization: Bearer token is needed\n");
        return;
      }
      handle_request(c, request.method, request.path);
      return;
  }
}

void HttpServer::handle_request(Connection& c, std::string_view method, std::string_view path) {
  Response response;
  current_ = this;
  try {
    response = handler_(method, path);
  } catch (const std::exception& e) {
    log::error("metrics: {} {} failed: {}", method, log::excerpt(path), e.what());
    response = Response{500, plain_text, "internal error\n"};
  }
  current_ = nullptr;
  // The handler may have closed the server, and with it this connection.
  if (c.closing) return;
  log::debug("metrics: {} {} -> {}", method, log::excerpt(path), response.status);
  respond(c, response.status, response.content_type, response.body, method != "HEAD");
}

void HttpServer::respond(Connection& c, int status, std::string_view content_type,
                         std::string_view body, bool send_body) {
  c.responded = true;
  ++counters_.responses[status];
  // HEAD: the headers GET would get, Content-Length included (RFC 9110
  // §9.3.2 and §8.6), and no body.
  std::string bytes = fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}{}Connection: "
      "close\r\n\r\n",
      status, http_reason(status), content_type, body.size(),
      status == 405 ? "Allow: GET, HEAD\r\n" : "", http_status_headers(status));
  if (send_body) bytes.append(body);
  int rc = c.write.start(std::move(bytes), [&](uv_write_t* req, uv_write_cb callback) {
    std::string& response = c.write.payload();
    uv_buf_t buf = uv_buf_init(response.data(), static_cast<unsigned>(response.size()));
    return uv_write(req, c.stream.stream(), &buf, 1, callback);
  });
  if (rc < 0) {
    close_connection(c);
    return;
  }
  // A fresh period for the client to read the response and hang up.
  uv_timer_start(c.timer.get(), on_timeout, timeouts_.linger_ms, 0);
}

void HttpServer::written(Connection& c, ssize_t status) {
  if (c.closing) return;
  if (status < 0) {
    close_connection(c);
    return;
  }
  int rc = c.shutdown.start(NoPayload{}, [&](uv_shutdown_t* req, uv_shutdown_cb callback) {
    return uv_shutdown(req, c.stream.stream(), callback);
  });
  if (rc < 0) close_connection(c);
}

// Our side is done. Closing now could reset the connection while the
// client still has request bytes in flight, and a reset can destroy the
// response before it is read; so wait for the client's EOF (or the timer).
void HttpServer::shut_down(Connection& c, ssize_t status) {
  if (c.closing) return;
  c.shut_down = true;
  if (status < 0 || c.peer_eof) {
    close_connection(c);
  } else {
    update_hold();  // it may now make room
  }
}

void HttpServer::on_timeout(uv_timer_t* timer) {
  auto* connection = static_cast<Connection*>(timer->data);
  if (connection == nullptr || connection->closing) return;
  Connection& c = *connection;
  HttpServer& server = c.server;
  const uint64_t now = uv_now(server.loop_);
  if (c.responded) {
    ++server.counters_.linger_timeouts;
    log::debug(
        "metrics: closing a connection {} ms after its response without the client "
        "hanging up",
        server.timeouts_.linger_ms);
    server.close_connection(c);
    return;
  }
  ++server.counters_.head_timeouts;
  server.event_log_.log(now, LogLevel::info, {"metrics", ""}, "request head timeouts",
                        "metrics: no complete request head {} ms after the connection ({} "
                        "bytes received): closing it",
                        server.timeouts_.head_ms, c.head.size());
  server.schedule_summary();
  if (blank(c.head)) {
    server.close_connection(c);
  } else {
    server.respond(c, 408, plain_text, "request head not received in time\n");
  }
}

// The connection's handles close (their memory goes with their close
// callbacks), a response or shutdown in flight completes into nothing, and
// the object itself is freed at the next accept or with the server: never
// inside one of its own callbacks.
void HttpServer::close_connection(Connection& c) {
  if (c.closing) return;
  c.closing = true;
  c.stream.close();
  c.timer.close();
  c.write.detach();
  c.shutdown.detach();
  closed_connections_.push_back(std::move(*c.position));
  connections_.erase(c.position);
  update_hold();  // a free slot
}

void HttpServer::schedule_summary() {
  std::optional<uint64_t> due = event_log_.summary_due();
  if (!due || !summary_timer_.open()) return;
  const uint64_t now = uv_now(loop_);
  uv_timer_start(
      summary_timer_.get(),
      [](uv_timer_t* timer) {
        auto* self = static_cast<HttpServer*>(timer->data);
        if (self == nullptr) return;
        self->event_log_.flush(uv_now(self->loop_));
        self->schedule_summary();
      },
      *due > now ? *due - now : 0, 0);
}

}  // namespace chronomerge
