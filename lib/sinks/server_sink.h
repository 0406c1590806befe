// ServerSink: tcp-listen, unix-listen and http-listen outputs. Each client reads the
// retained output log through its own StreamWriter (one cursor per
// client): from the moment it connects or, with `resume`, from where its
// first line asks (see resume_request.h); the answer line comes first:
// {"run": R, "offset": N, "oldest": O}, or {"error": ...} and the close.
//
// slow_client "block": the slowest client governs (lossless); a client
// whose write has not completed for stall_timeout_ms is disconnected.
// "disconnect" (the default): a client more than max_buffer behind, or
// out of the retained window, is disconnected; the others keep full speed.
//
// http-listen: GET /stream with the same request in its query string
// (after=R:N, since=K, skip=n, feeds=a,b, on_gap=...) answers chunked
// NDJSON, the answer object first; with Accept: text/event-stream it
// answers Server-Sent Events, one record per event with `id: R:N`, and
// resumes exactly from Last-Event-ID (on a gap: `event: gap`, then the
// oldest record on). Over max_clients, a new
// client is accepted and closed at once. Refusals, disconnects (each with its reason) and failures
// to accept (out of descriptors: counted by reason in accept_errors()) are counted and logged
// rate-limited, so a flood of clients cannot flood the log.
#pragma once

#include <uv.h>

#include <list>
#include <memory>
#include <string>

#include "log/log.h"
#include "output/output_log.h"
#include "output/resume_request.h"
#include "sinks/sink.h"
#include "sinks/stream_writer.h"
#include "uv/any_stream.h"
#include "uv/listener.h"
#include "uv/uv_handle.h"

namespace chronomerge {

class ServerSink final : public Sink {
 public:
  ServerSink(uv_loop_t* loop, OutputLog& output, OutputConfig config,
             std::function<void()> changed);
  ~ServerSink() override;

  bool start() override;
  void close() override;
  bool finished() const override {
    return finished_ || (output_.ended() && counters_.clients == 0);
  }
  SinkCounters counters() const override;
  void reload_tls() override;
  // A new token list (when the old one and the new one both have tokens)
  // applies in place: clients whose token is no longer listed are
  // disconnected (reason token), the others stay.
  bool updatable_to(const OutputConfig& next) const override;
  void update(const OutputConfig& next) override;
  const std::string& address() const { return address_; }
  const AcceptErrors& accept_errors() const { return listener_.errors(); }
  // Null unless it listens with TLS.
  const TlsCounters* tls_counters() const { return listener_.tls_counters(); }

 private:
  struct Client;
  void accepted(uv_os_sock_t socket, const AcceptedPeer& peer);
  void accept_failed(int error, uint64_t connections);
  // Arms the timer that writes the rate limiters' summaries on time.
  void schedule_summary();
  // How a client asked, and so how it is answered.
  enum class Protocol {
    line,    // tcp/unix with resume: a JSON request line, a JSON answer line
    ndjson,  // http-listen: GET /stream?..., chunked NDJSON
    events,  // http-listen with Accept: text/event-stream
  };
  void start_writer(Client* client, std::unique_ptr<UvHandle<AnyStream>> stream,
                    OutputLog::ConsumerOptions options, std::string preamble,
                    WriteBatch::Framing framing = WriteBatch::Framing::raw);
  void read_request(Client* client, std::unique_ptr<UvHandle<AnyStream>> stream);
  void request_read(Client* client);
  void request_head_read(Client* client);
  void serve(Client* client, const ResumeRequest& request, Protocol protocol,
             const std::string& origin);
  std::string cors_headers(const std::string& origin) const;
  std::string http_response(int status, std::string_view body, const std::string& origin) const;
  std::string http_stream_head(std::string_view content_type, const std::string& origin) const;
  void refuse(Client* client, DisconnectReason reason, const std::string& why,
              const std::string& answer);
  // The token check of a request: true if `token` is listed (the client
  // keeps its hash); otherwise counts the refusal.
  bool admit_token(Client* client, std::string_view token);
  void client_done(Client* client, StreamWriter::Outcome outcome, const std::string& reason);
  void end_client(Client* client);
  void count_disconnect(DisconnectReason reason);
  OutputLog::ConsumerOptions consumer_options() const;
  void reap();
  void check_finished();

  uv_loop_t* loop_;
  OutputLog& output_;
  std::function<void()> changed_;
  Listener listener_;
  UvHandle<uv_idle_t> reaper_;  // frees finished clients outside their callbacks
  std::list<std::unique_ptr<Client>> clients_;
  std::string address_;
  uint64_t next_client_id_ = 1;
  SinkCounters counters_;
  uint64_t bytes_of_gone_clients_ = 0;
  uint64_t held_ms_of_gone_clients_ = 0;
  log::RateLimiter refusal_log_;  // refusals and accept failures
  log::RateLimiter client_log_;   // connects, finishes and disconnects
  UvHandle<uv_timer_t> summary_timer_;
  const bool http_;  // http-listen
  bool finished_ = false;
  bool closed_ = false;
};

}  // namespace chronomerge
