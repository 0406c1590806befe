#include "uv/tls_bridge.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

#include "uv/uv_error.h"

namespace chronomerge {

std::string_view to_string(TlsFailure failure) {
  switch (failure) {
    case TlsFailure::handshake:
      return "handshake";
    case TlsFailure::cert:
      return "cert";
    case TlsFailure::token:
      return "token";
  }
  return "handshake";
}

namespace {

std::string subject_cn(X509* cert) {
  if (cert == nullptr) return {};
  char buf[256] = {};
  int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof(buf));
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

// The first DNS name among the certificate's subjectAltNames.
std::string first_dns_san(X509* cert) {
  if (cert == nullptr) return {};
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return {};
  std::string name;
  for (int i = 0; i < sk_GENERAL_NAME_num(names) && name.empty(); ++i) {
    const GENERAL_NAME* entry = sk_GENERAL_NAME_value(names, i);
    if (entry->type != GEN_DNS) continue;
    const ASN1_IA5STRING* dns = entry->d.dNSName;
    name.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)),
                static_cast<size_t>(ASN1_STRING_length(dns)));
  }
  GENERAL_NAMES_free(names);
  return name;
}

}  // namespace

TlsBridge::TlsBridge(uv_loop_t* loop, std::shared_ptr<const TlsContext> context,
                     Established established, Failed failed)
    : loop_(loop),
      context_(std::move(context)),
      established_(std::move(established)),
      failed_(std::move(failed)),
      outer_write_([this](std::string&, ssize_t status) {
        if (state_ == State::done) return;
        if (status < 0) {
          // The network is gone: nothing more can be said to the peer.
          peer_closed_ = true;
          to_outer_.clear();
          finish(true);
          return;
        }
        flush_outer();
        update_reading();
        check_done();
      }),
      inner_write_([this](std::string&, ssize_t status) {
        if (state_ == State::done) return;
        if (status < 0) {
          owner_closed_ = true;  // its reader closed the plaintext end
          to_inner_.clear();
          SSL_shutdown(ssl_);
          flush_outer();
          finish(false);
          return;
        }
        pump();  // first what OpenSSL holds: no socket event will bring it
        check_done();
      }) {}

TlsBridge::~TlsBridge() {
  outer_.close();
  inner_.close();
  if (ssl_ != nullptr) SSL_free(ssl_);  // frees its BIOs
}

int TlsBridge::start(uv_os_sock_t socket, const std::string& host) {
  int rc = uv_tcp_init(loop_, &outer_.get()->tcp);
  if (rc < 0) {
    ::close(socket);
    state_ = State::done;
    return rc;
  }
  outer_.initialized(this);
  rc = uv_tcp_open(&outer_.get()->tcp, socket);
  if (rc < 0) {
    ::close(socket);
    state_ = State::done;
    return rc;
  }
  outer_open_ = true;
  uv_tcp_nodelay(&outer_.get()->tcp, 1);
  ssl_ = context_->new_connection(host);
  network_in_ = BIO_new(BIO_s_mem());
  network_out_ = BIO_new(BIO_s_mem());
  if (ssl_ == nullptr || network_in_ == nullptr || network_out_ == nullptr) {
    if (ssl_ == nullptr) {
      BIO_free(network_in_);
      BIO_free(network_out_);
    }
    ERR_clear_error();
    finish(true);
    return UV_ENOMEM;
  }
  // A read of an empty input is "want more", not end of file.
  BIO_set_mem_eof_return(network_in_, -1);
  SSL_set_bio(ssl_, network_in_, network_out_);
  if (context_->role() == TlsContext::Role::server) {
    SSL_set_accept_state(ssl_);
  } else {
    SSL_set_connect_state(ssl_);
    handshake();  // the client speaks first
  }
  update_reading();
  return 0;
}

void TlsBridge::on_alloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
  auto* self = static_cast<TlsBridge*>(handle->data);
  if (self == nullptr) {
    *buf = uv_buf_init(nullptr, 0);
    return;
  }
  *buf = uv_buf_init(self->buffer_, sizeof(self->buffer_));
}

void TlsBridge::on_outer_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  if (auto* self = static_cast<TlsBridge*>(stream->data)) self->outer_read(nread, buf);
}

void TlsBridge::on_inner_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  if (auto* self = static_cast<TlsBridge*>(stream->data)) self->inner_read(nread, buf);
}

