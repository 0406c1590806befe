#include "sinks/server_sink.h"

#include <unistd.h>

#include <algorithm>
#include <optional>

#include <nlohmann/json.hpp>

#include "metrics/http_request.h"
#include "net/token.h"
#include "output/resume_request.h"
#include "uv/uv_error.h"

namespace chronomerge {

struct ServerSink::Client {
  ServerSink* sink = nullptr;
  uint64_t id = 0;
  std::string peer;
  // resume: the connection while its request is read, then the writer's.
  std::unique_ptr<UvHandle<AnyStream>> stream;
  UvHandle<uv_timer_t> hello_timer;
  std::string request;
  char buffer[4096];
  std::unique_ptr<StreamWriter> writer;
  std::string token_hash;  // of the token it was admitted with (tokens_sha256)
  bool done = false;
};

namespace {

constexpr std::string_view refusals = "client refusals";
constexpr std::string_view accept_failures = "accept failures";
constexpr std::string_view connections = "client connects";
constexpr std::string_view disconnections = "client disconnects";
// A resume request is one short JSON line; anything longer is refused.
constexpr size_t max_request_bytes = 64 << 10;
// http-listen: a request head (its query included) at most this long.
constexpr size_t max_head_bytes = 80 << 10;

std::string error_line(std::string_view error, std::string_view message) {
  return nlohmann::json{{"error", error}, {"message", message}}.dump(
             -1, ' ', false, nlohmann::json::error_handler_t::replace) +
         "\n";
}

std::string chunk(std::string_view bytes) {
  return fmt::format("{:x}\r\n{}\r\n", bytes.size(), bytes);
}

std::string trim_newline(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
  return std::string(text);
}

std::string peer_name(const std::string& peer, uint64_t id) {
  return peer.empty() ? fmt::format("#{}", id) : fmt::format("#{} {}", id, peer);
}

}  // namespace

ServerSink::ServerSink(uv_loop_t* loop, OutputLog& output, OutputConfig config,
                       std::function<void()> changed)
    : Sink(std::move(config)),
      loop_(loop),
      output_(output),
      changed_(std::move(changed)),
      http_(config_.type == OutputType::http_listen) {}

ServerSink::~ServerSink() {
  close();
}

bool ServerSink::start() {
  bool tcp = config_.type == OutputType::tcp_listen || http_;
  if (!listener_.configure_tls(config_.tls, "output " + name())) return false;
  listener_.set_socket_access(config_.socket);
  int rc = listener_.listen(
      loop_, tcp ? &config_.address : nullptr, config_.path,
      [this](uv_os_sock_t socket, const AcceptedPeer& peer) { accepted(socket, peer); },
      [this](int error, uint64_t count) { accept_failed(error, count); });
  address_ = tcp ? listener_.bound_address() : config_.path;
  if (rc < 0) {
    log::error("output {}: cannot listen on {}: {}", name(),
               tcp ? to_string(config_.address) : config_.path, uv_error_text(rc));
    return false;
  }
  uv_idle_init(loop_, reaper_.get());
  reaper_.initialized(this);
  if (uv_timer_init(loop_, summary_timer_.get()) == 0) {
    summary_timer_.initialized(this);
    // A summary is not worth keeping the loop alive for.
    uv_unref(summary_timer_.base());
  }
  log::info("output {}: listening on {}", name(), address_);
  return true;
}

void ServerSink::reload_tls() {
  listener_.reload_tls(config_.tls);
}

void ServerSink::accepted(uv_os_sock_t socket, const AcceptedPeer& who) {
  uint64_t id = next_client_id_++;
  std::string peer = peer_name(who.address, id);
  if (counters_.clients >= config_.max_clients || output_.ended()) {
    // Nothing was read from it: closing sends an orderly end of stream.
    ::close(socket);
    ++counters_.refused;
    if (output_.ended()) {
      refusal_log_.log(uv_now(loop_), LogLevel::info, {"output", name()}, refusals,
                       "output {}: refused client {}: the stream has ended", name(), peer);
    } else {
      refusal_log_.log(uv_now(loop_), LogLevel::warn, {"output", name()}, refusals,
                       "output {}: refused client {}: max_clients ({}) reached", name(), peer,
                       config_.max_clients);
    }
    schedule_summary();
    return;
  }
  int error = 0;
  auto stream = open_accepted(loop_, socket, error);
  if (!stream) {
    listener_.count_error(error);
    refusal_log_.log(uv_now(loop_), LogLevel::warn, {"output", name()}, accept_failures,
                     "output {}: cannot accept client {}: {}", name(), peer, uv_error_text(error));
    schedule_summary();
    return;
  }
  auto client = std::make_unique<Client>();
  Client* raw = client.get();
  raw->sink = this;
  raw->id = id;
  raw->peer = peer;
  clients_.push_back(std::move(client));
  ++counters_.clients;
  ++counters_.clients_total;
  client_log_.log(uv_now(loop_), LogLevel::info, {"output", name()}, connections,
                  "output {}: client {} connected ({} now)", name(), peer, counters_.clients);
  schedule_summary();
  // With tokens, every client starts with a request line carrying one.
  if (config_.resume || http_ || !config_.tokens_sha256.empty()) {
    read_request(raw, std::move(stream));
  } else {
    start_writer(raw, std::move(stream), consumer_options(), {});
  }
}

void ServerSink::start_writer(Client* client, std::unique_ptr<UvHandle<AnyStream>> stream,
                              OutputLog::ConsumerOptions options, std::string preamble,
                              WriteBatch::Framing framing) {
  client->writer = std::make_unique<StreamWriter>(
      output_, std::move(options), std::move(stream), config_.stall_timeout_ms,
      [this, client](StreamWriter::Outcome outcome, const std::string& reason) {
        client_done(client, outcome, reason);
      },
      std::move(preamble), framing);
  // What a client sends from now on is ignored, and its EOF (a half-close,
  // as `nc` does) is not a goodbye; a reset is.
  client->writer->watch_for_reset();
}

// resume: the client's first line says where it continues. Until it has
// come (or hello_timeout_ms passed) nothing is written and the client holds
// no cursor.
void ServerSink::read_request(Client* client, std::unique_ptr<UvHandle<AnyStream>> stream) {
  client->stream = std::move(stream);
  client->stream->get()->handle.data = client;
  if (uv_timer_init(loop_, client->hello_timer.get()) == 0) {
    client->hello_timer.initialized(client);
    uv_timer_start(
        client->hello_timer.get(),
        [](uv_timer_t* timer) {
          if (auto* c = static_cast<Client*>(timer->data)) {
            c->sink->refuse(c, DisconnectReason::hello_timeout,
                            "sent no request within hello_timeout_ms", {});
          }
        },
        config_.hello_timeout_ms, 0);
  }
  int rc = uv_read_start(
      client->stream->stream(),
      [](uv_handle_t* handle, size_t, uv_buf_t* buf) {
        auto* c = static_cast<Client*>(handle->data);
        *buf = c != nullptr ? uv_buf_init(c->buffer, sizeof(c->buffer)) : uv_buf_init(nullptr, 0);
      },
      [](uv_stream_t* stream, ssize_t n, const uv_buf_t* buf) {
        auto* c = static_cast<Client*>(stream->data);
        if (c == nullptr) return;
        if (n < 0) {
          c->sink->refuse(c, DisconnectReason::peer_closed,
                          n == UV_EOF ? std::string("closed before its request")
                                      : uv_error_text(static_cast<int>(n)),
                          {});
          return;
        }
        c->request.append(buf->base, static_cast<size_t>(n));
        c->sink->request_read(c);
      });
  if (rc < 0) refuse(client, DisconnectReason::peer_closed, uv_error_text(rc), {});
}

void ServerSink::request_read(Client* client) {
  if (http_) {
    request_head_read(client);
    return;
  }
  const size_t newline = client->request.find('\n');
  if (newline == std::string::npos) {
    if (client->request.size() > max_request_bytes) {
      refuse(client, DisconnectReason::bad_request, "request line longer than 64 KiB",
             error_line("bad_request", "request line longer than 64 KiB"));
    }
    return;
  }
  uv_read_stop(client->stream->stream());
  client->hello_timer.close();
  const std::string line = client->request.substr(0, newline);
  client->request = std::string();
  ResumeParse parsed = parse_resume_line(line, output_.key_type());
  if (!parsed.request) {
    refuse(client, DisconnectReason::bad_request, parsed.error,
           error_line("bad_request", parsed.error));
    return;
  }
  if (!admit_token(client, parsed.request->token)) {
    const std::string why = parsed.request->token.empty() ? "no token" : "unknown token";
    refuse(client, DisconnectReason::token, why, error_line("token", why));
    return;
  }
  serve(client, *parsed.request, Protocol::line, {});
}

// http-listen: GET /stream, the resume request in the query string (and,
// for Server-Sent Events, the browser's Last-Event-ID).
void ServerSink::request_head_read(Client* client) {
  const HttpRequest head = parse_http_request(client->request, max_head_bytes);
  if (head.outcome == HttpRequest::Outcome::incomplete) {
    if (client->request.size() - head.blank_prefix > max_head_bytes) {
      refuse(client, DisconnectReason::bad_request, "request head too large",
             http_response(431, "request head too large\n", {}));
    }
    return;
  }
  uv_read_stop(client->stream->stream());
  client->hello_timer.close();
  if (head.outcome == HttpRequest::Outcome::refused) {
    refuse(client, DisconnectReason::bad_request, trim_newline(head.message),
           http_response(head.status, head.message, {}));
    return;
  }
  const std::string origin(head.origin);
  if (!admit_token(client, bearer_token(head.authorization))) {
    const std::string why =
        head.authorization.empty() ? "no Authorization: Bearer token" : "unknown token";
    refuse(client, DisconnectReason::token, why, http_response(401, why + "\n", origin));
    return;
  }
  if (head.path != "/stream") {
    refuse(client, DisconnectReason::bad_request, fmt::format("no such path: {}", head.path),
           http_response(404, "not found: the stream is at /stream\n", origin));
    return;
  }
  const bool events = head.accept.find("text/event-stream") != std::string_view::npos;
  ResumeParse parsed = parse_resume_query(head.query, output_.key_type());
  if (parsed.request && !head.last_event_id.empty()) {
    // A browser reconnecting: its last event id says exactly where.
    ResumeParse id = parse_event_id(head.last_event_id);
    if (id.request) {
      parsed.request->from = ResumeRequest::From::after;
      parsed.request->run = id.request->run;
      parsed.request->offset = id.request->offset;
      parsed.request->key = Key{};
      parsed.request->skip = 0;
    } else {
      parsed = std::move(id);
    }
  }
  if (!parsed.request) {
    refuse(client, DisconnectReason::bad_request, parsed.error,
           http_response(400, error_line("bad_request", parsed.error), origin));
    return;
  }
  client->request = std::string();
  if (events) {
    // A closed event stream would make the browser reconnect in a loop:
    // on a gap it carries on from the oldest record and says so.
    parsed.request->on_gap = ResumeRequest::OnGap::oldest;
  }
  serve(client, *parsed.request, events ? Protocol::events : Protocol::ndjson, origin);
}

void ServerSink::serve(Client* client, const ResumeRequest& request, Protocol protocol,
                       const std::string& origin) {
  std::vector<OutputLog::SourceId> sources;
  for (const std::string& feed : request.feeds) sources.push_back(output_.source_id(feed));
  OutputLog::Location at;
  switch (request.from) {
    case ResumeRequest::From::now:
      at.offset = output_.head_offset();
      break;
    case ResumeRequest::From::oldest:
      at.offset = output_.oldest_offset();
      break;
    case ResumeRequest::From::key:
      at = output_.locate_key(request.key, request.skip, sources);
      break;
    case ResumeRequest::From::after:
      at = output_.locate_after(request.run, request.offset);
      break;
  }
  const uint64_t oldest = output_.oldest_offset();
  if (at.gap) {
    ++counters_.gaps;
    if (request.on_gap == ResumeRequest::OnGap::close) {
      const std::string answer =
          nlohmann::json{{"error", "gap"}, {"run", output_.run_id()}, {"oldest", oldest}}.dump() +
          "\n";
      refuse(client, DisconnectReason::gap, "asked for records no longer retained",
             protocol == Protocol::line ? answer : http_response(410, answer, origin));
      return;
    }
    // on_gap "oldest": carry on from there, and say so.
    at.offset = oldest;
    client_log_.log(uv_now(loop_), LogLevel::warn, {"output", name()}, disconnections,
                    "output {}: client {} asked for records no longer retained (gap); it "
                    "continues from the oldest, offset {}",
                    name(), client->peer, oldest);
  }
  // The answer names the first record the client will get: with a feeds
  // filter, the first of those feeds'.
  at.offset = output_.first_match(at.offset, sources);
  nlohmann::json answer = {{"run", output_.run_id()}, {"offset", at.offset}, {"oldest", oldest}};
  if (at.gap) answer["gap"] = true;
  std::string preamble;
  WriteBatch::Framing framing = WriteBatch::Framing::raw;
  switch (protocol) {
    case Protocol::line:
      preamble = answer.dump() + "\n";
      break;
    case Protocol::ndjson:
      preamble = http_stream_head("application/x-ndjson", origin) + chunk(answer.dump() + "\n");
      framing = WriteBatch::Framing::chunked;
      break;
    case Protocol::events: {
      std::string first = "retry: 1000\nevent: resume\ndata: " + answer.dump() + "\n\n";
      if (at.gap) {
        first += "event: gap\ndata: " +
                 nlohmann::json{{"run", output_.run_id()}, {"oldest", oldest}}.dump() + "\n\n";
      }
      preamble = http_stream_head("text/event-stream", origin) + chunk(first);
      framing = WriteBatch::Framing::events;
      break;
    }
  }
  ++counters_.resumes;
  OutputLog::ConsumerOptions options = consumer_options();
  options.sources = std::move(sources);
  options.start = at.offset;
  start_writer(client, std::move(client->stream), std::move(options), std::move(preamble), framing);
}

// Answers with `answer` (if any) and closes: a refused request never gets
// a cursor.
void ServerSink::refuse(Client* client, DisconnectReason reason, const std::string& why,
                        const std::string& answer) {
  if (client->done) return;
  if (!answer.empty() && client->stream) {
    // A fresh connection's send buffer takes one short answer at once.
    uv_buf_t buf =
        uv_buf_init(const_cast<char*>(answer.data()), static_cast<unsigned>(answer.size()));
    uv_try_write(client->stream->stream(), &buf, 1);
  }
  client->hello_timer.close();
  if (client->stream) {
    client->stream->close();
    client->stream.reset();
  }
  count_disconnect(reason);
  client_log_.log(uv_now(loop_),
                  reason == DisconnectReason::peer_closed ? LogLevel::info : LogLevel::warn,
                  {"output", name()}, disconnections, "output {}: client {} disconnected: {} ({})",
                  name(), client->peer, to_string(reason), why);
  end_client(client);
}

bool ServerSink::admit_token(Client* client, std::string_view token) {
  if (config_.tokens_sha256.empty()) return true;
  std::string hash = token.empty() ? std::string() : sha256_hex(token);
  if (!hash_allowed(hash, config_.tokens_sha256)) {
    listener_.count_tls_refusal(TlsFailure::token);
    return false;
  }
  client->token_hash = std::move(hash);
  return true;
}

bool ServerSink::updatable_to(const OutputConfig& next) const {
  if (config_.tokens_sha256.empty() || next.tokens_sha256.empty()) return false;
  OutputConfig same_tokens = next;
  same_tokens.tokens_sha256 = config_.tokens_sha256;
  return same_tokens == config_;
}

void ServerSink::update(const OutputConfig& next) {
  config_ = next;
  // Clients still sending their request are checked against the new list
  // when it comes.
  size_t closed = 0;
  for (auto& client : clients_) {
    if (client->done || client->token_hash.empty() ||
        hash_allowed(client->token_hash, config_.tokens_sha256)) {
      continue;
    }
    ++closed;
    listener_.count_tls_refusal(TlsFailure::token);
    if (client->writer) client->writer->close();
    count_disconnect(DisconnectReason::token);
    client_log_.log(uv_now(loop_), LogLevel::warn, {"output", name()}, disconnections,
                    "output {}: client {} disconnected: token (its token was removed)", name(),
                    client->peer);
    end_client(client.get());
  }
  log::info("output {}: token list changed, applied in place; {} clients closed", name(), closed);
}

std::string ServerSink::cors_headers(const std::string& origin) const {
  if (config_.allow_origin.empty()) return {};
  if (config_.allow_origin == "*") return "Access-Control-Allow-Origin: *\r\n";
  if (origin != config_.allow_origin) return {};
  return fmt::format("Access-Control-Allow-Origin: {}\r\nVary: Origin\r\n", origin);
}

std::string ServerSink::http_response(int status, std::string_view body,
                                      const std::string& origin) const {
  return fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}{}Connection: "
      "close\r\n\r\n{}",
      status, http_reason(status),
      body.starts_with("{") ? "application/json" : "text/plain; charset=utf-8", body.size(),
      http_status_headers(status), cors_headers(origin), body);
}

