// TlsBridge: one TLS connection, terminated on the loop thread through
// OpenSSL memory BIOs, and handed on as a plaintext stream.
//
// The bridge owns the network socket (ciphertext) and one end of a
// socketpair (plaintext); once the handshake is done and the peer
// verified, the other end goes to the bridge's owner, which reads and
// writes it like any accepted connection. So feeds, outputs and the
// metrics server speak TLS without a line of TLS in them, and each keeps
// its own backpressure: the bridge writes at most `window` plaintext bytes
// ahead of its reader and stops reading the network beyond that (the
// producer's TCP window closes as it would without TLS), and when its
// reader has taken them it first decrypts what OpenSSL already holds — no
// socket event comes for those bytes — before it reads the network again.
// The other direction is bounded the same way.
//
// No blocking calls, no threads. Every handle has one owner (the bridge)
// and writes are UvRequests, so the bridge may be destroyed at any time;
// its owner learns that it is finished (done()) and destroys it from its
// own timer or callback, never inside the bridge's.
//
// Loop thread only.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "net/tls_context.h"
#include "uv/any_stream.h"
#include "uv/uv_handle.h"
#include "uv/uv_request.h"

struct bio_st;

namespace chronomerge {

// Why a TLS connection did not come up.
enum class TlsFailure {
  handshake,  // not TLS, a protocol error, no common version, a timeout
  cert,       // the peer's certificate is missing, expired, or not from the CA
  token,      // (after the handshake) the owner found no valid token
};
std::string_view to_string(TlsFailure failure);

// Who the peer proved to be.
struct TlsPeer {
  std::string cert_cn;   // subject CN of its verified certificate; empty if none
  std::string cert_san;  // its first DNS subjectAltName; empty if none
  std::string version;   // "TLSv1.3"
  std::string cipher;
};

class TlsBridge {
 public:
  // The handshake succeeded: `plaintext` is the owner's end of the
  // connection (an AF_UNIX stream socket, non-blocking, close-on-exec),
  // now the owner's to open (open_accepted()) or close.
  using Established = std::function<void(uv_os_sock_t plaintext, const TlsPeer& peer)>;
  // The handshake failed; the bridge is done.
  using Failed = std::function<void(TlsFailure failure, const std::string& detail)>;

  // Plaintext written ahead of the reader (each way), at most.
  static constexpr size_t window = 64 << 10;

  TlsBridge(uv_loop_t* loop, std::shared_ptr<const TlsContext> context, Established established,
            Failed failed);
  ~TlsBridge();
  TlsBridge(const TlsBridge&) = delete;
  TlsBridge& operator=(const TlsBridge&) = delete;

  // Asked before each handshake step a read brings (a step can cost a
  // millisecond of CPU): false postpones it, and the bridge stops reading
  // until resume_handshake(). Unset: every step runs at once.
  using Pace = std::function<bool()>;
  void set_pace(Pace pace) { pace_ = std::move(pace); }
  // Runs a postponed handshake step.
  void resume_handshake();

  // Takes a connected TCP socket (closed on failure) and starts the
  // handshake: as the server, or as a client verifying `host` (unless the
  // context names another server_name). 0 or a libuv error.
  int start(uv_os_sock_t socket, const std::string& host = {});
  // The handshake has not finished (or failed) yet.
  bool handshaking() const { return state_ == State::handshake; }
  // Fails a handshake still in progress (its deadline passed).
  void time_out();
  // A reload brought new CA or CRL material: an open connection whose
  // peer `context` no longer accepts is closed at once (false).
  bool recheck(const TlsContext& context);
  // Both sides closed: the owner may destroy the bridge.
  bool done() const { return state_ == State::done; }

 private:
  enum class State { handshake, open, closing, done };
  using Write = UvRequest<uv_write_t, std::string>;

  static void on_alloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf);
  static void on_outer_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void on_inner_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  void outer_read(ssize_t nread, const uv_buf_t* buf);
  void inner_read(ssize_t nread, const uv_buf_t* buf);
  void handshake();
  bool open_plaintext();
  // Decrypts what OpenSSL holds, up to the window; sends what is due; reads
  // again where the window allows.
  void pump();
  void flush_outer();
  void flush_inner();
  void start_write(UvHandle<AnyStream>& stream, Write& write, std::string& pending);
  void update_reading();
  void fail(TlsFailure failure, const std::string& detail);
  // Closes both sides once what is due is written; `now`: at once.
  void finish(bool now);
  void check_done();

  uv_loop_t* loop_;
  std::shared_ptr<const TlsContext> context_;
  Established established_;
  Failed failed_;
  Pace pace_;
  bool postponed_ = false;  // a handshake step waits for resume_handshake()
  State state_ = State::handshake;
  ::ssl_st* ssl_ = nullptr;
  ::bio_st* network_in_ = nullptr;   // ciphertext from the peer (owned by ssl_)
  ::bio_st* network_out_ = nullptr;  // ciphertext to the peer (owned by ssl_)
  UvHandle<AnyStream> outer_;        // the network
  UvHandle<AnyStream> inner_;        // the bridge's end of the socketpair
  bool outer_open_ = false, inner_open_ = false;
  bool outer_reading_ = false, inner_reading_ = false;
  int owner_end_ = -1;               // the owner's end of the socketpair, until handed over
  bool peer_closed_ = false;         // EOF, close_notify or an error on the network
  bool owner_closed_ = false;        // EOF on the plaintext side
  std::string to_outer_, to_inner_;  // waiting for the write in flight
  Write outer_write_;
  Write inner_write_;
  char buffer_[16 << 10];
};

}  // namespace chronomerge
