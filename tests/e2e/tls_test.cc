// End to end: TLS on every network port. Producers, clients, fleet members
// and metrics scrapers talk to the daemon over TLS (a small OpenSSL client
// below, and `openssl s_client` as a third party), and a tcp-connect feed
// reaches a TLS upstream, with certificates made by the `openssl` command
// line at test time. The cases check that TLS changes no byte of the
// merged stream, that fleet members are named by their client
// certificate, that every connection the daemon refuses is counted while
// the others are served, that handshakes beyond max_handshakes wait, that
// backpressure holds over TLS, and that bad key files are reported by
// --check-config.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "harness.h"

extern char** environ;

using namespace chronomerge::e2e;
using nlohmann::json;

namespace {

// A generous bound for what a test waits on: the sanitized daemon is about
// three times slower, and the machine may be shared.
constexpr Millis read_timeout = sanitized ? 120s : 40s;

// Milliseconds left until `deadline` (0 once it passed), for poll().
int left_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left, 1 << 30));
}

// Single quotes for /bin/sh.
std::string shell_quoted(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// --- certificates -----------------------------------------------------------

// A certificate and its key (PEM files, the key mode 600).
struct KeyPair {
  std::string crt;
  std::string key;
};

// Everything the cases need, made once per run of the test binary with the
// openssl command line (ECDSA P-256 keys: handshakes take a millisecond)
// into a directory that lives as long as the process.
struct Certs {
  Certs();

  TempDir dir;
  std::string ca;    // the CA the daemon and the clients trust
  KeyPair server;    // CN=localhost, SAN DNS:localhost, IP:127.0.0.1, 365 days
  KeyPair bus1;      // client certificates signed by the CA
  KeyPair bus2;      //
  KeyPair bus7;      // CN=bus-7-cn, SAN DNS:bus-7, DNS:bus-7.example
  KeyPair expired;   // CN=bus-9, signed by the CA, valid for one day in 2020
  KeyPair stranger;  // CN=bus-1, signed by another CA
  std::string other_ca;

 private:
  void openssl(const std::string& args) const;
  std::string new_key(const std::string& name) const;
  std::string request(const std::string& name, const std::string& cn) const;
  KeyPair sign(const std::string& name, const std::string& cn, const std::string& extensions,
               const std::string& ca_name) const;
  std::string config_;
};

Certs::Certs() {
  config_ = dir.write("openssl.cnf", R"([req]
distinguished_name = dn
[dn]
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
[client_san_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = DNS:bus-7, DNS:bus-7.example
[ca]
default_ca = test_ca
[test_ca]
database = )" + dir / "index.txt" + R"(
serial = )" + dir / "serial" + R"(
new_certs_dir = )" + dir.path() + R"(
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
)");
  for (const char* name : {"ca", "other-ca"}) {
    const std::string key = new_key(name);
    openssl("req -x509 -new -config " + shell_quoted(config_) + " -extensions ca_ext -key " +
            shell_quoted(key) + " -subj /CN=chronomerge-test-" + name + " -days 3650 -out " +
            shell_quoted(dir / (std::string(name) + ".crt")));
  }
  ca = dir / "ca.crt";
  other_ca = dir / "other-ca.crt";
  server = sign("server", "localhost", "server_ext", "ca");
  bus1 = sign("bus-1", "bus-1", "client_ext", "ca");
  bus2 = sign("bus-2", "bus-2", "client_ext", "ca");
  bus7 = sign("bus-7", "bus-7-cn", "client_san_ext", "ca");
  stranger = sign("stranger", "bus-1", "client_ext", "other-ca");

  // `openssl x509 -req` (3.0) takes no start date: `openssl ca` does, with
  // its index and serial files.
  write_file(dir / "index.txt", "");
  write_file(dir / "serial", "1000\n");
  expired = {dir / "expired.crt", new_key("expired")};
  openssl("ca -batch -notext -config " + shell_quoted(config_) + " -cert " + shell_quoted(ca) +
          " -keyfile " + shell_quoted(dir / "ca.key") + " -in " +
          shell_quoted(request("expired", "bus-9")) +
          " -startdate 20200101000000Z -enddate 20200102000000Z -extfile " + shell_quoted(config_) +
          " -extensions client_ext -out " + shell_quoted(expired.crt));
}

void Certs::openssl(const std::string& args) const {
  const std::string log = dir / "openssl.log";
  const int status = std::system(("openssl " + args + " >>" + shell_quoted(log) + " 2>&1").c_str());
  REQUIRE_MESSAGE(status == 0, "openssl " << args << " failed (" << status << "):\n"
                                          << read_file(log));
}

std::string Certs::new_key(const std::string& name) const {
  const std::string path = dir / (name + ".key");
  openssl("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out " + shell_quoted(path));
  REQUIRE(::chmod(path.c_str(), 0600) == 0);
  return path;
}

std::string Certs::request(const std::string& name, const std::string& cn) const {
  const std::string path = dir / (name + ".csr");
  openssl("req -new -config " + shell_quoted(config_) + " -key " +
          shell_quoted(dir / (name + ".key")) + " -subj /CN=" + cn + " -out " + shell_quoted(path));
  return path;
}

KeyPair Certs::sign(const std::string& name, const std::string& cn, const std::string& extensions,
                    const std::string& ca_name) const {
  static int serial = 1;
  KeyPair pair{dir / (name + ".crt"), new_key(name)};
  openssl("x509 -req -in " + shell_quoted(request(name, cn)) + " -CA " +
          shell_quoted(dir / (ca_name + ".crt")) + " -CAkey " +
          shell_quoted(dir / (ca_name + ".key")) + " -set_serial " + std::to_string(++serial) +
          " -days 365 -extfile " + shell_quoted(config_) + " -extensions " + extensions + " -out " +
          shell_quoted(pair.crt));
  return pair;
}

const Certs& certs() {
  static const Certs made;
  return made;
}

// --- a TLS client -----------------------------------------------------------

// What OpenSSL queued on this thread, as text (the queue is emptied).
std::string openssl_errors() {
  std::string text;
  while (unsigned long code = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof(buf));
    if (!text.empty()) text += "; ";
    text += buf;
  }
  return text;
}

struct TlsOptions {
  // The server must present a certificate for `server_name` from this CA
  // (the test CA if empty).
  std::string ca;
  std::string server_name = "localhost";
  // A client certificate, if any.
  std::optional<KeyPair> cert;
  // TLS1_2_VERSION to keep below TLS 1.3; 0: the newest both speak.
  int max_version = 0;
  // SO_RCVBUF / SO_SNDBUF of the socket if above 0: a small receive
  // buffer makes a slow reader's window small.
  int rcvbuf = 0;
  int sndbuf = 0;
};

TlsOptions client_cert(const KeyPair& cert) {
  TlsOptions options;
  options.cert = cert;
  return options;
}

// A blocking TLS client (or, for an upstream, server) over a harness
// Socket. OpenSSL reads and writes memory buffers; this class moves their
// bytes over the (non-blocking) socket with send(MSG_NOSIGNAL) and recv,
// waiting with poll, so every call has a deadline and a peer's reset never
// raises SIGPIPE. No doctest assertions inside: a producer thread may own
// one.
class TlsSocket {
 public:
  TlsSocket() = default;
  TlsSocket(TlsSocket&&) = default;
  TlsSocket& operator=(TlsSocket&&) = default;

  // Takes over the connected `socket` and runs the client handshake. False
  // (and error() says why) if it failed or `timeout` passed. Under TLS 1.3
  // the client is done before the server has checked its certificate: a
  // refusal then shows on the first read.
  bool handshake(Socket socket, const TlsOptions& options, Millis timeout = 5s);
  // The server side, with `cert`, for a connection the daemon made; asks
  // for a client certificate from the test CA (and accepts none).
  bool accept(Socket socket, const KeyPair& cert, Millis timeout = 5s);
  // The subject CN of the certificate the peer presented, if any.
  std::string peer_cn() const;

  // Writes everything (whole TLS records of at most 16 KiB, each sent
  // before the next is made). False on error or when `timeout` passes.
  bool write_all(std::string_view data, Millis timeout = 10s);
  // Plaintext from the server: at most `max` bytes, if any within
  // `timeout` (0: only what is there now).
  ReadResult read_some(size_t max, Millis timeout);
  // Until `lines` newlines were read, the stream ended, or `timeout`.
  ReadResult read_lines(size_t lines, Millis timeout = 5s);
  ReadResult read_to_eof(Millis timeout = 10s);
  // close_notify, then close. What the server sent and nobody read (TLS
  // 1.3 session tickets) is read first: closing a socket with unread bytes
  // would reset the connection instead of ending it.
  void close();

  int fd() const { return socket_.fd(); }
  const std::string& error() const { return error_; }
  // The protocol the handshake agreed on ("TLSv1.3").
  std::string version() const { return ssl_ ? SSL_get_version(ssl_.get()) : ""; }

 private:
  enum class Io { ok, eof, error, timeout };
  // Calls `call` (an SSL function) until it returns above 0, sending what
  // OpenSSL wrote and feeding it what it wants to read.
  Io drive(const std::function<int()>& call, Clock::time_point deadline, int* result = nullptr);
  // Runs the handshake of the session made from ctx_.
  bool start(Socket socket, bool server, const std::string& server_name,
             Clock::time_point deadline);
  // Sends what OpenSSL wrote.
  Io flush(Clock::time_point deadline);
  // Receives once (waiting for it) and hands the bytes to OpenSSL.
  Io receive(Clock::time_point deadline);
  bool wait(short events, Clock::time_point deadline);
  // Reads plaintext until `done(new bytes)`, the end, or the deadline.
  ReadResult read_until(const std::function<bool(std::string_view)>& done, size_t max,
                        Millis timeout);

  struct CtxFree {
    void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
  };
  struct SslFree {
    void operator()(SSL* ssl) const { SSL_free(ssl); }
  };
  std::unique_ptr<SSL_CTX, CtxFree> ctx_;
  std::unique_ptr<SSL, SslFree> ssl_;
  BIO* in_ = nullptr;   // network -> OpenSSL (owned by ssl_)
  BIO* out_ = nullptr;  // OpenSSL -> network (owned by ssl_)
  Socket socket_;
  bool transport_eof_ = false;
  std::string error_;
};

bool TlsSocket::handshake(Socket socket, const TlsOptions& options, Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  ctx_.reset(SSL_CTX_new(TLS_client_method()));
  SSL_CTX* ctx = ctx_.get();
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if (options.max_version != 0) SSL_CTX_set_max_proto_version(ctx, options.max_version);
  // A server that closes without close_notify ends the stream (EOF), as a
  // plaintext one would.
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
  const std::string& ca = options.ca.empty() ? certs().ca : options.ca;
  if (SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1) {
    error_ = "cannot load " + ca + ": " + openssl_errors();
    return false;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (options.cert) {
    if (SSL_CTX_use_certificate_chain_file(ctx, options.cert->crt.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, options.cert->key.c_str(), SSL_FILETYPE_PEM) != 1) {
      error_ = "cannot load " + options.cert->crt + ": " + openssl_errors();
      return false;
    }
  }
  return start(std::move(socket), /*server=*/false, options.server_name, deadline);
}

bool TlsSocket::accept(Socket socket, const KeyPair& cert, Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  ctx_.reset(SSL_CTX_new(TLS_server_method()));
  SSL_CTX* ctx = ctx_.get();
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.crt.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, cert.key.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_load_verify_locations(ctx, certs().ca.c_str(), nullptr) != 1) {
    error_ = "cannot load " + cert.crt + ": " + openssl_errors();
    return false;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  return start(std::move(socket), /*server=*/true, "", deadline);
}

bool TlsSocket::start(Socket socket, bool server, const std::string& server_name,
                      Clock::time_point deadline) {
  socket_ = std::move(socket);
  socket_.set_nonblocking(true);
  ssl_.reset(SSL_new(ctx_.get()));
  in_ = BIO_new(BIO_s_mem());
  out_ = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl_.get(), in_, out_);
  if (server) {
    SSL_set_accept_state(ssl_.get());
  } else {
    SSL_set_tlsext_host_name(ssl_.get(), server_name.c_str());
    SSL_set1_host(ssl_.get(), server_name.c_str());
    SSL_set_connect_state(ssl_.get());
  }
  const Io io = drive([this] { return SSL_do_handshake(ssl_.get()); }, deadline);
  if (io == Io::ok) return true;
  if (io == Io::timeout) error_ = "handshake timed out";
  if (io == Io::eof) error_ = "closed by the peer during the handshake";
  const long verify = SSL_get_verify_result(ssl_.get());
  if (verify != X509_V_OK) {
    error_ += std::string(" (peer certificate: ") + X509_verify_cert_error_string(verify) + ")";
  }
  return false;
}

std::string TlsSocket::peer_cn() const {
  if (!ssl_) return "";
  X509* cert = SSL_get1_peer_certificate(ssl_.get());
  if (cert == nullptr) return "";
  char cn[256] = "";
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
  X509_free(cert);
  return cn;
}

bool TlsSocket::wait(short events, Clock::time_point deadline) {
  pollfd p{socket_.fd(), events, 0};
  while (true) {
    const int rc = ::poll(&p, 1, left_ms(deadline));
    if (rc > 0) return true;
    if (rc == 0) return false;
    if (errno != EINTR) return false;
  }
}

TlsSocket::Io TlsSocket::flush(Clock::time_point deadline) {
  char buf[16 << 10];
  while (BIO_ctrl_pending(out_) > 0) {
    const int n = BIO_read(out_, buf, sizeof(buf));
    if (n <= 0) break;
    std::string_view rest(buf, static_cast<size_t>(n));
    while (!rest.empty()) {
      const ssize_t sent = ::send(socket_.fd(), rest.data(), rest.size(), MSG_NOSIGNAL);
      if (sent > 0) {
        rest.remove_prefix(static_cast<size_t>(sent));
      } else if (sent < 0 && errno == EINTR) {
        continue;
      } else if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!wait(POLLOUT, deadline)) {
          error_ = "send timed out";
          return Io::timeout;
        }
      } else {
        error_ = std::string("send: ") + std::strerror(errno);
        return Io::error;
      }
    }
  }
  return Io::ok;
}

