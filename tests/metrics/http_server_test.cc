// HttpServer on a real loop, with libuv clients on the same loop: each case
// awaits the server closing the client's connection, then proves the loop
// closes cleanly after close().
#include "metrics/http_server.h"

#include <doctest/doctest.h>
#include <uv.h>

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "metrics/http_request.h"
#include "metrics/metrics.h"

using namespace chronomerge;

namespace {

// One client connection: sends its chunks (10 ms apart), optionally shuts
// down its side, and reads until the server closes. Must outlive the loop
// run that closes it (`closed`).
class Client {
 public:
  Client(uv_loop_t* loop, const std::string& address, std::vector<std::string> chunks,
         bool half_close = false)
      : loop_(loop), chunks_(std::move(chunks)), half_close_(half_close) {
    started = uv_now(loop);
    size_t colon = address.rfind(':');
    sockaddr_in addr{};
    uv_ip4_addr(address.substr(0, colon).c_str(), std::stoi(address.substr(colon + 1)), &addr);
    uv_tcp_init(loop, &tcp_);
    uv_timer_init(loop, &timer_);
    tcp_.data = timer_.data = connect_.data = shutdown_.data = this;
    uv_tcp_connect(&connect_, &tcp_, reinterpret_cast<const sockaddr*>(&addr), on_connect);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  std::string response;
  bool ended = false;   // the server closed the connection (EOF or reset)
  bool closed = false;  // our handles are closed too
  uint64_t started = 0;
  uint64_t ended_at = 0;

 private:
  struct Write {
    uv_write_t req{};
    std::string bytes;
  };

  static void on_connect(uv_connect_t* req, int status) {
    auto* self = static_cast<Client*>(req->data);
    if (status < 0) {
      self->finish();
      return;
    }
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&self->tcp_),
        [](uv_handle_t* h, size_t, uv_buf_t* buf) {
          auto* c = static_cast<Client*>(h->data);
          *buf = uv_buf_init(c->buffer_, sizeof(c->buffer_));
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
          auto* c = static_cast<Client*>(s->data);
          if (n > 0) c->response.append(buf->base, static_cast<size_t>(n));
          if (n < 0) c->finish();
        });
    self->send_next();
  }

  void send_next() {
    if (ended) return;
    if (next_ < chunks_.size()) {
      auto* w = new Write;
      w->bytes = chunks_[next_++];
      uv_buf_t buf = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
      uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&tcp_), &buf, 1,
               [](uv_write_t* req, int) { delete reinterpret_cast<Write*>(req); });
      if (next_ < chunks_.size()) {
        uv_timer_start(
            &timer_, [](uv_timer_t* t) { static_cast<Client*>(t->data)->send_next(); }, 10, 0);
        return;
      }
    }
    if (half_close_) {
      uv_shutdown(&shutdown_, reinterpret_cast<uv_stream_t*>(&tcp_), [](uv_shutdown_t*, int) {});
    }
  }

  void finish() {
    if (ended) return;
    ended = true;
    ended_at = uv_now(loop_);
    auto closed = [](uv_handle_t* h) {
      auto* c = static_cast<Client*>(h->data);
      if (--c->open_ == 0) c->closed = true;
    };
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), closed);
  }

  uv_loop_t* loop_;
  uv_tcp_t tcp_{};
  uv_timer_t timer_{};
  uv_connect_t connect_{};
  uv_shutdown_t shutdown_{};
  std::vector<std::string> chunks_;
  size_t next_ = 0;
  bool half_close_;
  int open_ = 2;
  char buffer_[4096];
};

void run_until(uv_loop_t* loop, const std::function<bool()>& done) {
  while (!done()) uv_run(loop, UV_RUN_ONCE);
}

// Sends `request` on a new connection and returns everything the server
// wrote before closing it.
std::string fetch(uv_loop_t* loop, const HttpServer& server, std::vector<std::string> chunks,
                  bool half_close = false) {
  Client client(loop, server.address(), std::move(chunks), half_close);
  run_until(loop, [&] { return client.closed; });
  return client.response;
}

