#include "sinks/server_sink.h"

#include "log/log.h"
#include "uv/socket_address.h"
#include "uv/uv_error.h"

namespace chronomerge {

struct ServerSink::Client {
  uint64_t id = 0;
  std::string peer;
  std::unique_ptr<StreamWriter> writer;
  bool done = false;
  char discard[256];
};

namespace {
std::string peer_name(uv_stream_t* stream, uint64_t id) {
  if (stream->type != UV_TCP) return fmt::format("#{}", id);
  sockaddr_storage addr{};
  int len = sizeof(addr);
  if (uv_tcp_getpeername(reinterpret_cast<uv_tcp_t*>(stream), reinterpret_cast<sockaddr*>(&addr),
                         &len) != 0) {
    return fmt::format("#{} ?", id);
  }
  return fmt::format("#{} {}", id, format_sockaddr(addr));
}
}  // namespace

ServerSink::ServerSink(uv_loop_t* loop, Output& output, OutputConfig config,
                       std::function<void()> changed)
    : Sink(std::move(config)), loop_(loop), output_(output), changed_(std::move(changed)) {}

ServerSink::~ServerSink() {
  close();
}

bool ServerSink::start() {
  bool tcp = config_.type == OutputType::tcp_listen;
  int rc = listen_on(loop_, server_, tcp ? &config_.address : nullptr, config_.path, on_connection,
                     this);
  address_ = tcp ? bound_address(server_) : config_.path;
  if (rc < 0) {
    log::error("output {}: cannot listen on {}: {}", name(),
               tcp ? to_string(config_.address) : config_.path, uv_error_text(rc));
    return false;
  }
  uv_idle_init(loop_, reaper_.get());
  reaper_.initialized(this);
  log::info("output {}: listening on {}", name(), address_);
  return true;
}

void ServerSink::on_connection(uv_stream_t* server, int status) {
  auto* self = static_cast<ServerSink*>(server->data);
  if (self == nullptr) return;
  if (status < 0) {
    log::warn("output {}: accept failed: {}", self->name(), uv_error_text(status));
    return;
  }
  int error = 0;
  auto stream = accept_from(server, error);
  if (!stream) {
    log::warn("output {}: cannot accept a client: {}", self->name(), uv_error_text(error));
    return;
  }
  uint64_t id = self->next_client_id_++;
  std::string peer = peer_name(stream->stream(), id);
  if (self->counters_.clients >= self->config_.max_clients || self->output_.ended()) {
    ++self->counters_.refused;
    if (self->output_.ended()) {
      log::info("output {}: refused client {}: the stream has ended", self->name(), peer);
    } else {
      log::warn("output {}: refused client {}: max_clients ({}) reached", self->name(), peer,
                self->config_.max_clients);
    }
    stream->close();
    return;
  }
  auto client = std::make_unique<Client>();
  Client* raw = client.get();
  raw->id = id;
  raw->peer = peer;
  uv_stream_t* client_stream = stream->stream();
  raw->writer = std::make_unique<StreamWriter>(
      self->output_, std::move(stream), self->config_.max_buffer,
      self->config_.slow_client == SlowClientPolicy::block, self->config_.stall_timeout_ms,
      [self, raw](StreamWriter::Outcome outcome, const std::string& reason) {
        self->client_done(raw, outcome, reason);
      });
  // Read from the client only to notice a reset early; what it sends is
  // ignored, and its EOF (a half-close, as `nc` does) is not a goodbye.
  // The stream's data pointer is the writer (cleared when it closes).
  uv_read_start(
      client_stream,
      [](uv_handle_t* h, size_t, uv_buf_t* buf) {
        static char discard[512];
        (void)h;
        *buf = uv_buf_init(discard, sizeof(discard));
      },
      [](uv_stream_t* s, ssize_t n, const uv_buf_t*) {
        if (n >= 0) return;
        uv_read_stop(s);
        if (n != UV_EOF && s->data != nullptr) {
          static_cast<StreamWriter*>(s->data)->fail(uv_error_text(static_cast<int>(n)));
        }
      });
  self->clients_.push_back(std::move(client));
  ++self->counters_.clients;
  ++self->counters_.clients_total;
  log::info("output {}: client {} connected ({} now)", self->name(), peer, self->counters_.clients);
}

void ServerSink::client_done(Client* client, StreamWriter::Outcome outcome,
                             const std::string& reason) {
  if (client->done) return;
  client->done = true;
  --counters_.clients;
  if (outcome == StreamWriter::Outcome::finished) {
    log::info("output {}: client {} finished", name(), client->peer);
  } else {
    ++counters_.disconnects;
    const char* what = outcome == StreamWriter::Outcome::overflowed ? "too slow"
                       : outcome == StreamWriter::Outcome::stalled  ? "stalled"
                                                                    : "write failed";
    log::warn("output {}: client {} disconnected: {} ({})", name(), client->peer, what, reason);
  }
  // The writer is inside its own callback: free it from the idle handle.
  if (reaper_.open()) {
    uv_idle_start(reaper_.get(), [](uv_idle_t* idle) {
      if (auto* self = static_cast<ServerSink*>(idle->data)) self->reap();
    });
  }
  check_finished();
}

void ServerSink::reap() {
  uv_idle_stop(reaper_.get());
  for (auto it = clients_.begin(); it != clients_.end();) {
    if ((*it)->done) {
      bytes_of_gone_clients_ += (*it)->writer->bytes_written();
      it = clients_.erase(it);
    } else {
      ++it;
    }
  }
}

void ServerSink::check_finished() {
  if (finished_ || !output_.ended() || counters_.clients > 0) return;
  finished_ = true;
  server_.close();
  if (changed_) changed_();
}

void ServerSink::close() {
  if (closed_) return;
  closed_ = true;
  server_.close();
  reaper_.close();
  for (auto& client : clients_) client->writer->close();
}

SinkCounters ServerSink::counters() const {
  SinkCounters c = counters_;
  c.bytes_out = bytes_of_gone_clients_;
  for (const auto& client : clients_) {
    c.bytes_out += client->writer->bytes_written();
    if (!client->done) c.queue_bytes = std::max(c.queue_bytes, client->writer->lag());
  }
  return c;
}

}  // namespace chronomerge