TlsSocket::Io TlsSocket::receive(Clock::time_point deadline) {
  if (transport_eof_) return Io::eof;
  char buf[16 << 10];
  while (true) {
    const ssize_t n = ::recv(socket_.fd(), buf, sizeof(buf), 0);
    if (n > 0) {
      BIO_write(in_, buf, static_cast<int>(n));
      return Io::ok;
    }
    if (n == 0) {
      // OpenSSL sees the end once it has read what came before.
      transport_eof_ = true;
      BIO_set_mem_eof_return(in_, 0);
      return Io::ok;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait(POLLIN, deadline)) return Io::timeout;
      continue;
    }
    error_ = std::string("recv: ") + std::strerror(errno);
    return Io::error;
  }
}

TlsSocket::Io TlsSocket::drive(const std::function<int()>& call, Clock::time_point deadline,
                               int* result) {
  if (!ssl_) {
    error_ = "no TLS session";
    return Io::error;
  }
  while (true) {
    ERR_clear_error();
    const int rc = call();
    const int code = rc > 0 ? SSL_ERROR_NONE : SSL_get_error(ssl_.get(), rc);
    const std::string errors = code == SSL_ERROR_NONE ? "" : openssl_errors();
    // Whatever OpenSSL wrote (a Finished, an alert, a record) goes out
    // first.
    const Io sent = flush(deadline);
    if (sent != Io::ok) return sent;
    if (rc > 0) {
      if (result != nullptr) *result = rc;
      return Io::ok;
    }
    if (code == SSL_ERROR_WANT_READ) {
      const Io in = receive(deadline);
      if (in != Io::ok) return in;
      continue;
    }
    if (code == SSL_ERROR_WANT_WRITE) continue;
    if (code == SSL_ERROR_ZERO_RETURN) return Io::eof;
    error_ = "SSL error " + std::to_string(code) + (errors.empty() ? "" : ": " + errors);
    return Io::error;
  }
}

bool TlsSocket::write_all(std::string_view data, Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!data.empty()) {
    const std::string_view chunk = data.substr(0, 16 << 10);
    int written = 0;
    if (drive([&] { return SSL_write(ssl_.get(), chunk.data(), static_cast<int>(chunk.size())); },
              deadline, &written) != Io::ok) {
      return false;
    }
    data.remove_prefix(static_cast<size_t>(written));
  }
  return true;
}

ReadResult TlsSocket::read_until(const std::function<bool(std::string_view)>& done, size_t max,
                                 Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  ReadResult result;
  std::string buf(std::min<size_t>(max, 64 << 10), '\0');
  while (true) {
    int n = 0;
    const Io io =
        drive([&] { return SSL_read(ssl_.get(), buf.data(), static_cast<int>(buf.size())); },
              deadline, &n);
    if (io == Io::eof) result.eof = true;
    if (io == Io::error) result.error = true;
    if (io != Io::ok) break;
    const std::string_view got(buf.data(), static_cast<size_t>(n));
    result.data += got;
    if (done(got)) break;
  }
  return result;
}

ReadResult TlsSocket::read_some(size_t max, Millis timeout) {
  return read_until([](std::string_view) { return true; }, max, timeout);
}

ReadResult TlsSocket::read_lines(size_t lines, Millis timeout) {
  size_t seen = 0;
  return read_until(
      [&](std::string_view got) {
        seen += static_cast<size_t>(std::count(got.begin(), got.end(), '\n'));
        return seen >= lines;
      },
      SIZE_MAX, timeout);
}

ReadResult TlsSocket::read_to_eof(Millis timeout) {
  return read_until([](std::string_view) { return false; }, SIZE_MAX, timeout);
}

void TlsSocket::close() {
  if (ssl_ && socket_) {
    ERR_clear_error();
    SSL_shutdown(ssl_.get());
    flush(Clock::now() + 1s);
    char buf[16 << 10];
    while (::recv(socket_.fd(), buf, sizeof(buf), MSG_DONTWAIT) > 0) {
    }
  }
  socket_.close();
}

// Connects and completes a handshake (REQUIREd).
TlsSocket tls_connect(uint16_t port, const TlsOptions& options = {}) {
  Socket socket = connect_tcp(port, 5s, options.rcvbuf);
  if (options.sndbuf > 0) {
    REQUIRE(::setsockopt(socket.fd(), SOL_SOCKET, SO_SNDBUF, &options.sndbuf,
                         sizeof(options.sndbuf)) == 0);
  }
  TlsSocket tls;
  const bool done = tls.handshake(std::move(socket), options);
  REQUIRE_MESSAGE(done, "TLS handshake with 127.0.0.1:" << port << " failed: " << tls.error());
  return tls;
}

// Reads a TLS stream to its end on a thread of its own (as the harness's
// Collector does for plaintext).
class TlsCollector {
 public:
  TlsCollector(TlsSocket socket, Millis timeout) : socket_(std::move(socket)) {
    thread_ = std::thread([this, timeout] {
      const auto deadline = Clock::now() + timeout;
      while (Clock::now() < deadline) {
        ReadResult r = socket_.read_some(
            64 << 10, std::chrono::duration_cast<Millis>(deadline - Clock::now()));
        {
          std::lock_guard<std::mutex> lock(mutex_);
          result_.data += r.data;
          bytes_ = result_.data.size();
          result_.eof = r.eof;
          result_.error = r.error;
        }
        progress_.notify_all();
        if (r.eof || r.error) break;
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        over_ = true;
      }
      progress_.notify_all();
    });
  }
  ~TlsCollector() {
    // Abandoned early (a failed check): wake the thread rather than wait
    // out its timeout.
    if (thread_.joinable()) {
      ::shutdown(socket_.fd(), SHUT_RDWR);
      thread_.join();
    }
  }
  TlsCollector(const TlsCollector&) = delete;
  TlsCollector& operator=(const TlsCollector&) = delete;

  // Joins the thread (the stream must end) and returns everything read.
  const ReadResult& finish() {
    if (thread_.joinable()) thread_.join();
    return result_;
  }
  size_t bytes_so_far() {
    std::lock_guard<std::mutex> lock(mutex_);
    return bytes_;
  }
  // Blocks until at least `bytes` were read (false on timeout or if the
  // stream ended short).
  bool wait_bytes(size_t bytes, Millis timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    return progress_.wait_for(lock, timeout, [&] { return bytes_ >= bytes || over_; }) &&
           bytes_ >= bytes;
  }