std::string fetch(uv_loop_t* loop, const HttpServer& server, const std::string& request) {
  return fetch(loop, server, std::vector<std::string>{request});
}

std::string status_line(const std::string& response) {
  return response.substr(0, response.find("\r\n"));
}

std::string body(const std::string& response) {
  size_t end = response.find("\r\n\r\n");
  return end == std::string::npos ? std::string() : response.substr(end + 4);
}

struct Seen {
  std::string method;
  std::string path;
  int calls = 0;
};

HttpServer::Handler canned(Seen& seen) {
  return [&seen](std::string_view method, std::string_view path) -> HttpServer::Response {
    seen.method = method;
    seen.path = path;
    ++seen.calls;
    if (path == "/healthz") return {200, "text/plain; charset=utf-8", "ok\n"};
    if (path == "/metrics") {
      return {200, std::string(metrics_content_type), "# TYPE x_total counter\nx_total 1\n"};
    }
    return {404, "text/plain; charset=utf-8", "not found\n"};
  };
}

const HostPort any_port{"127.0.0.1", 0};

}  // namespace

TEST_CASE("HttpServer") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  Seen seen;

  {
    HttpServer server(&loop, any_port, canned(seen), 2000);
    REQUIRE(server.start());
    REQUIRE(server.address().rfind("127.0.0.1:", 0) == 0);
    CHECK(server.address() != "127.0.0.1:0");

    SUBCASE("answers GET /healthz with the handler's response and closes") {
      std::string response = fetch(&loop, server, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
      CHECK(response ==
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 3\r\n"
            "Connection: close\r\n"
            "\r\n"
            "ok\n");
      CHECK(seen.method == "GET");
      CHECK(seen.path == "/healthz");
    }

    SUBCASE("serves /metrics with the Prometheus content type") {
      std::string response = fetch(&loop, server, "GET /metrics HTTP/1.0\r\n\r\n");
      CHECK(status_line(response) == "HTTP/1.1 200 OK");
      CHECK(response.find("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n") !=
            std::string::npos);
      CHECK(body(response) == "# TYPE x_total counter\nx_total 1\n");
    }

    SUBCASE("leaves unknown paths to the handler, which answers 404") {
      std::string response = fetch(&loop, server, "GET /nope HTTP/1.1\r\n\r\n");
      CHECK(status_line(response) == "HTTP/1.1 404 Not Found");
      CHECK(body(response) == "not found\n");
      CHECK(seen.path == "/nope");
    }

    SUBCASE("strips the query string and accepts absolute-form targets") {
      CHECK(status_line(fetch(&loop, server, "GET /metrics?x=1 HTTP/1.1\r\n\r\n")) ==
            "HTTP/1.1 200 OK");
      CHECK(seen.path == "/metrics");
      CHECK(status_line(fetch(&loop, server, "GET http://host:9/healthz HTTP/1.1\r\n\r\n")) ==
            "HTTP/1.1 200 OK");
      CHECK(seen.path == "/healthz");
    }

    SUBCASE("reads a head that arrives in pieces, with bare LF line ends and leading blank lines") {
      std::string response =
          fetch(&loop, server,
                std::vector<std::string>{"\r\nGE", "T /heal", "thz HTTP/1.1\nHo", "st: x\n", "\n"});
      CHECK(status_line(response) == "HTTP/1.1 200 OK");
      CHECK(seen.calls == 1);
    }

    SUBCASE("answers 400 to garbage without calling the handler") {
      for (const std::string& garbage : std::vector<std::string>{
               "garbage\r\n\r\n", "GET /\r\n\r\n", "GET  / HTTP/1.1\r\n\r\n",
               "GET / HTTP/1.1 x\r\n\r\n", "GET / HTTX/1.1\r\n\r\n", "GET / HTTP/1.1x\r\n\r\n",
               "GET healthz HTTP/1.1\r\n\r\n", "G(T / HTTP/1.1\r\n\r\n",
               "GET /a\x01 HTTP/1.1\r\n\r\n", "GET / HTTP/1.1\r\nNo colon\r\n\r\n",
               "GET / HTTP/1.1\r\nBad name: x\r\n\r\n", "GET / HTTP/1.1\r\n Folded: x\r\n\r\n",
               "GET /\r HTTP/1.1\r\n\r\n", std::string("\0\xff\xfe\r\n\r\n", 7)}) {
        CAPTURE(garbage);
        std::string response = fetch(&loop, server, garbage);
        CHECK(status_line(response) == "HTTP/1.1 400 Bad Request");
        CHECK(response.find("\r\nConnection: close\r\n") != std::string::npos);
      }
      CHECK(seen.calls == 0);
    }

    SUBCASE("answers 400 to an incomplete request whose client half-closes") {
      std::string response =
          fetch(&loop, server, std::vector<std::string>{"GET /healthz HTTP/1.1\r\n"}, true);
      CHECK(status_line(response) == "HTTP/1.1 400 Bad Request");
      CHECK(seen.calls == 0);
    }

    SUBCASE("answers 405 with Allow: GET to other methods, a body notwithstanding") {
      std::string response =
          fetch(&loop, server, "POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
      CHECK(status_line(response) == "HTTP/1.1 405 Method Not Allowed");
      CHECK(response.find("\r\nAllow: GET\r\n") != std::string::npos);
      CHECK(status_line(fetch(&loop, server, "HEAD /healthz HTTP/1.1\r\n\r\n")) ==
            "HTTP/1.1 405 Method Not Allowed");
      CHECK(seen.calls == 0);
    }

    SUBCASE("answers 505 to another HTTP major version") {
      CHECK(status_line(fetch(&loop, server, "GET / HTTP/2.0\r\n\r\n")) ==
            "HTTP/1.1 505 HTTP Version Not Supported");
    }

    SUBCASE("answers 431 to a head over 8 KiB, complete or not") {
      std::string big = "GET /healthz HTTP/1.1\r\nX-Big: " + std::string(9000, 'a') + "\r\n\r\n";
      CHECK(status_line(fetch(&loop, server, big)) ==
            "HTTP/1.1 431 Request Header Fields Too Large");
      std::string endless = "GET /healthz HTTP/1.1\r\nX-Big: " + std::string(9000, 'a');
      CHECK(status_line(fetch(&loop, server, endless)) ==
            "HTTP/1.1 431 Request Header Fields Too Large");
      // Exactly at the limit is still served.
      std::string head = "GET /healthz HTTP/1.1\r\nX-Fill: ";
      head += std::string(HttpServer::max_head_bytes - head.size() - 4, 'a') + "\r\n\r\n";
      REQUIRE(head.size() == HttpServer::max_head_bytes);
      CHECK(status_line(fetch(&loop, server, head)) == "HTTP/1.1 200 OK");
    }

    SUBCASE("answers 500 when the handler throws") {
      HttpServer failing(&loop, any_port,
                         [](std::string_view, std::string_view) -> HttpServer::Response {
                           throw std::runtime_error("boom");
                         });
      REQUIRE(failing.start());
      CHECK(status_line(fetch(&loop, failing, "GET / HTTP/1.1\r\n\r\n")) ==
            "HTTP/1.1 500 Internal Server Error");
      failing.close();
    }

    SUBCASE("lets the handler close the server; the request is then dropped") {
      HttpServer* self = nullptr;
      HttpServer closing(&loop, any_port, [&](std::string_view, std::string_view) {
        self->close();
        return HttpServer::Response{200, "text/plain", "late\n"};
      });
      self = &closing;
      REQUIRE(closing.start());
      CHECK(fetch(&loop, closing, "GET / HTTP/1.1\r\n\r\n").empty());
      CHECK(closing.connection_count() == 0);
      closing.close();  // idempotent
    }

    SUBCASE("closes a client that connects and says nothing after the timeout") {
      HttpServer quick(&loop, any_port, canned(seen), 100);
      REQUIRE(quick.start());
      Client silent(&loop, quick.address(), {});
      run_until(&loop, [&] { return silent.closed; });
      CHECK(silent.response.empty());
      CHECK(silent.ended_at - silent.started >= 90);
      CHECK(silent.ended_at - silent.started < 1500);
      CHECK(quick.connection_count() == 0);
      quick.close();
    }

    SUBCASE("closes a client that never finishes its head after the timeout") {
      HttpServer quick(&loop, any_port, canned(seen), 100);
      REQUIRE(quick.start());
      Client slow(&loop, quick.address(), {"GET /healthz HTTP/1.1\r\n"});
      run_until(&loop, [&] { return slow.closed; });
      CHECK(slow.response.empty());
      CHECK(seen.calls == 0);
      quick.close();
    }

    SUBCASE("accepts at most 64 connections and closes the next at once") {
      std::vector<std::unique_ptr<Client>> clients;
      for (size_t i = 0; i <= HttpServer::max_connections; ++i) {
        clients.push_back(
            std::make_unique<Client>(&loop, server.address(), std::vector<std::string>{}));
      }
      auto ended = [&] {
        size_t n = 0;
        for (const auto& c : clients) n += c->ended;
        return n;
      };
      run_until(&loop, [&] { return ended() > 0; });
      CHECK(ended() == 1);
      CHECK(server.connection_count() == HttpServer::max_connections);
      CHECK(server.refused() == 1);
      server.close();
      run_until(&loop, [&] {
        for (const auto& c : clients) {
          if (!c->closed) return false;
        }
        return true;
      });
    }

    SUBCASE("cannot bind an address in use, and says so") {
      std::string port = server.address().substr(server.address().rfind(':') + 1);
      HttpServer second(&loop, HostPort{"127.0.0.1", static_cast<uint16_t>(std::stoi(port))},
                        canned(seen));
      CHECK_FALSE(second.start());
      CHECK(second.address().empty());
    }

    server.close();
    server.close();  // idempotent
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("parse_http_request") {
  using Outcome = HttpRequest::Outcome;
  auto parse = [](std::string_view data, size_t limit = HttpServer::max_head_bytes) {
    return parse_http_request(data, limit);
  };
  SUBCASE("waits for the empty line that ends the head") {
    CHECK(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n").outcome == Outcome::incomplete);
    HttpRequest request = parse("GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\nbody");
    CHECK(request.outcome == Outcome::get);
    CHECK(request.path == "/metrics");
  }
  SUBCASE("says how many leading line ends the caller may drop") {
    HttpRequest request = parse("\r\n\n\r\nGE");
    CHECK(request.outcome == Outcome::incomplete);
    CHECK(request.blank_prefix == 5);
    CHECK(parse("\r\n\r\n").blank_prefix == 4);
  }
  SUBCASE("leading empty lines do not count against the limit") {
    const std::string head = "GET / HTTP/1.1\r\n\r\n";
    CHECK(parse(std::string(100, '\n') + head, head.size()).outcome == Outcome::get);
    HttpRequest request = parse(head, head.size() - 1);
    CHECK(request.outcome == Outcome::refused);
    CHECK(request.status == 431);
  }
  SUBCASE("an absolute-form target without a path asks for /") {
    HttpRequest request = parse("GET HTTP://host:9464 HTTP/1.1\r\n\r\n");
    CHECK(request.outcome == Outcome::get);
    CHECK(request.path == "/");
  }
  SUBCASE("refusals carry their status and a one-line body") {
    HttpRequest request = parse("DELETE / HTTP/1.1\r\n\r\n");
    CHECK(request.status == 405);
    CHECK(request.message == "only GET is supported\n");
    CHECK(parse("GET / HTTP/3.0\r\n\r\n").status == 505);
    CHECK(parse("GET / HTTP/1.1\r\nBad\rField: x\r\n\r\n").status == 400);
  }
}
