#include "metrics/http_server.h"

#include <fmt/core.h>

#include <exception>
#include <memory>
#include <vector>

#include "metrics/http_request.h"
#include "uv/socket_address.h"
#include "uv/uv_error.h"

namespace chronomerge {

// One accepted client. Its handles are embedded, so the object must stay
// where it is until both have closed: it is freed by on_closed() when the
// last one reports, never directly.
struct HttpServer::Connection {
  explicit Connection(HttpServer* s) : server(s) {}
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  HttpServer* server;  // null once closing: the server may be gone by then
  uv_tcp_t tcp{};
  uv_timer_t timer{};
  uv_shutdown_t shutdown{};
  int open_handles = 0;  // initialized and not yet through their close callback
  bool closing = false;
  bool responded = false;  // a response was queued; what arrives now is ignored
  bool shut_down = false;  // the response was written and our side shut down
  bool peer_eof = false;
  std::string head;  // the request head received so far
  char buffer[4096];
};

// Owns the bytes of one response until libuv is done with them. Its
// callback may run with UV_ECANCELED while the connection is closing: the
// connection is still allocated then (libuv cancels requests before it runs
// the stream's close callback), but it must not be used for anything else.
struct HttpServer::WriteRequest {
  uv_write_t req{};
  Connection* connection = nullptr;
  std::string bytes;
};

namespace {

uv_handle_t* as_handle(void* handle) {
  return static_cast<uv_handle_t*>(handle);
}
uv_stream_t* as_stream(uv_tcp_t* tcp) {
  return reinterpret_cast<uv_stream_t*>(tcp);
}

const char* const plain_text = "text/plain; charset=utf-8";

}  // namespace

std::string_view http_reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

HttpServer::HttpServer(uv_loop_t* loop, HostPort listen, Handler handler, uint64_t timeout_ms)
    : loop_(loop),
      listen_(std::move(listen)),
      handler_(std::move(handler)),
      timeout_ms_(timeout_ms) {}

HttpServer::~HttpServer() {
  close();
}

bool HttpServer::start() {
  int rc = listen_on(loop_, listener_, &listen_, std::string(), on_connection, this);
  if (rc < 0) {
    log::error("metrics: cannot listen on {}: {}", to_string(listen_), uv_error_text(rc));
    listener_.close();
    return false;
  }
  address_ = bound_address(listener_);
  log::info("metrics: listening on http://{}", address_);
  return true;
}

void HttpServer::close() {
  if (closed_) return;
  closed_ = true;
  listener_.close();
  // close_connection() erases from the set: iterate over a copy.
  std::vector<Connection*> open(connections_.begin(), connections_.end());
  for (Connection* connection : open) close_connection(*connection);
}

void HttpServer::on_connection(uv_stream_t* listener, int status) {
  auto* self = static_cast<HttpServer*>(listener->data);
  if (self == nullptr) return;
  if (status < 0) {
    log::warn("metrics: accept failed: {}", uv_error_text(status));
    return;
  }
  if (self->connections_.size() >= max_connections) {
    self->refuse(listener);
    return;
  }
  auto* c = new Connection(self);
  int rc = uv_tcp_init(self->loop_, &c->tcp);
  if (rc < 0) {
    // Cannot happen in practice (no socket is created for AF_UNSPEC);
    // nothing is registered with the loop yet.
    delete c;
    log::warn("metrics: cannot accept a connection: {}", uv_error_text(rc));
    return;
  }
  c->tcp.data = c;
  ++c->open_handles;
  uv_timer_init(self->loop_, &c->timer);  // cannot fail
  c->timer.data = c;
  ++c->open_handles;
  self->connections_.insert(c);
  rc = uv_accept(listener, as_stream(&c->tcp));
  if (rc < 0) {
    log::warn("metrics: cannot accept a connection: {}", uv_error_text(rc));
    close_connection(*c);
    return;
  }
  uv_timer_start(&c->timer, on_timeout, self->timeout_ms_, 0);
  rc = uv_read_start(
      as_stream(&c->tcp),
      [](uv_handle_t* handle, size_t, uv_buf_t* buf) {
        auto* connection = static_cast<Connection*>(handle->data);
        *buf = uv_buf_init(connection->buffer, sizeof(connection->buffer));
      },
      on_read);
  if (rc < 0) close_connection(*c);
}

// Over the limit: take the connection off the backlog and close it, so a
// flood of clients costs one descriptor for a moment each and nothing more.
void HttpServer::refuse(uv_stream_t* listener) {
  ++refused_;
  auto* tcp = new uv_tcp_t{};
  if (uv_tcp_init(loop_, tcp) < 0) {
    delete tcp;
    return;
  }
  uv_accept(listener, as_stream(tcp));
  uv_close(as_handle(tcp), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  uint64_t suppressed = 0;
  if (refused_limiter_.allow(uv_now(loop_), suppressed)) {
    log::warn("metrics: {} connections open, refusing another{}", max_connections,
              suppressed ? fmt::format(" ({} more refused before)", suppressed) : std::string());
  }
}

void HttpServer::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* c = static_cast<Connection*>(stream->data);
  if (c->closing || nread == 0) return;
  if (nread < 0) {
    if (nread != UV_EOF) {
      close_connection(*c);
      return;
    }
    c->peer_eof = true;
    uv_read_stop(stream);
    if (c->responded) {
      // The client has read the response and gone (or gave up on it).
      if (c->shut_down) close_connection(*c);
    } else if (c->head.find_first_not_of("\r\n") == std::string::npos) {
      close_connection(*c);  // connected and said nothing
    } else {
      // A half-closed client (`printf ... | nc`) can still read: tell it.
      c->server->respond(*c, 400, plain_text, "incomplete request\n");
    }
    return;
  }
  // Bodies and pipelined requests are not served: read and dropped, so that
  // closing does not reset the connection under an unread response.
  if (c->responded) return;
  c->head.append(buf->base, static_cast<size_t>(nread));
  c->server->process(*c);
}

void HttpServer::process(Connection& c) {
  HttpRequest request = parse_http_request(c.head, max_head_bytes);
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
      handle_request(c, request.path);
      return;
  }
}