 private:
  TlsSocket socket_;
  std::mutex mutex_;
  std::condition_variable progress_;
  ReadResult result_;
  size_t bytes_ = 0;
  bool over_ = false;
  std::thread thread_;
};

// --- openssl s_client -------------------------------------------------------

// `openssl s_client -quiet` connected to 127.0.0.1:port, verifying the
// server against the test CA; what it receives arrives on its standard
// output, read here through a pipe. Killed if still running at the end.
class SClient {
 public:
  SClient(const TempDir& dir, uint16_t port) : err_path_(dir / "s_client.err") {
    int pipe_fds[2];
    REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
    out_ = pipe_fds[0];
    const std::vector<std::string> args = {
        "openssl",      "s_client",         "-quiet",    "-connect",
        loopback(port), "-CAfile",          certs().ca,  "-servername",
        "localhost",    "-verify_hostname", "localhost", "-verify_return_error"};
    std::vector<char*> argv;
    for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    // Standard input at its end: with -quiet (-ign_eof) it keeps reading
    // the server.
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
    posix_spawn_file_actions_addopen(&actions, 2, err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    posix_spawnattr_t attr;
    init_default_signals(attr);
    const int rc = ::posix_spawnp(&pid_, "openssl", &actions, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    ::close(pipe_fds[1]);
    REQUIRE_MESSAGE(rc == 0, "cannot run openssl: " << std::strerror(rc));
  }
  ~SClient() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) ::close(out_);
  }
  SClient(const SClient&) = delete;
  SClient& operator=(const SClient&) = delete;

  // Reads its output until it holds `bytes` bytes, it ends, or `timeout`.
  const std::string& read(size_t bytes, Millis timeout) {
    const auto deadline = Clock::now() + timeout;
    char buf[64 << 10];
    while (!eof_ && out_text_.size() < bytes) {
      pollfd p{out_, POLLIN, 0};
      const int rc = ::poll(&p, 1, left_ms(deadline));
      if (rc < 0 && errno == EINTR) continue;
      if (rc <= 0) break;
      const ssize_t n = ::read(out_, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        eof_ = true;
        break;
      }
      out_text_.append(buf, static_cast<size_t>(n));
    }
    return out_text_;
  }
  // Reads its output to the end (it exits when the server closes), then
  // its exit status; nullopt if it was still running at `timeout`.
  std::optional<int> wait(Millis timeout) {
    read(SIZE_MAX, timeout);
    if (!eof_) return std::nullopt;
    int status = 0;
    REQUIRE(::waitpid(pid_, &status, 0) == pid_);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  const std::string& output() const { return out_text_; }
  std::string errors() const { return read_file(err_path_); }

 private:
  std::string err_path_;
  pid_t pid_ = -1;
  int out_ = -1;
  std::string out_text_;
  bool eof_ = false;
};

// --- configs and metrics ----------------------------------------------------

// A listener's `tls` object: the server certificate and `extra` fields.
json server_tls(const json& extra = json::object()) {
  json tls = {{"cert", certs().server.crt}, {"key", certs().server.key}};
  for (const auto& [name, value] : extra.items()) tls[name] = value;
  return tls;
}

// Client certificates from the test CA required.
json mutual_tls(const json& extra = json::object()) {
  json tls = server_tls({{"ca", certs().ca}, {"client_auth", "require"}});
  for (const auto& [name, value] : extra.items()) tls[name] = value;
  return tls;
}

json with_tls(json listener, const json& tls) {
  listener["tls"] = tls;
  return listener;
}

json file_output(const TempDir& dir) {
  return {{"name", "out"}, {"type", "file"}, {"path", dir / "out"}};
}

std::string tls_connections(const std::string& listener) {
  return "chronomerge_tls_connections_total{listener=\"" + listener + "\"}";
}

std::string tls_refused(const std::string& listener, const std::string& reason) {
  return "chronomerge_tls_refused_total{listener=\"" + listener + "\",reason=\"" + reason + "\"}";
}

std::string sink_clients(const std::string& output) {
  return "chronomerge_output_sink_clients{output=\"" + output + "\"}";
}

// A sample of one scrape, or 0 if it is absent (a counter not yet
// exposed).
double count_in(const std::map<std::string, double>& samples, const std::string& name) {
  auto it = samples.find(name);
  return it == samples.end() ? 0 : it->second;
}

// Waits until the output has `clients` clients (a TLS client counts once
// the daemon has finished its handshake).
void wait_clients(uint16_t metrics, const std::string& output, double clients) {
  REQUIRE(wait_sample(metrics, sink_clients(output), [&](double v) { return v == clients; }) ==
          clients);
}

// A record padded to about `size` bytes.
std::string padded_record(int64_t time, const std::string& feed, int64_t seq, size_t size) {
  std::string line = record(time, feed, seq);
  line.pop_back();  // '}'
  line += ",\"pad\":\"";
  line += std::string(size > line.size() + 3 ? size - line.size() - 3 : 1, 'x');
  return line + "\"}";
}

// Where `got` first differs from `expected`, with the lines around it: the
// texts can be megabytes, too much for a failure message.
std::string first_difference(const std::string& got, const std::string& expected) {
  const auto diff = std::mismatch(got.begin(), got.end(), expected.begin(), expected.end());
  const size_t at = static_cast<size_t>(diff.first - got.begin());
  if (at == got.size() && at == expected.size()) return "no difference";
  auto around = [at](const std::string& text) {
    const size_t from = at == 0 ? std::string::npos : text.rfind('\n', at - 1);
    const size_t begin = from == std::string::npos ? 0 : from + 1;
    return text.substr(begin, 300);
  };
  return "got " + std::to_string(got.size()) + " bytes, expected " +
         std::to_string(expected.size()) + "; first difference at byte " + std::to_string(at) +
         " (line " +
         std::to_string(std::count(got.begin(), got.begin() + static_cast<long>(at), '\n') + 1) +
         ")\ngot:      " + around(got) + "\nexpected: " + around(expected);
}

// --- /fleet -----------------------------------------------------------------

}  // namespace

// --- 1. the merged stream over TLS ------------------------------------------