std::string ServerSink::http_stream_head(std::string_view content_type,
                                         const std::string& origin) const {
  return fmt::format(
      "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nTransfer-Encoding: chunked\r\nCache-Control: "
      "no-cache\r\nX-Accel-Buffering: no\r\n{}Connection: close\r\n\r\n",
      content_type, cors_headers(origin));
}

OutputLog::ConsumerOptions ServerSink::consumer_options() const {
  OutputLog::ConsumerOptions options;
  if (config_.slow_client == SlowClientPolicy::block) {
    options.policy = ConsumerPolicy::block;
    options.max_buffer = config_.max_buffer.value_or(SIZE_MAX);
  } else {
    options.policy = ConsumerPolicy::disconnect;
    // Unset: bound by the retained window alone.
    options.max_buffer = config_.max_buffer.value_or(SIZE_MAX);
  }
  options.heartbeats = config_.heartbeats.has_value();
  return options;
}

void ServerSink::accept_failed(int error, uint64_t count) {
  refusal_log_.log(uv_now(loop_), LogLevel::warn, {"output", name()}, accept_failures,
                   "output {}: cannot accept clients: {}{}", name(), uv_error_text(error),
                   accept_loss_text(count));
  schedule_summary();
}

void ServerSink::schedule_summary() {
  std::optional<uint64_t> due = refusal_log_.summary_due();
  if (std::optional<uint64_t> other = client_log_.summary_due()) {
    due = due ? std::min(*due, *other) : other;
  }
  if (!due || !summary_timer_.open()) return;
  const uint64_t now = uv_now(loop_);
  uv_timer_start(
      summary_timer_.get(),
      [](uv_timer_t* timer) {
        auto* self = static_cast<ServerSink*>(timer->data);
        if (self == nullptr) return;
        self->refusal_log_.flush(uv_now(self->loop_));
        self->client_log_.flush(uv_now(self->loop_));
        self->schedule_summary();
      },
      *due > now ? *due - now : 0, 0);
}