void HttpServer::handle_request(Connection& c, std::string_view path) {
  Response response;
  try {
    response = handler_("GET", path);
  } catch (const std::exception& e) {
    log::error("metrics: GET {} failed: {}", log::excerpt(path), e.what());
    response = Response{500, plain_text, "internal error\n"};
  }
  // The handler may have closed the server, and with it this connection.
  if (c.closing) return;
  log::debug("metrics: GET {} -> {}", log::excerpt(path), response.status);
  respond(c, response.status, response.content_type, response.body);
}

void HttpServer::respond(Connection& c, int status, std::string_view content_type,
                         std::string_view body) {
  c.responded = true;
  auto request = std::make_unique<WriteRequest>();
  request->connection = &c;
  request->bytes = fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
      status, http_reason(status), content_type, body.size(),
      status == 405 ? "Allow: GET\r\n" : "");
  request->bytes.append(body);
  uv_buf_t buf = uv_buf_init(request->bytes.data(), static_cast<unsigned>(request->bytes.size()));
  if (uv_write(&request->req, as_stream(&c.tcp), &buf, 1, on_write) < 0) {
    close_connection(c);
    return;
  }
  request.release();  // on_write frees it
  // A fresh period for the client to read the response and hang up.
  uv_timer_start(&c.timer, on_timeout, timeout_ms_, 0);
}

void HttpServer::on_write(uv_write_t* req, int status) {
  std::unique_ptr<WriteRequest> request(reinterpret_cast<WriteRequest*>(req));
  Connection& c = *request->connection;
  if (c.closing) return;
  if (status < 0) {
    close_connection(c);
    return;
  }
  c.shutdown.data = &c;
  if (uv_shutdown(&c.shutdown, as_stream(&c.tcp), on_shutdown) < 0) close_connection(c);
}

// Our side is done. Closing now could reset the connection while the
// client still has request bytes in flight, and a reset can destroy the
// response before it is read; so wait for the client's EOF (or the timer).
void HttpServer::on_shutdown(uv_shutdown_t* req, int status) {
  auto& c = *static_cast<Connection*>(req->data);
  if (c.closing) return;
  c.shut_down = true;
  if (status < 0 || c.peer_eof) close_connection(c);
}

void HttpServer::on_timeout(uv_timer_t* timer) {
  auto& c = *static_cast<Connection*>(timer->data);
  if (c.closing) return;
  log::debug("metrics: closing a connection after {} ms without {}", c.server->timeout_ms_,
             c.responded ? "the client hanging up" : "a complete request");
  close_connection(c);
}

void HttpServer::close_connection(Connection& c) {
  if (c.closing) return;
  c.closing = true;
  if (c.server) c.server->connections_.erase(&c);
  c.server = nullptr;
  uv_close(as_handle(&c.tcp), on_closed);
  uv_close(as_handle(&c.timer), on_closed);
}

void HttpServer::on_closed(uv_handle_t* handle) {
  auto* c = static_cast<Connection*>(handle->data);
  if (--c->open_handles == 0) delete c;
}

}  // namespace chronomerge