TEST_CASE("TLS changes no byte: a TLS producer and a TLS client see the plaintext merge") {
  const int per_feed = sanitized ? 1000 : 3000;
  TempDir dir;
  json config = {
      // Neither feed is ever idle: the merge waits for both producers.
      {"idle_timeout_ms", 600000},
      {"feeds", {with_tls(tcp_feed("secure"), server_tls()), tcp_feed("plain")}},
      {"outputs", {with_tls(tcp_output("tls-out"), server_tls()), tcp_output("plain-out")}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  INFO("daemon log (tail):\n" << daemon.log_tail());

  TlsCollector tls_client(tls_connect(daemon.output_port("tls-out")), read_timeout);
  Collector plain_client(connect_tcp(daemon.output_port("plain-out")), read_timeout);
  wait_clients(metrics, "tls-out", 1);
  wait_clients(metrics, "plain-out", 1);

  std::mt19937 rng(7);
  const std::string secure_text = sorted_feed(rng, "secure", per_feed);
  const std::string plain_text = sorted_feed(rng, "plain", per_feed);
  // Both producers are connected before either sends: the merge waits for
  // both, so the output is the stable merge whatever the timing.
  TlsSocket secure = tls_connect(daemon.feed_port("secure"));
  Socket plain = connect_tcp(daemon.feed_port("plain"));
  REQUIRE(daemon.wait_log("feed secure: producer connected"));
  REQUIRE(daemon.wait_log("feed plain: producer connected"));
  MESSAGE("producer and client speak " << secure.version());
  REQUIRE(secure.write_all(secure_text));
  secure.close();
  REQUIRE(write_all(plain, plain_text));
  plain.close();

  REQUIRE(daemon.wait_log("feed secure: producer disconnected"));
  REQUIRE(daemon.wait_log("feed plain: producer disconnected"));
  const auto samples = scrape_all(metrics);
  CHECK(count_in(samples, tls_connections("feed/secure")) == 1);
  CHECK(count_in(samples, tls_connections("output/tls-out")) == 1);
  CHECK(count_in(samples, tls_connections("feed/plain")) == 0);
  CHECK(count_in(samples, tls_connections("output/plain-out")) == 0);
  CHECK(count_in(samples, tls_refused("feed/secure", "handshake")) == 0);
  CHECK(count_in(samples, tls_refused("output/tls-out", "handshake")) == 0);
  CHECK(count_in(samples, "chronomerge_feed_records_total{feed=\"secure\"}") == per_feed);
  // A producer that hung up may come back, so the merge still waits for
  // the feed whose records end first; SIGTERM drains the rest to both
  // clients.
  daemon.check_alive();
  CHECK(daemon.stop().code == 0);

  const std::string expected = stable_merge({secure_text, plain_text});
  const ReadResult& over_tls = tls_client.finish();
  const ReadResult& over_tcp = plain_client.finish();
  CHECK(over_tls.eof);
  CHECK(over_tcp.eof);
  CHECK_MESSAGE(over_tcp.data == expected, first_difference(over_tcp.data, expected));
  CHECK_MESSAGE(over_tls.data == over_tcp.data, first_difference(over_tls.data, over_tcp.data));
}

// --- 2. a fleet named by client certificates --------------------------------

TEST_CASE("mTLS fleet: producers are named by the CN of their client certificates") {
  const int per_member = sanitized ? 300 : 1000;
  TempDir dir;
  json buses = with_tls(tcp_feed("buses"), mutual_tls());
  buses["fleet"] = {{"name_from", "cert_cn"}};
  // Marks the members' records fit under: a member paused at its mark is
  // not read, so it would not see its producer go until the merge moves.
  buses["high_water_mark"] = 1 << 20;
  buses["low_water_mark"] = 256 << 10;
  // A silent feed holds the merge, so members' records wait for each
  // other however they arrive; SIGTERM drains them all.
  json config = {{"idle_timeout_ms", 600000},
                 {"feeds", {buses, tcp_feed("hold")}},
                 {"outputs", {file_output(dir)}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t port = daemon.feed_port("buses");
  INFO("daemon log (tail):\n" << daemon.log_tail());
  Socket holder = connect_tcp(daemon.feed_port("hold"));
  REQUIRE(daemon.wait_log("feed hold: producer connected"));

  // Keys from 1000, advancing by 0, 1 or 2: ties within and across members.
  // The first line is a record like any other: no hello.
  std::mt19937 rng(11);
  const std::string text1 = sorted_feed(rng, "bus-1", per_member);
  const std::string text2 = sorted_feed(rng, "bus-2", per_member);
  // bus-2 connects first: the order of the merge is by name, not arrival.
  TlsSocket bus2 = tls_connect(port, client_cert(certs().bus2));
  REQUIRE(bus2.write_all(text2));
  TlsSocket bus1 = tls_connect(port, client_cert(certs().bus1));
  REQUIRE(bus1.write_all(text1));

  const json fleet = wait_fleet(metrics, [&](const json& f) {
    return field(member_of(f, "bus-1"), "records") == per_member &&
           field(member_of(f, "bus-2"), "records") == per_member;
  });
  INFO("/fleet: " << fleet.dump());
  CHECK(member_names(fleet) == std::vector<std::string>{"bus-1", "bus-2"});
  CHECK(field(fleet, "connected") == 2);
  for (const char* name : {"bus-1", "bus-2"}) {
    CAPTURE(name);
    const json member = member_of(fleet, name);
    CHECK(field(member, "feed") == std::string("buses/") + name);
    CHECK(field(member, "connected") == true);
    CHECK(field(member, "records") == per_member);
  }
  const auto samples = scrape_all(metrics);
  CHECK(count_in(samples, tls_connections("feed/buses")) == 2);
  CHECK(count_in(samples, "chronomerge_fleet_members_joined_total{fleet=\"buses\"}") == 2);
  CHECK(count_in(samples, tls_refused("feed/buses", "cert")) == 0);
  CHECK(count_in(samples, tls_refused("feed/buses", "handshake")) == 0);

  bus1.close();
  bus2.close();
  REQUIRE(wait_sample(metrics, "chronomerge_fleet_members{fleet=\"buses\"}",
                      [](double v) { return v == 0; }) == 0);
  daemon.check_alive();
  CHECK(daemon.stop().code == 0);
  // The stable merge by key, then member name.
  CHECK(read_file(dir / "out") == stable_merge({text1, text2}));
}

TEST_CASE("mTLS fleet: name_from cert_san names a member by its certificate's first DNS name") {
  TempDir dir;
  json buses = with_tls(tcp_feed("buses"), mutual_tls());
  buses["fleet"] = {{"name_from", "cert_san"}};
  json config = {{"feeds", {buses}}, {"outputs", {file_output(dir)}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t port = daemon.feed_port("buses");
  INFO("daemon log (tail):\n" << daemon.log_tail());

  TlsSocket bus7 = tls_connect(port, client_cert(certs().bus7));
  REQUIRE(bus7.write_all(record(1000, "bus-7", 0) + "\n"));
  // bus-1's certificate has no DNS name: it cannot name a member.
  TlsSocket bus1 = tls_connect(port, client_cert(certs().bus1));
  REQUIRE(bus1.write_all(record(1000, "bus-1", 0) + "\n"));
  const json fleet = wait_fleet(
      metrics, [](const json& f) { return field(member_of(f, "bus-7"), "records") == 1; });
  INFO("/fleet: " << fleet.dump());
  CHECK(member_names(fleet) == std::vector<std::string>{"bus-7"});
  CHECK(bus1.read_to_eof(5s).eof);
  CHECK(wait_sample(metrics,
                    "chronomerge_fleet_refused_total{fleet=\"buses\",reason=\"bad_hello\"}",
                    [](double v) { return v == 1; }) == 1);
  CHECK(daemon.log_count("the certificate has no DNS name (subjectAltName)") == 1);
  bus7.close();
  daemon.check_alive();
  CHECK(daemon.stop().code == 0);
  CHECK(read_file(dir / "out") == record(1000, "bus-7", 0) + "\n");
}

// --- 3. a third-party client ------------------------------------------------

TEST_CASE("openssl s_client receives the merged stream from a TLS output") {
  TempDir dir;
  json config = {{"feeds", {tcp_feed("a")}},
                 {"outputs", {with_tls(tcp_output("tls-out"), server_tls())}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  INFO("daemon log (tail):\n" << daemon.log_tail());

  SClient client(dir, daemon.output_port("tls-out"));
  INFO("s_client stderr:\n" << client.errors());
  wait_clients(metrics, "tls-out", 1);

  std::mt19937 rng(3);
  const std::string text = sorted_feed(rng, "a", sanitized ? 500 : 2000);
  Socket producer = connect_tcp(daemon.feed_port("a"));
  REQUIRE(write_all(producer, text));
  producer.close();
  CHECK(client.read(text.size(), read_timeout).size() == text.size());
  CHECK(wait_sample(metrics, tls_connections("output/tls-out"), [](double v) { return v == 1; }) ==
        1);
  daemon.check_alive();
  CHECK(daemon.stop().code == 0);
  // The daemon closed the connection: s_client ends.
  const std::optional<int> status = client.wait(10s);
  CHECK(status.has_value());
  CHECK(client.output() == text);
}

// --- 4. refusals ------------------------------------------------------------

namespace {

// True once the daemon has closed a plaintext connection (EOF or a reset)
// without a record on it. It may have sent a TLS alert first.
bool closed_without_records(const Socket& socket, Millis timeout) {
  const ReadResult r = read_to_eof(socket, timeout);
  return (r.eof || r.error) && r.data.find("\"time\"") == std::string::npos;
}

}  // namespace

TEST_CASE("TLS refusals are counted and the connected TLS producer and client are served") {
  constexpr int handshake_timeout_ms = 300;
  // One TLS producer with a certificate, one TLS client, both connected
  // before anything is refused.
  TempDir dir;
  json config = {{"feeds",
                  {with_tls(tcp_feed("secure"),
                            mutual_tls({{"handshake_timeout_ms", handshake_timeout_ms}}))}},
                 {"outputs",
                  {with_tls(tcp_output("tls-out"),
                            server_tls({{"handshake_timeout_ms", handshake_timeout_ms}}))}}};
  with_metrics(config);

  // What is refused, where, and why.
  std::string listener;
  std::string reason;
  std::function<void(uint16_t feed_port, uint16_t out_port)> intrude;

  auto refused_tls = [](uint16_t port, const TlsOptions& options) {
    // The handshake fails (TLS 1.2: the server checks the certificate
    // before it finishes), or the first read does (TLS 1.3: after the
    // client finished, the server sends an alert and closes).
    Socket socket = connect_tcp(port);
    TlsSocket tls;
    if (!tls.handshake(std::move(socket), options)) {
      MESSAGE("refused during the handshake: " << tls.error());
      return;
    }
    tls.write_all(record(1500, "intruder", 0) + "\n");  // may fail: closed
    const ReadResult r = tls.read_to_eof(5s);
    MESSAGE("handshake done (" << tls.version() << "), then closed: " << tls.error());
    CHECK((r.eof || r.error));
    CHECK(r.data.empty());
  };

  SUBCASE("plaintext to a TLS feed: a record line instead of a ClientHello") {
    listener = "feed/secure";
    reason = "handshake";
    intrude = [](uint16_t feed_port, uint16_t) {
      Socket plain = connect_tcp(feed_port);
      try_write(plain, record(1500, "plain", 0) + "\n");  // may fail: closed at once
      CHECK(closed_without_records(plain, 5s));
    };
  }
  SUBCASE("plaintext to a TLS output") {
    listener = "output/tls-out";
    reason = "handshake";
    intrude = [](uint16_t, uint16_t out_port) {
      Socket plain = connect_tcp(out_port);
      try_write(plain, "hello\n");
      CHECK(closed_without_records(plain, 5s));
    };
  }
  for (int version : {TLS1_2_VERSION, 0}) {
    const std::string tls_name = version == 0 ? " (TLS 1.3)" : " (TLS 1.2)";
    SUBCASE(("no client certificate where one is required" + tls_name).c_str()) {
      listener = "feed/secure";
      reason = "cert";
      intrude = [&, version](uint16_t feed_port, uint16_t) {
        TlsOptions options;
        options.max_version = version;
        refused_tls(feed_port, options);
      };
    }
    SUBCASE(("a client certificate from another CA" + tls_name).c_str()) {
      listener = "feed/secure";
      reason = "cert";
      intrude = [&, version](uint16_t feed_port, uint16_t) {
        TlsOptions options = client_cert(certs().stranger);
        options.max_version = version;
        refused_tls(feed_port, options);
      };
    }
    SUBCASE(("an expired client certificate" + tls_name).c_str()) {
      listener = "feed/secure";
      reason = "cert";
      intrude = [&, version](uint16_t feed_port, uint16_t) {
        TlsOptions options = client_cert(certs().expired);
        options.max_version = version;
        refused_tls(feed_port, options);
      };
    }
  }
  for (const char* where : {"feed/secure", "output/tls-out"}) {
    SUBCASE((std::string("a connection that sends nothing, closed after handshake_timeout_ms: ") +
             where)
                .c_str()) {
      listener = where;
      reason = "handshake";
      intrude = [=](uint16_t feed_port, uint16_t out_port) {
        Socket silent = connect_tcp(std::string(where) == "feed/secure" ? feed_port : out_port);
        const auto connected = Clock::now();
        CHECK(closed_without_records(silent, 10s));
        const auto waited = std::chrono::duration_cast<Millis>(Clock::now() - connected);
        MESSAGE("closed after " << waited.count() << " ms");
        CHECK(waited >= Millis(handshake_timeout_ms - 20));
        CHECK(waited < Millis(handshake_timeout_ms) + (sanitized ? 5s : 2s));
      };
    }
  }
  SUBCASE("a TLS 1.2 client where min_version is 1.3") {
    config["feeds"][0]["tls"]["min_version"] = "1.3";
    listener = "feed/secure";
    reason = "handshake";
    intrude = [](uint16_t feed_port, uint16_t) {
      TlsOptions options = client_cert(certs().bus2);
      options.max_version = TLS1_2_VERSION;
      Socket socket = connect_tcp(feed_port);
      TlsSocket tls;
      const bool done = tls.handshake(std::move(socket), options);
      MESSAGE("TLS 1.2 against min_version 1.3: " << tls.error());
      CHECK_FALSE(done);
    };
  }
  REQUIRE(intrude);
  CAPTURE(listener);
  CAPTURE(reason);

  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t feed_port = daemon.feed_port("secure");
  const uint16_t out_port = daemon.output_port("tls-out");
  INFO("daemon log (tail):\n" << daemon.log_tail());

  TlsSocket client = tls_connect(out_port);
  wait_clients(metrics, "tls-out", 1);
  TlsSocket producer = tls_connect(feed_port, client_cert(certs().bus1));
  REQUIRE(daemon.wait_log("feed secure: producer connected"));
  REQUIRE(producer.write_all(record(1000, "bus-1", 0) + "\n"));
  REQUIRE(client.read_lines(1).data == record(1000, "bus-1", 0) + "\n");

  intrude(feed_port, out_port);
  CHECK(wait_sample(metrics, tls_refused(listener, reason), [](double v) { return v >= 1; }) == 1);
  // Counted once, under its reason only; the handshakes that completed are
  // the producer's and the client's.
  const auto samples = scrape_all(metrics);
  for (const char* where : {"feed/secure", "output/tls-out"}) {
    for (const char* why : {"handshake", "cert"}) {
      CAPTURE(where);
      CAPTURE(why);
      CHECK(count_in(samples, tls_refused(where, why)) ==
            (where == listener && why == reason ? 1 : 0));
    }
  }
  CHECK(count_in(samples, tls_connections("feed/secure")) == 1);
  CHECK(count_in(samples, tls_connections("output/tls-out")) == 1);
  CHECK(count_in(samples, "chronomerge_tls_handshakes_in_flight{listener=\"feed/secure\"}") == 0);
  CHECK(count_in(samples, "chronomerge_feed_records_total{feed=\"secure\"}") == 1);

  // The daemon goes on: the producer's next record reaches the client.
  REQUIRE(producer.write_all(record(1001, "bus-1", 1) + "\n"));
  CHECK(client.read_lines(1).data == record(1001, "bus-1", 1) + "\n");
  producer.close();
  REQUIRE(daemon.wait_log("feed secure: producer disconnected"));
  daemon.check_alive();
  CHECK(daemon.stop().code == 0);
  const ReadResult rest = client.read_to_eof(10s);
  CHECK(rest.eof);
  CHECK(rest.data.empty());
}

TEST_CASE("max_handshakes: TLS connections beyond it wait for a handshake to finish") {
  // One handshake at a time: a connection that sends nothing holds the
  // slot until handshake_timeout_ms, and a client behind it waits.
  constexpr int handshake_timeout_ms = 400;
  TempDir dir;
  json config = {{"feeds", {tcp_feed("a")}},
                 {"outputs",
                  {with_tls(tcp_output("tls-out"),
                            server_tls({{"max_handshakes", 1},
                                        {"handshake_timeout_ms", handshake_timeout_ms}}))}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t port = daemon.output_port("tls-out");
  INFO("daemon log (tail):\n" << daemon.log_tail());
  const std::string in_flight = "chronomerge_tls_handshakes_in_flight{listener=\"output/tls-out\"}";

  Socket silent = connect_tcp(port);
  const auto connected = Clock::now();
  REQUIRE(wait_sample(metrics, in_flight, [](double v) { return v == 1; }) == 1);
  TlsSocket client = tls_connect(port);
  const auto waited = std::chrono::duration_cast<Millis>(Clock::now() - connected);
  MESSAGE("the second handshake completed " << waited.count() << " ms after the first connection");
  CHECK(waited >= Millis(handshake_timeout_ms - 50));
  CHECK(closed_without_records(silent, 0ms));
  wait_clients(metrics, "tls-out", 1);
  const auto samples = scrape_all(metrics);
  CHECK(count_in(samples, tls_refused("output/tls-out", "handshake")) == 1);
  CHECK(count_in(samples, tls_connections("output/tls-out")) == 1);
  CHECK(count_in(samples, in_flight) == 0);

  Socket producer = connect_tcp(daemon.feed_port("a"));
  REQUIRE(write_all(producer, record(1000, "a", 0) + "\n"));
  CHECK(client.read_lines(1).data == record(1000, "a", 0) + "\n");
  producer.close();
  daemon.check_alive();
  CHECK(daemon.stop().code == 0);
}

// --- a tcp-connect feed over TLS --------------------------------------------

TEST_CASE("a tcp-connect feed over TLS verifies its upstream and may present a certificate") {
  TempDir dir;
  Socket listener = listen_tcp();
  const uint16_t port = port_of(listener);
  json tls = {{"ca", certs().ca}};
  bool refused = false;
  std::string cn;  // the daemon's certificate, as the upstream sees it
  SUBCASE("the upstream's certificate names the address connected to (the default server_name)") {}
  SUBCASE("server_name localhost, with a client certificate") {
    tls["server_name"] = "localhost";
    tls["cert"] = certs().bus1.crt;
    tls["key"] = certs().bus1.key;
    cn = "bus-1";
  }
  SUBCASE("an upstream whose certificate is for another name is refused") {
    tls["server_name"] = "depot.example";
    refused = true;
  }
  SUBCASE("an upstream from another CA is refused") {
    tls["ca"] = certs().other_ca;
    refused = true;
  }
  CAPTURE(tls.dump());
  json config = {
      {"feeds",
       {{{"name", "up"}, {"type", "tcp-connect"}, {"connect", loopback(port)}, {"tls", tls}}}},
      {"outputs", {tcp_output("clients")}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  INFO("daemon log (tail):\n" << daemon.log_tail());
  Collector client(connect_tcp(daemon.output_port("clients")), read_timeout);
  wait_clients(metrics, "clients", 1);

  std::mt19937 rng(5);
  const std::string text = sorted_feed(rng, "up", 500);
  TlsSocket upstream;
  const bool accepted = upstream.accept(accept_tcp(listener, 10s), certs().server);
  if (refused) {
    // The daemon checks the upstream's certificate and hangs up.
    MESSAGE("the upstream's handshake: " << (accepted ? "done" : upstream.error()));
    if (accepted) {
      const ReadResult r = upstream.read_to_eof(5s);
      CHECK((r.eof || r.error));
    }
    CHECK(wait_sample(metrics, tls_refused("feed/up", "cert"), [](double v) { return v >= 1; }) >=
          1);
    CHECK(count_in(scrape_all(metrics), tls_connections("feed/up")) == 0);
  } else {
    REQUIRE_MESSAGE(accepted, upstream.error());
    CHECK(upstream.peer_cn() == cn);
    REQUIRE(upstream.write_all(text));
    upstream.close();
    CHECK(client.wait_bytes(text.size(), read_timeout));
    const auto samples = scrape_all(metrics);
    CHECK(count_in(samples, tls_connections("feed/up")) == 1);
    CHECK(count_in(samples, tls_refused("feed/up", "cert")) == 0);
  }
  daemon.check_alive();
  CHECK(daemon.stop().code == 0);
  const ReadResult& got = client.finish();
  CHECK(got.eof);
  CHECK(got.data == (refused ? std::string() : text));
}

// --- 5. backpressure --------------------------------------------------------

namespace {

// The local port of a socket.
uint16_t local_port(int fd) {
  sockaddr_in addr{};
  socklen_t size = sizeof(addr);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &size) == 0);
  return ntohs(addr.sin_port);
}

// Bytes that arrived on a loopback TCP socket and that its process has not
// read (rx_queue in /proc/net/tcp): the socket with local port `port` and
// remote port `peer`. nullopt if there is none.
std::optional<uint64_t> unread_on(uint16_t port, uint16_t peer) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    unsigned local = 0;
    unsigned remote = 0;
    unsigned long tx = 0;
    unsigned long rx = 0;
    if (std::sscanf(line.c_str(), " %*u: %*8X:%4X %*8X:%4X %*2X %8lX:%8lX", &local, &remote, &tx,
                    &rx) == 4 &&
        local == port && remote == peer) {
      return rx;
    }
  }
  return std::nullopt;
}

}  // namespace

TEST_CASE("backpressure over TLS: a slow TLS client holds TLS producers within bounded memory") {
  const size_t per_producer = 3 << 20;  // bytes
  constexpr size_t record_size = 200;
  constexpr int64_t retention = 4 << 20;
  TempDir dir;
  json config = {
      // Nothing goes idle: a producer held back must hold the merge.
      {"idle_timeout_ms", 600000},
      {"retention_bytes", retention},
      {"feed_high_water_mark", 262144},
      {"feed_low_water_mark", 65536},
      {"output_high_water_mark", 262144},
      {"feeds", {with_tls(tcp_feed("p0"), server_tls()), with_tls(tcp_feed("p1"), server_tls())}},
      {"outputs", {with_tls(tcp_output("tls-out"), server_tls())}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  INFO("daemon log (tail):\n" << daemon.log_tail());

  // The slow client: a 4 KiB receive buffer, a little read at a time.
  TlsOptions slow;
  slow.rcvbuf = 4096;
  TlsSocket client = tls_connect(daemon.output_port("tls-out"), slow);
  wait_clients(metrics, "tls-out", 1);

  // Equal keys across the producers: every key is a tie.
  std::vector<std::string> texts(2);
  for (size_t p = 0; p < texts.size(); ++p) {
    const std::string name = "p" + std::to_string(p);
    for (int64_t i = 0; texts[p].size() < per_producer; ++i) {
      texts[p] += padded_record(1000 + i, name, i, record_size) + "\n";
    }
  }
  const std::string expected = stable_merge(texts);
  std::vector<TlsSocket> producers;
  std::vector<uint16_t> producer_ports;
  TlsOptions producer_options;
  producer_options.sndbuf = 64 << 10;
  for (const char* name : {"p0", "p1"}) {
    producers.push_back(tls_connect(daemon.feed_port(name), producer_options));
    producer_ports.push_back(local_port(producers.back().fd()));
    REQUIRE(daemon.wait_log(std::string("feed ") + name + ": producer connected"));
  }
  std::atomic<int> done{0};
  std::vector<std::string> problems(producers.size());
  std::vector<std::thread> writers;
  for (size_t p = 0; p < producers.size(); ++p) {
    writers.emplace_back([&, p] {
      if (!producers[p].write_all(texts[p], read_timeout)) problems[p] = producers[p].error();
      producers[p].close();
      ++done;
    });
  }
  struct Joiner {  // on a failed REQUIRE: end the writers' connections, then join them
    std::vector<std::thread>& threads;
    Daemon& daemon;
    ~Joiner() {
      bool running = false;
      for (auto& t : threads) running = running || t.joinable();
      if (running) daemon.signal(SIGKILL);
      for (auto& t : threads) {
        if (t.joinable()) t.join();
      }
    }
  } joiner{writers, daemon};

  uint64_t peak_rss = 0;
  auto sample_rss = [&] { peak_rss = std::max(peak_rss, daemon.memory().rss_kib); };
  std::string got;

  // Phase 1: 4 KiB every 10 ms. The daemon pauses both feeds once
  // everything between the producers and the client is full, and the
  // client goes on at its pace for a while, the merge held by it.
  const size_t slow_read = (sanitized ? 128 : 512) << 10;
  bool paused = false;
  const auto slow_end = Clock::now() + (sanitized ? 60s : 20s);
  auto next_scrape = Clock::now();
  while ((!paused || got.size() < slow_read) && Clock::now() < slow_end) {
    got += client.read_some(4096, 0ms).data;
    sample_rss();
    if (!paused && Clock::now() >= next_scrape) {
      const auto samples = scrape_all(metrics);
      paused = count_in(samples, "chronomerge_feed_paused{feed=\"p0\"}") == 1 &&
               count_in(samples, "chronomerge_feed_paused{feed=\"p1\"}") == 1;
      next_scrape = Clock::now() + 50ms;
    }
    ::poll(nullptr, 0, 10);  // the slow reader's pace
  }
  const size_t slow_bytes = got.size();
  CHECK(paused);
  // A paused feed stops reading its producer's TLS socket: the bytes wait
  // in the daemon's kernel buffer (which the kernel may have grown to
  // several MiB, so the producers need not be blocked yet), not in its
  // memory.
  for (size_t p = 0; p < producers.size(); ++p) {
    CAPTURE(p);
    const std::optional<uint64_t> unread =
        unread_on(daemon.feed_port("p" + std::to_string(p)), producer_ports[p]);
    MESSAGE("p" << p << ": " << (unread.value_or(0) >> 10)
                << " KiB unread in the daemon's socket at the end of the slow phase");
    CHECK(unread.value_or(0) > 0);
  }

  // Phase 2: the client reads as fast as it can until the producers are
  // done and gone. The last records wait for a feed that hung up (it may
  // come back; it never goes idle here): SIGTERM drains them, to a client
  // that keeps reading.
  const auto deadline = Clock::now() + read_timeout;
  auto next_sample = Clock::now();
  std::optional<Memory> memory;  // just before SIGTERM
  ReadResult r;
  while (!r.eof && !r.error && Clock::now() < deadline) {
    r = client.read_some(64 << 10, 50ms);
    got += r.data;
    if (Clock::now() >= next_sample) {
      sample_rss();
      next_sample = Clock::now() + 50ms;
    }
    if (!memory && done == 2 && daemon.log_count("producer disconnected") == 2) {
      memory = daemon.memory();
      peak_rss = std::max(peak_rss, memory->rss_kib);
      daemon.signal(SIGTERM);
    }
  }
  for (auto& t : writers) t.join();
  for (size_t p = 0; p < problems.size(); ++p) {
    CAPTURE(p);
    CHECK(problems[p] == "");
  }
  REQUIRE(memory);
  CHECK(r.eof);
  CHECK(daemon.wait(30s).code == 0);
  MESSAGE((expected.size() >> 10) << " KiB through TLS, " << (slow_bytes >> 10)
                                  << " KiB of it read slowly; peak RSS sampled " << peak_rss
                                  << " KiB, VmHWM " << memory->hwm_kib << " KiB");
  if (!sanitized) {
    CHECK(peak_rss < (retention >> 10) + (32 << 10));
    CHECK(memory->hwm_kib < (retention >> 10) + (32 << 10));
  }
  CHECK_MESSAGE(got == expected, first_difference(got, expected));
}

TEST_CASE("a paused TLS feed whose producer went silent is merged to its last record") {
  // The producer sends everything while its feed is paused (a silent
  // plaintext feed holds the merge), then sends nothing more and stays
  // connected. Whatever part of it the daemon already took off the
  // socket (and OpenSSL decrypted) must be merged once the merge moves on:
  // no readable event will ever come for it.
  struct Variant {
    std::string what;
    int records;
    bool heartbeat;  // the holder sends a heartbeat, not a record
  };
  std::vector<Variant> variants;
  for (int records : {500, 2500}) {
    for (bool heartbeat : {false, true}) {
      variants.push_back({std::to_string(records) + " records (about " +
                              std::to_string(records * 40 / 1024) + " KiB), then the holder " +
                              (heartbeat ? "sends a heartbeat" : "sends a record") + " past them",
                          records, heartbeat});
    }
  }
  for (const Variant& variant : variants) {
    SUBCASE(variant.what.c_str()) {
      TempDir dir;
      json secure = with_tls(tcp_feed("secure"), server_tls());
      secure["high_water_mark"] = 4096;
      secure["low_water_mark"] = 1024;
      json hold = tcp_feed("hold");
      hold["heartbeat_field"] = "heartbeat";
      json config = {{"idle_timeout_ms", 600000},
                     {"feeds", {secure, hold}},
                     {"outputs", {tcp_output("clients")}}};
      with_metrics(config);
      Daemon daemon(dir, config);
      const uint16_t metrics = daemon.metrics_port();
      INFO("daemon log (tail):\n" << daemon.log_tail());

      Socket client = connect_tcp(daemon.output_port("clients"));
      wait_clients(metrics, "clients", 1);
      Socket holder = connect_tcp(daemon.feed_port("hold"));
      REQUIRE(daemon.wait_log("feed hold: producer connected"));
      TlsSocket producer = tls_connect(daemon.feed_port("secure"));
      REQUIRE(daemon.wait_log("feed secure: producer connected"));

      std::vector<std::string> records;
      for (int i = 0; i < variant.records; ++i) records.push_back(record(1000 + i, "secure", i));
      const std::string text = lines_of(records);
      // One write (a few TLS records). The kernel should take it all; if
      // it does not, the rest is sent once the feed resumes.
      std::atomic<bool> written{false};
      Background writer([&] { written = producer.write_all(text, read_timeout); });
      REQUIRE(wait_sample(metrics, "chronomerge_feed_paused{feed=\"secure\"}",
                          [](double v) { return v == 1; }) == 1);
      CHECK(read_some(client, 100, 0ms).data.empty());  // held
      MESSAGE(
          "paused with "
          << (unread_on(daemon.feed_port("secure"), local_port(producer.fd())).value_or(0) >> 10)
          << " KiB unread in the daemon's socket");

      const std::string past = variant.heartbeat ? "{\"time\":1000000,\"heartbeat\":true}\n"
                                                 : record(1000000, "hold", 0) + "\n";
      REQUIRE(write_all(holder, past));
      const ReadResult merged = read_lines(client, records.size(), sanitized ? 30s : 10s);
      const std::optional<double> taken =
          scrape(metrics, "chronomerge_feed_records_total{feed=\"secure\"}");
      INFO("records taken from the TLS feed: " << taken.value_or(-1));
      CHECK(split_lines(merged.data).size() == records.size());
      CHECK_MESSAGE(merged.data == text, first_difference(merged.data, text));

      // The producer hangs up (close_notify): nothing else comes from it,
      // and the holder's record follows (a heartbeat is not forwarded).
      writer.join();
      CHECK(written);
      producer.close();
      REQUIRE(daemon.wait_log("feed secure: producer disconnected"));
      holder.close();
      daemon.check_alive();
      CHECK(daemon.stop().code == 0);
      const ReadResult rest = read_to_eof(client, 10s);
      CHECK(rest.eof);
      CHECK(rest.data == (variant.heartbeat ? std::string() : past));
    }
  }
}

// --- 6. metrics over TLS ----------------------------------------------------

namespace {

// GET `path` over TLS from the metrics port: status and body.
HttpResponse https_request(uint16_t port, const std::string& path,
                           const std::string& headers = {}) {
  TlsSocket tls = tls_connect(port);
  REQUIRE(tls.write_all("GET " + path + " HTTP/1.0\r\nHost: localhost\r\n" + headers + "\r\n"));
  const ReadResult response = tls.read_to_eof(5s);
  INFO("response: " << response.data.substr(0, 200) << " (" << tls.error() << ")");
  REQUIRE(response.eof);
  REQUIRE(starts_with(response.data, "HTTP/1."));
  HttpResponse out;
  out.status = std::atoi(response.data.c_str() + response.data.find(' ') + 1);
  const size_t body = response.data.find("\r\n\r\n");
  REQUIRE(body != std::string::npos);
  out.head = response.data.substr(0, body + 2);
  out.body = response.data.substr(body + 4);
  return out;
}

// Every sample of one scrape over TLS.
std::map<std::string, double> https_scrape(uint16_t port) {
  const HttpResponse response = https_request(port, "/metrics");
  REQUIRE(response.status == 200);
  std::map<std::string, double> samples;
  for (const std::string& line : split_lines(response.body)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    if (space == std::string::npos) continue;
    samples[line.substr(0, space)] = std::strtod(line.c_str() + space + 1, nullptr);
  }
  return samples;
}

}  // namespace

TEST_CASE("the metrics port over TLS answers GET /metrics and counts its TLS connections") {
  TempDir dir;
  json config = {{"feeds", {tcp_feed("a")}}, {"outputs", {file_output(dir)}}};
  with_metrics(config);
  config["metrics"]["tls"] = server_tls();
  Daemon daemon(dir, config);
  const uint16_t port = daemon.metrics_port();
  INFO("daemon log (tail):\n" << daemon.log_tail());
  CHECK(daemon.log_count("metrics: listening on https://127.0.0.1:") == 1);

  Socket producer = connect_tcp(daemon.feed_port("a"));
  REQUIRE(write_all(producer, record(1000, "a", 0) + "\n"));
  // Every scrape is a connection of its own, and its handshake completed
  // before it was answered: the k-th scrape counts k.
  int scrapes = 0;
  std::map<std::string, double> samples;
  const auto deadline = Clock::now() + 10s;
  while (true) {
    samples = https_scrape(port);
    ++scrapes;
    CHECK(count_in(samples, tls_connections("metrics")) == scrapes);
    if (count_in(samples, "chronomerge_feed_records_total{feed=\"a\"}") == 1) break;
    REQUIRE(Clock::now() < deadline);
    std::this_thread::sleep_for(10ms);  // a pause between polls
  }
  // The certificate was made for 365 days a moment ago.
  const double expiry =
      count_in(samples, "chronomerge_tls_certificate_expiry_seconds{listener=\"metrics\"}");
  CHECK(expiry > 364 * 86400.0);
  CHECK(expiry <= 365 * 86400.0);

  // A plaintext scrape is refused and counted.
  {
    Socket plain = connect_tcp(port);
    try_write(plain, "GET /metrics HTTP/1.0\r\n\r\n");
    const ReadResult r = read_to_eof(plain, 5s);
    CHECK((r.eof || r.error));
    CHECK_FALSE(starts_with(r.data, "HTTP/"));
  }
  bool counted = false;
  while (!counted && Clock::now() < deadline + 5s) {
    counted = count_in(https_scrape(port), tls_refused("metrics", "handshake")) == 1;
    if (!counted) std::this_thread::sleep_for(10ms);  // a pause between polls
  }
  CHECK(counted);
  producer.close();
  daemon.check_alive();
  CHECK(daemon.stop().code == 0);
}

TEST_CASE("an http-listen output over TLS streams to clients with and without a certificate") {
  TempDir dir;
  json web = {{"name", "web"}, {"type", "http-listen"}, {"listen", loopback(0)}};
  // "request": a client certificate is checked if there is one, not needed.
  web["tls"] = mutual_tls({{"client_auth", "request"}});
  json config = {{"feeds", {tcp_feed("a")}}, {"outputs", {web}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t port = daemon.output_port("web");
  const uint16_t metrics = daemon.metrics_port();
  INFO("daemon log (tail):\n" << daemon.log_tail());
  Socket producer = connect_tcp(daemon.feed_port("a"));
  const std::string records = lines_of({record(1000, "a", 0), record(1001, "a", 1)});
  REQUIRE(write_all(producer, records));
  REQUIRE(wait_sample(metrics, "chronomerge_feed_records_total{feed=\"a\"}",
                      [](double v) { return v == 2; }) == 2);

  for (const bool with_cert : {false, true}) {
    CAPTURE(with_cert);
    TlsSocket client = tls_connect(port, with_cert ? client_cert(certs().bus1) : TlsOptions{});
    REQUIRE(client.write_all("GET /stream?since=oldest HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    // The chunked body carries the answer line, then the records.
    std::string data;
    const auto deadline = Clock::now() + 5s;
    while (data.find(record(1001, "a", 1)) == std::string::npos && Clock::now() < deadline) {
      const ReadResult r = client.read_some(1 << 16, 1s);
      data += r.data;
      if (r.eof || r.error) break;
    }
    CHECK(starts_with(data, "HTTP/1.1 200"));
    CHECK(data.find(record(1000, "a", 0)) != std::string::npos);
    CHECK(data.find(record(1001, "a", 1)) != std::string::npos);
  }
  // A certificate from another CA is refused, even though none is needed.
  TlsSocket stranger;
  stranger.handshake(connect_tcp(port), client_cert(certs().stranger));
  CHECK(wait_sample(metrics, tls_refused("output/web", "cert"), [](double v) { return v == 1; }) ==
        1);
  CHECK(wait_sample(metrics, tls_connections("output/web"), [](double v) { return v == 2; }) == 2);
  producer.close();
  daemon.check_alive();
  CHECK(daemon.stop().code == 0);
}

// --- tokens --------------------------------------------------------------------

// printf bus-token | sha256sum, and the others.
const std::string kBusTokenHash =
    "d9478858cf887da94c13374dbfa96578fe18c9986cd879531d4b97eabb93443f";
const std::string kBus2TokenHash =
    "c911aabb7155efc3168e0345715c716907d4c83c1dbb88cdfe1ac873de0f21f4";
const std::string kDashTokenHash =
    "0a1be3282471dc6eef24ada1aec827fada31f7dc6d7a229ed202fa5993890018";
const std::string kDash2TokenHash =
    "48771c1fb2b5f3e9712931f852c7104ebf0da38d1b5c4a73d32bea7088ef154d";

TEST_CASE("tokens: a fleet's hello, a client's request line, Authorization: Bearer") {
  TempDir dir;
  json buses = with_tls(tcp_feed("buses"), server_tls());
  buses["fleet"] = {{"tokens_sha256", {kBusTokenHash}}};
  json clients = with_tls(tcp_output("clients"), server_tls());
  clients["tokens_sha256"] = {kDashTokenHash};
  json web = {{"name", "web"}, {"type", "http-listen"}, {"listen", loopback(0)}};
  web["tls"] = server_tls();
  web["tokens_sha256"] = {kDashTokenHash};
  json config = {{"feeds", {buses}}, {"outputs", {clients, web}}};
  with_metrics(config);
  config["metrics"]["tls"] = server_tls();
  config["metrics"]["tokens_sha256"] = {kDashTokenHash};
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t fleet = daemon.feed_port("buses");
  INFO("daemon log (tail):\n" << daemon.log_tail());
  const std::string bearer = "Authorization: Bearer dash-token\r\n";
  auto count = [&](const std::string& sample) {
    const HttpResponse r = https_request(metrics, "/metrics", bearer);
    REQUIRE(r.status == 200);
    for (const std::string& line : split_lines(r.body)) {
      if (starts_with(line, sample + " ")) return std::atof(line.c_str() + sample.size() + 1);
    }
    return -1.0;
  };

  SUBCASE("the metrics port answers only a valid bearer token") {
    const HttpResponse refused = https_request(metrics, "/metrics");
    CHECK(refused.status == 401);
    CHECK(starts_with(refused.head, "HTTP/1.1 401 Unauthorized\r\n"));
    CHECK(refused.head.find("\r\nWWW-Authenticate: Bearer realm=\"chronomerge\"\r\n") !=
          std::string::npos);
    CHECK(https_request(metrics, "/metrics", "Authorization: Bearer bus-token\r\n").status == 401);
    CHECK(https_request(metrics, "/healthz", bearer).status == 200);
    CHECK(count(tls_refused("metrics", "token")) == 2);
  }
  SUBCASE("a fleet member's hello carries its token") {
    TlsSocket good = tls_connect(fleet);
    REQUIRE(good.write_all(R"({"feed": "bus-1", "token": "bus-token"})"
                           "\n" +
                           record(1000, "bus-1", 0) + "\n"));
    TlsSocket wrong = tls_connect(fleet);
    REQUIRE(wrong.write_all(R"({"feed": "bus-2", "token": "dash-token"})"
                            "\n"));
    TlsSocket none = tls_connect(fleet);
    REQUIRE(none.write_all(R"({"feed": "bus-3"})"
                           "\n"));
    CHECK(wrong.read_to_eof(5s).data.empty());
    CHECK(none.read_to_eof(5s).data.empty());
    CHECK(count("chronomerge_fleet_refused_total{fleet=\"buses\",reason=\"token\"}") == 2);
    CHECK(count(tls_refused("feed/buses", "token")) == 2);
    CHECK(count("chronomerge_fleet_members{fleet=\"buses\"}") == 1);
  }
  SUBCASE("a client's first line carries its token, resume or not") {
    const uint16_t port = daemon.output_port("clients");
    TlsSocket good = tls_connect(port);
    REQUIRE(good.write_all(R"({"token": "dash-token"})"
                           "\n"));
    const ReadResult answer = good.read_lines(1, 5s);
    CHECK(starts_with(answer.data, R"({"offset":)"));
    TlsSocket bad = tls_connect(port);
    REQUIRE(bad.write_all(R"({"token": "bus-token"})"
                          "\n"));
    const ReadResult refused = bad.read_to_eof(5s);
    CHECK(refused.data.find(R"("error":"token")") != std::string::npos);
    CHECK(count(tls_refused("output/clients", "token")) == 1);
    CHECK(count("chronomerge_output_sink_disconnects_total{output=\"clients\",reason=\"token\"}") ==
          1);
  }
  SUBCASE("an http-listen output asks Authorization: Bearer") {
    const uint16_t port = daemon.output_port("web");
    const HttpResponse refused = https_request(port, "/stream?since=oldest");
    CHECK(refused.status == 401);
    CHECK(starts_with(refused.head, "HTTP/1.1 401 Unauthorized\r\n"));
    CHECK(refused.head.find("\r\nWWW-Authenticate: Bearer realm=\"chronomerge\"\r\n") !=
          std::string::npos);
    TlsSocket ok = tls_connect(port);
    REQUIRE(ok.write_all("GET /stream HTTP/1.1\r\nHost: x\r\n" + bearer + "\r\n"));
    CHECK(starts_with(ok.read_lines(1, 5s).data, "HTTP/1.1 200"));
    CHECK(count(tls_refused("output/web", "token")) == 1);
  }
  daemon.check_alive();
  CHECK(daemon.stop().code == 0);
}

// --- 7. config errors -------------------------------------------------------

TEST_CASE("--check-config reports TLS files that cannot be used, by their JSON pointer") {
  TempDir dir;
  json tls = server_tls();
  std::string pointer;
  SUBCASE("a key that does not match its certificate") {
    tls["key"] = certs().bus1.key;
    pointer = "/feeds/0/tls/key";
  }
  SUBCASE("a certificate file that does not exist") {
    tls["cert"] = dir / "absent.crt";
    pointer = "/feeds/0/tls/cert";
  }
  SUBCASE("a key file that does not exist") {
    tls["key"] = dir / "absent.key";
    pointer = "/feeds/0/tls/key";
  }
  SUBCASE("client_auth require without a CA") {
    tls["client_auth"] = "require";
    pointer = "/feeds/0/tls/ca";
  }
  SUBCASE("a matching certificate and key are accepted") {}
  CAPTURE(pointer);
  const json config = {{"feeds", {with_tls(tcp_feed("a"), tls)}},
                       {"outputs", {{{"name", "c"}, {"type", "stdout"}}}}};
  const std::string path = dir.write("tls.json", config.dump(2));
  const RunResult run = run_chronomerge(dir, {"--check-config", path});
  INFO("stderr:\n" << run.err);
  if (pointer.empty()) {
    CHECK(run.status.code == 0);
  } else {
    CHECK(run.status.code == 2);
    CHECK(run.err.find("\n" + pointer + ": ") != std::string::npos);
  }
}

TEST_CASE(
    "--check-config refuses a fleet named by certificate CN without TLS client_auth require") {
  TempDir dir;
  json buses = with_tls(tcp_feed("buses"), server_tls());
  buses["fleet"] = {{"name_from", "cert_cn"}};
  SUBCASE("without tls") {
    buses.erase("tls");
  }
  SUBCASE("with tls but client_auth none") {}
  SUBCASE("with client_auth request") {
    buses["tls"]["ca"] = certs().ca;
    buses["tls"]["client_auth"] = "request";
  }
  const json config = {{"feeds", {buses}}, {"outputs", {{{"name", "c"}, {"type", "stdout"}}}}};
  const RunResult run =
      run_chronomerge(dir, {"--check-config", dir.write("fleet.json", config.dump(2))});
  INFO("stderr:\n" << run.err);
  CHECK(run.status.code == 2);
  CHECK(run.err.find("\n/feeds/0/") != std::string::npos);
}

// --- reload -------------------------------------------------------------------

TEST_CASE("a reload reads the revocation list again and closes the revoked member") {
  TempDir dir;
  // A CA database of this case's own: revoking bus-1 here touches no other
  // case's certificates.
  const std::string cnf =
      dir.write("ca.cnf", "[ca]\ndefault_ca = test\n[test]\ndatabase = " + dir / "index.txt" +
                              "\ndefault_md = sha256\ndefault_crl_days = 30\n");
  write_file(dir / "index.txt", "");
  auto ca = [&](const std::string& args) {
    const std::string log = dir / "openssl.log";
    const std::string command = "openssl ca -batch -config " + shell_quoted(cnf) + " -cert " +
                                shell_quoted(certs().ca) + " -keyfile " +
                                shell_quoted(certs().dir / "ca.key") + " " + args + " >>" +
                                shell_quoted(log) + " 2>&1";
    REQUIRE_MESSAGE(std::system(command.c_str()) == 0, command << "\n" << read_file(log));
  };
  const std::string crl = dir / "current.crl";
  ca("-gencrl -out " + shell_quoted(crl));

  json buses = with_tls(tcp_feed("buses"), mutual_tls({{"crl", crl}}));
  buses["fleet"] = {{"name_from", "cert_cn"}};
  json config = {{"feeds", {buses}}, {"outputs", {file_output(dir)}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t port = daemon.feed_port("buses");
  INFO("daemon log (tail):\n" << daemon.log_tail());

  TlsSocket bus1 = tls_connect(port, client_cert(certs().bus1));
  TlsSocket bus2 = tls_connect(port, client_cert(certs().bus2));
  REQUIRE(bus1.write_all(record(1000, "bus-1", 0) + "\n"));
  REQUIRE(bus2.write_all(record(1000, "bus-2", 0) + "\n"));
  REQUIRE(wait_sample(metrics, "chronomerge_fleet_records_total{fleet=\"buses\"}",
                      [](double v) { return v == 2; }) == 2);

  // bus-1 is revoked; the file keeps its path, and the configuration is
  // unchanged: the reload reads the list again all the same.
  ca("-revoke " + shell_quoted(certs().bus1.crt));
  ca("-gencrl -out " + shell_quoted(crl));
  daemon.signal(SIGHUP);
  REQUIRE(wait_sample(metrics, tls_refused("feed/buses", "cert"),
                      [](double v) { return v == 1; }) == 1);
  REQUIRE(wait_sample(metrics, "chronomerge_fleet_members{fleet=\"buses\"}",
                      [](double v) { return v == 1; }) == 1);
  CHECK(bus1.read_to_eof(5s).data.empty());  // closed by the daemon

  // bus-2 goes on; bus-1 cannot come back.
  REQUIRE(bus2.write_all(record(1001, "bus-2", 1) + "\n"));
  REQUIRE(wait_sample(metrics, "chronomerge_fleet_records_total{fleet=\"buses\"}",
                      [](double v) { return v == 3; }) == 3);
  // Under TLS 1.3 the client is done before the server has checked its
  // certificate: the refusal shows at the server.
  TlsSocket again;
  again.handshake(connect_tcp(port), client_cert(certs().bus1));
  CHECK(wait_sample(metrics, tls_refused("feed/buses", "cert"), [](double v) { return v == 2; }) ==
        2);
  CHECK(daemon.log_count("its certificate is no longer accepted") == 1);
  daemon.check_alive();
  bus2.close();
  CHECK(daemon.stop().code == 0);
}

TEST_CASE("a reload that removes a token closes only the connections admitted with it") {
  TempDir dir;
  json buses = with_tls(tcp_feed("buses"), server_tls());
  buses["fleet"] = {{"tokens_sha256", {kBusTokenHash, kBus2TokenHash}}};
  json clients = with_tls(tcp_output("clients"), server_tls());
  clients["tokens_sha256"] = {kDashTokenHash, kDash2TokenHash};
  // A member with nothing queued holds the merge for 200 ms at most.
  json config = {{"idle_timeout_ms", 200}, {"feeds", {buses}}, {"outputs", {clients}}};
  with_metrics(config);
  config["metrics"]["tls"] = server_tls();
  config["metrics"]["tokens_sha256"] = {kDashTokenHash};
  Daemon daemon(dir, config);
  const uint16_t metrics = daemon.metrics_port();
  const uint16_t fleet = daemon.feed_port("buses");
  const uint16_t port = daemon.output_port("clients");
  INFO("daemon log (tail):\n" << daemon.log_tail());
  const std::string bearer = "Authorization: Bearer dash-token\r\n";
  const std::string bearer2 = "Authorization: Bearer dash2-token\r\n";
  auto count = [&](const std::string& sample) {
    const HttpResponse r = https_request(metrics, "/metrics", bearer);
    REQUIRE(r.status == 200);
    for (const std::string& line : split_lines(r.body)) {
      if (starts_with(line, sample + " ")) return std::atof(line.c_str() + sample.size() + 1);
    }
    return -1.0;
  };
  auto wait_count = [&](const std::string& sample, double want) {
    const auto deadline = Clock::now() + 10s;
    double got = count(sample);
    while (got != want && Clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
      got = count(sample);
    }
    return got;
  };

  TlsSocket dash = tls_connect(port);
  REQUIRE(dash.write_all(R"({"token": "dash-token"})"
                         "\n"));
  TlsSocket dash2 = tls_connect(port);
  REQUIRE(dash2.write_all(R"({"token": "dash2-token"})"
                          "\n"));
  REQUIRE(wait_count(sink_clients("clients"), 2) == 2);
  TlsSocket bus1 = tls_connect(fleet);
  REQUIRE(bus1.write_all(R"({"feed": "bus-1", "token": "bus-token"})"
                         "\n" +
                         record(1000, "bus-1", 0) + "\n"));
  TlsSocket bus2 = tls_connect(fleet);
  REQUIRE(bus2.write_all(R"({"feed": "bus-2", "token": "bus2-token"})"
                         "\n" +
                         record(1000, "bus-2", 0) + "\n"));
  // The answer line and both records.
  CHECK(dash.read_lines(3, 5s).data.find(R"("feed":"bus-2")") != std::string::npos);
  CHECK(dash2.read_lines(3, 5s).data.find(R"("feed":"bus-2")") != std::string::npos);
  CHECK(https_request(metrics, "/metrics", bearer2).status == 401);

  // bus2-token and dash2-token go; the metrics port takes dash2-token.
  config["feeds"][0]["fleet"]["tokens_sha256"] = {kBusTokenHash};
  config["outputs"][0]["tokens_sha256"] = {kDashTokenHash};
  config["metrics"]["tokens_sha256"] = {kDashTokenHash, kDash2TokenHash};
  dir.write("config.json", config.dump(2));
  daemon.signal(SIGHUP);
  REQUIRE(daemon.wait_log("reloaded "));
  CHECK(bus2.read_to_eof(5s).eof);
  CHECK(dash2.read_to_eof(5s).eof);
  CHECK(count("chronomerge_fleet_refused_total{fleet=\"buses\",reason=\"token\"}") == 1);
  CHECK(count(tls_refused("feed/buses", "token")) == 1);
  CHECK(count("chronomerge_output_sink_disconnects_total{output=\"clients\",reason=\"token\"}") ==
        1);
  CHECK(count(tls_refused("output/clients", "token")) == 1);
  CHECK(count("chronomerge_fleet_members{fleet=\"buses\"}") == 1);
  CHECK(count(sink_clients("clients")) == 1);
  CHECK(https_request(metrics, "/metrics", bearer2).status == 200);
  CHECK(daemon.log_count("its token was removed") == 2);
  CHECK(daemon.log_count(
            "output clients: token list changed, applied in place; 1 clients closed") == 1);

  // The rest stay: bus-1's next record reaches the first client on the
  // connection it had.
  REQUIRE(bus1.write_all(record(1001, "bus-1", 1) + "\n"));
  CHECK(dash.read_lines(1, 5s).data == record(1001, "bus-1", 1) + "\n");
  // A removed token cannot come back.
  TlsSocket again = tls_connect(fleet);
  REQUIRE(again.write_all(R"({"feed": "bus-2", "token": "bus2-token"})"
                          "\n"));
  CHECK(again.read_to_eof(5s).eof);
  CHECK(wait_count("chronomerge_fleet_refused_total{fleet=\"buses\",reason=\"token\"}", 2) == 2);
  daemon.check_alive();
  bus1.close();
  CHECK(daemon.stop().code == 0);
}