void ServerSink::client_done(Client* client, StreamWriter::Outcome outcome,
                             const std::string& reason) {
  if (client->done) return;
  using Outcome = StreamWriter::Outcome;
  if (outcome == Outcome::finished) {
    client_log_.log(uv_now(loop_), LogLevel::info, {"output", name()}, disconnections,
                    "output {}: client {} finished", name(), client->peer);
  } else {
    DisconnectReason why = outcome == Outcome::peer_closed ? DisconnectReason::peer_closed
                           : outcome == Outcome::stalled   ? DisconnectReason::stalled
                           : outcome == Outcome::failed    ? DisconnectReason::write_failed
                           : outcome == Outcome::too_slow  ? DisconnectReason::too_slow
                                                           : DisconnectReason::out_of_window;
    count_disconnect(why);
    // A client that closes is its own business; the daemon dropping one is
    // worth a warning.
    client_log_.log(
        uv_now(loop_), why == DisconnectReason::peer_closed ? LogLevel::info : LogLevel::warn,
        {"output", name()}, disconnections, "output {}: client {} disconnected: {} ({})", name(),
        client->peer, to_string(why), reason);
  }
  end_client(client);
}

void ServerSink::end_client(Client* client) {
  client->done = true;
  --counters_.clients;
  schedule_summary();
  // The client is inside its own callback: free it from the idle handle.
  if (reaper_.open()) {
    uv_idle_start(reaper_.get(), [](uv_idle_t* idle) {
      if (auto* self = static_cast<ServerSink*>(idle->data)) self->reap();
    });
  }
  check_finished();
}