void TlsBridge::outer_read(ssize_t nread, const uv_buf_t* buf) {
  if (nread == 0 || state_ == State::done) return;
  if (nread < 0) {
    peer_closed_ = true;
    if (state_ == State::handshake) {
      fail(TlsFailure::handshake, nread == UV_EOF ? std::string("closed during the handshake")
                                                  : uv_error_text(static_cast<int>(nread)));
      return;
    }
    pump();
    return;
  }
  BIO_write(network_in_, buf->base, static_cast<int>(nread));
  if (state_ == State::handshake) {
    if (pace_ && !pace_()) {
      postponed_ = true;
      update_reading();
      return;
    }
    handshake();
  } else {
    pump();
  }
}

void TlsBridge::resume_handshake() {
  if (!postponed_) return;
  postponed_ = false;
  if (state_ == State::handshake) handshake();
  if (state_ != State::done) update_reading();
}

void TlsBridge::handshake() {
  ERR_clear_error();
  const int rc = SSL_do_handshake(ssl_);
  if (rc == 1) {
    flush_outer();
    if (!open_plaintext()) {
      fail(TlsFailure::handshake, "cannot open the plaintext side: " + uv_error_text(-errno));
      return;
    }
    state_ = State::open;
    TlsPeer peer;
    X509* cert = SSL_get1_peer_certificate(ssl_);
    peer.cert_cn = subject_cn(cert);
    peer.cert_san = first_dns_san(cert);
    X509_free(cert);
    peer.version = SSL_get_version(ssl_);
    peer.cipher = SSL_get_cipher_name(ssl_);
    // open_plaintext() made the pair; the owner's end goes out here.
    const int owner_end = owner_end_;
    owner_end_ = -1;
    established_(owner_end, peer);
    if (state_ == State::open) pump();  // records that came with the handshake
    return;
  }
  const int error = SSL_get_error(ssl_, rc);
  flush_outer();  // the next flight, or an alert
  if (error == SSL_ERROR_WANT_READ) {
    update_reading();
    return;
  }
  const long verify = SSL_get_verify_result(ssl_);
  const unsigned long first = ERR_peek_error();
  const int reason = ERR_GET_REASON(first);
  std::string detail = openssl_error_text("the peer closed the handshake");
  if (verify != X509_V_OK) {
    fail(TlsFailure::cert, fmt::format("{} ({})", X509_verify_cert_error_string(verify), detail));
  } else if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE ||
             reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
    fail(TlsFailure::cert, detail);
  } else {
    fail(TlsFailure::handshake, detail);
  }
}

bool TlsBridge::open_plaintext() {
  int sockets[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sockets) != 0) {
    return false;
  }
  if (uv_pipe_init(loop_, &inner_.get()->pipe, 0) != 0) {
    ::close(sockets[0]);
    ::close(sockets[1]);
    return false;
  }
  inner_.initialized(this);
  if (uv_pipe_open(&inner_.get()->pipe, sockets[0]) != 0) {
    ::close(sockets[0]);
    ::close(sockets[1]);
    return false;
  }
  inner_open_ = true;
  owner_end_ = sockets[1];
  return true;
}

void TlsBridge::inner_read(ssize_t nread, const uv_buf_t* buf) {
  if (nread == 0 || state_ == State::done) return;
  if (nread < 0) {
    // The owner closed its end: say goodbye to the peer, then close.
    owner_closed_ = true;
    to_inner_.clear();
    SSL_shutdown(ssl_);
    flush_outer();
    finish(false);
    return;
  }
  ERR_clear_error();
  if (SSL_write(ssl_, buf->base, static_cast<int>(nread)) <= 0) {
    ERR_clear_error();
    finish(true);
    return;
  }
  flush_outer();
  update_reading();
}

void TlsBridge::pump() {
  if (state_ != State::open && state_ != State::closing) return;
  bool drained = false;  // OpenSSL holds nothing more to decrypt now
  while (!owner_closed_) {
    const size_t ahead =
        to_inner_.size() + (inner_write_.pending() ? inner_write_.payload().size() : 0);
    if (ahead >= window) break;
    ERR_clear_error();
    const int n = SSL_read(ssl_, buffer_, sizeof(buffer_));
    if (n > 0) {
      to_inner_.append(buffer_, static_cast<size_t>(n));
      continue;
    }
    const int error = SSL_get_error(ssl_, n);
    drained = true;
    if (error != SSL_ERROR_WANT_READ) peer_closed_ = true;  // close_notify, or broken
    ERR_clear_error();
    break;
  }
  flush_outer();
  flush_inner();
  update_reading();
  if (peer_closed_ && (drained || owner_closed_)) finish(false);
  check_done();
}

void TlsBridge::flush_outer() {
  if (!outer_open_) return;
  char chunk[16 << 10];
  while (BIO_ctrl_pending(network_out_) > 0) {
    const int n = BIO_read(network_out_, chunk, sizeof(chunk));
    if (n <= 0) break;
    to_outer_.append(chunk, static_cast<size_t>(n));
  }
  if (!outer_write_.pending() && !to_outer_.empty()) start_write(outer_, outer_write_, to_outer_);
}

void TlsBridge::flush_inner() {
  if (!inner_open_ || owner_closed_) return;
  if (!inner_write_.pending() && !to_inner_.empty()) start_write(inner_, inner_write_, to_inner_);
}

void TlsBridge::start_write(UvHandle<AnyStream>& stream, Write& write, std::string& pending) {
  std::string data = std::move(pending);
  pending.clear();
  const int rc = write.start(std::move(data), [&](uv_write_t* req, uv_write_cb callback) {
    uv_buf_t buf =
        uv_buf_init(write.payload().data(), static_cast<unsigned>(write.payload().size()));
    return uv_write(req, stream.stream(), &buf, 1, callback);
  });
  if (rc < 0) finish(true);
}

void TlsBridge::update_reading() {
  const bool handshaking = state_ == State::handshake;
  const size_t to_inner =
      to_inner_.size() + (inner_write_.pending() ? inner_write_.payload().size() : 0);
  const size_t to_outer =
      to_outer_.size() + (outer_write_.pending() ? outer_write_.payload().size() : 0);
  const bool outer = outer_open_ && !peer_closed_ && !owner_closed_ && !postponed_ &&
                     (handshaking || (state_ == State::open && to_inner < window));
  const bool inner = inner_open_ && !owner_closed_ && state_ == State::open && to_outer < window;
  if (outer != outer_reading_) {
    outer_reading_ = outer;
    if (outer) {
      if (uv_read_start(outer_.stream(), on_alloc, on_outer_read) != 0) outer_reading_ = false;
    } else {
      uv_read_stop(outer_.stream());
    }
  }
  if (inner != inner_reading_) {
    inner_reading_ = inner;
    if (inner) {
      if (uv_read_start(inner_.stream(), on_alloc, on_inner_read) != 0) inner_reading_ = false;
    } else {
      uv_read_stop(inner_.stream());
    }
  }
}

bool TlsBridge::recheck(const TlsContext& context) {
  if (state_ != State::open || context.accepts_peer_of(ssl_)) return true;
  finish(true);
  return false;
}

void TlsBridge::time_out() {
  if (state_ != State::handshake) return;
  fail(TlsFailure::handshake, "no handshake within the timeout");
}

void TlsBridge::fail(TlsFailure failure, const std::string& detail) {
  state_ = State::closing;
  if (failed_) failed_(failure, detail);
  finish(false);  // the alert, if any, goes first
}

void TlsBridge::finish(bool now) {
  if (state_ == State::done) return;
  state_ = State::closing;
  if (now) {
    to_outer_.clear();
    to_inner_.clear();
    outer_.close();
    inner_.close();
    outer_open_ = inner_open_ = false;
    outer_reading_ = inner_reading_ = false;
    if (owner_end_ >= 0) {
      ::close(owner_end_);
      owner_end_ = -1;
    }
    state_ = State::done;
    return;
  }
  update_reading();
  check_done();
}

// Closing: each side closes once what is due to it is written (the
// plaintext its reader has yet to get, the peer's close_notify).
void TlsBridge::check_done() {
  if (state_ != State::closing) return;
  if (inner_open_ && (owner_closed_ || (!inner_write_.pending() && to_inner_.empty()))) {
    // Once the peer is gone and its plaintext delivered: the reader sees
    // the end after what is already in its socket.
    if (owner_closed_ || peer_closed_) {
      inner_.close();
      inner_open_ = false;
      inner_reading_ = false;
    }
  }
  if (outer_open_ && !outer_write_.pending() && to_outer_.empty() &&
      (!inner_open_ || owner_closed_)) {
    outer_.close();
    outer_open_ = false;
    outer_reading_ = false;
  }
  if (!outer_open_ && !inner_open_) {
    if (owner_end_ >= 0) {
      ::close(owner_end_);
      owner_end_ = -1;
    }
    state_ = State::done;
  }
}

}  // namespace chronomerge