void ServerSink::count_disconnect(DisconnectReason reason) {
  ++counters_.disconnects;
  ++counters_.disconnects_by[static_cast<size_t>(reason)];
}

void ServerSink::reap() {
  uv_idle_stop(reaper_.get());
  for (auto it = clients_.begin(); it != clients_.end();) {
    if ((*it)->done) {
      if ((*it)->writer) {
        bytes_of_gone_clients_ += (*it)->writer->bytes_written();
        held_ms_of_gone_clients_ += (*it)->writer->held_ms();
      }
      it = clients_.erase(it);
    } else {
      ++it;
    }
  }
}

void ServerSink::check_finished() {
  if (finished_ || !output_.ended() || counters_.clients > 0) return;
  finished_ = true;
  listener_.close();
  if (changed_) changed_();
}

void ServerSink::close() {
  if (closed_) return;
  closed_ = true;
  listener_.close();
  reaper_.close();
  summary_timer_.close();
  for (auto& client : clients_) {
    client->hello_timer.close();
    if (client->stream) client->stream->close();
    if (client->writer) client->writer->close();
  }
}

SinkCounters ServerSink::counters() const {
  SinkCounters c = counters_;
  c.server = true;
  c.bytes_out = bytes_of_gone_clients_;
  c.held_ms = held_ms_of_gone_clients_;
  for (const auto& client : clients_) {
    if (!client->writer) continue;
    c.bytes_out += client->writer->bytes_written();
    c.held_ms += client->writer->held_ms();
    if (!client->done) {
      c.queue_bytes = std::max(c.queue_bytes, client->writer->lag());
      c.lag_sum += client->writer->lag();
    }
  }
  return c;
}

}  // namespace chronomerge
