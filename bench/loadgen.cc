// chronomerge_loadgen: producers and consumers for the live (daemon)
// benchmarks, bench/live.sh, bench/clients.sh, bench/latency.sh,
// bench/fleet.sh and bench/tls.sh. Plain POSIX sockets and poll(), and
// OpenSSL for the TLS options; nothing from the daemon's own code.
//
//   produce  --connect HOST:PORT --count N --feed-index I [--rate R]
//            [--start-time T] [--stride S] [--duration SEC] [--no-end-marker]
//       Sends N sorted bus records (~120 bytes, "time" first) as fast as the
//       socket accepts them, or at R records/s, then an end marker, then
//       closes. Record i of feed I has time T + i*S + I%S and seq i, so
//       producers with the same T and S interleave (and, with fewer than S
//       producers, never tie). With --duration it stops after SEC seconds
//       even if the socket is blocked, and reports how far it got.
//   consume  --connect HOST:PORT [--connections C] [--expect N]
//            [--expect-markers M] [--until-eof] [--read-rate BYTES_PER_S]
//            [--freeze] [--timeout SEC] [--strict] [--ready-file PATH]
//            [--done-file PATH]
//       Reads the merged stream, counts records and bytes, checks that keys
//       never go backwards (--strict: strictly increasing) and that every
//       vehicle's seq runs 0, 1, 2, ... with no gap or repeat. It is done
//       after N records and M end markers (which follow the data); it then
//       creates --done-file and exits, or with --until-eof keeps reading
//       (and checking) until the daemon closes the connection, e.g. after a
//       SIGTERM drain. "seconds" runs from the first byte to the Nth record.
//       --freeze connects and never reads (until SIGTERM or --timeout).
//       --ready-file is created once the connection is up.
//       --ties-by-vehicle also checks that records (and end markers) with
//       equal keys come in the order of their vehicle numbers, as a fleet
//       orders the ties of its members bus-00000, bus-00001, ...; a
//       vehicle's first record out of that order is only counted
//       ("tie_joins"): a member that joins at key K follows the K the merge
//       already emitted.
//       With --connections C it is C clients in one process: C connections
//       read in one poll() loop, each checked on its own (and --read-rate is
//       per connection); one JSON object per connection, the ready file once
//       all are up, the done file once all are done.
//   vehicles --connect-base HOST:PORT --count C [--records R]
//            [--interval-ms MIN:MAX] [--seed S]
//       C slow vehicles at once, vehicle j connected to PORT+j (one
//       tcp-listen feed each): every MIN..MAX ms (uniform) each sends a
//       record stamped with the wall clock, R records, then an end marker.
//   paced    --connect-base HOST:PORT --feeds F --rate R --records N
//            [--stride S] [--start-time T] [--cpu-pid PID --cpu-from I --cpu-to J]
//       F producers in one process, feed j connected to PORT+j, for the
//       latency benchmark (bench/latency.sh). Every 1/R s (a tick) each feed
//       sends its next record in a write() of its own (TCP_NODELAY), so that
//       all feeds send key k at about the same moment. Record i of feed j has
//       time T + i*S + j (S defaults to the smallest power of 2 > F) and a
//       field "sent_ns": CLOCK_MONOTONIC just before its write. After N
//       ticks: an end marker on every feed, then close. With --cpu-pid it
//       reads that process's utime/stime (and /proc/stat) just before ticks
//       I and J, so CPU time covers exactly the measured records.
//   latency  --connect HOST:PORT --feeds F --from-seq I --to-seq J
//            [--raw-out PATH] [--trace-out PATH] [--timeout SEC] [--ready-file PATH]
//            [--done-file PATH]
//       Reads the merged stream of a paced run, stamps every read with
//       CLOCK_MONOTONIC, checks order and seq like consume, and creates
//       --done-file at the first end marker. At EOF (the SIGTERM drain) it
//       computes, for the records with I <= seq < J, two latencies: arrival
//       (receipt - own sent_ns) and emittable (receipt - the moment the record
//       became emittable; see run_latency), prints their percentiles, and
//       with --raw-out writes every pair as two native-endian int64 ns;
//       --trace-out writes one text line per measured record (key, feed,
//       seq, send, emittable and receipt times in ns), from the largest key
//       down.
//   fleet    --connect HOST:PORT --members M --rate R --duration SEC
//            [--start-time T] [--stride S] [--connect-rate C]
//            [--connect-timeout SEC] [--grace SEC] [--seed N]
//       M members of one fleet feed (bench/fleet.sh): M connections to the
//       same port, opened as fast as possible or C a second, all in one
//       poll() loop. Member j sends the hello {"feed":"bus-NNNNN"} (j in 5
//       digits), then R records a second, one write() each, with "vehicle"
//       bus-NNNNN and seq 0, 1, 2, ..., starting at a random moment within
//       its first period, so that the members' sends spread evenly. Keys
//       follow one clock for all: T + elapsed_ms*S + j%S, elapsed since the
//       start (CLOCK_MONOTONIC), T by default the wall clock at the start,
//       S by default 1 (keys are then wall-clock ms, and members tie). After
//       R*SEC records a member sends its end marker and closes. It reports
//       connections made, the time until the last one was made, records
//       sent, members that failed to connect, were dropped (closed or reset
//       by the peer) or had not finished after the last record was due
//       plus --grace (default 30 s), and how far the sends lagged behind
//       their schedule. Raises the soft open-files limit to the hard one.
//
//   probe    --connect HOST:PORT [--path P] [--interval-ms MS] [--duration SEC]
//            [--stop-file PATH] [--timeout-ms MS] [--raw-out PATH] [--ready-file PATH]
//       Every MS ms (default 10, on a fixed schedule; a slow probe delays the
//       next) one plain HTTP GET P (default /healthz) on a new connection,
//       timed from connect() to the end of the response: how long the
//       daemon's event loop took to accept and answer it, so the longest
//       response bounds the longest loop stall from outside. Runs until
//       --duration, --stop-file exists, or SIGTERM. A probe that gets no
//       complete "200" answer within --timeout-ms (default 5000) is a
//       failure. --raw-out writes one line a probe: its start (wall clock,
//       s), its response time (us) and the HTTP status (0: none).
//
// TLS (produce, consume, fleet): --tls-ca PATH makes every connection TLS
// (1.2 or later), the server's certificate verified against that CA for the
// name "localhost" (also sent as SNI); --tls-cert PATH --tls-key PATH
// present a client certificate. In fleet mode --tls-cert-dir DIR gives each
// member its own: member j presents DIR/bus-NNNNN.crt and .key (j in 5
// digits), all loaded before the first connection, and sends no hello: the
// daemon names it by the certificate's CN (fleet name_from "cert_cn").
// The sockets stay non-blocking in the same poll() loops; a TLS read or
// write that cannot go on waits for what OpenSSL asks for (readable or
// writable). A connection counts as made once its handshake is done. The
// reports of these modes give the protocol and cipher ("tls"), and
// consume says whether the daemon ended the connection with a TLS
// close_notify or a bare EOF ("tls_close").
//
// Every mode prints one JSON object on stdout when it is done (consume: one
// per connection, one a line).
//
// End marker: a record with time 4102444800000 (2100-01-01) and no seq. It
// is how a finite run ends cleanly on tcp-listen feeds, which never end: the
// marker keeps its feed "ready" at a key beyond every data record, so the
// merger can emit the last data records of the other feeds at once instead
// of waiting idle_timeout_ms for the closed feed to go idle. A consumer
// counts records with a key at or above the marker key as markers, not data.
//
// Exit status: 0 done (for consume: every check passed and, with --expect,
// N records arrived); 1 a check failed or the run could not complete; 2
// usage error.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <queue>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace {

constexpr int64_t marker_key = 4102444800000;  // 2100-01-01T00:00:00Z in ms
constexpr int64_t default_start = 1700000000000;

volatile sig_atomic_t g_stop = 0;

[[noreturn]] void usage(const char* message) {
  std::fprintf(
      stderr,
      "chronomerge_loadgen: %s\n"
      "usage:\n"
      "  chronomerge_loadgen produce --connect HOST:PORT --count N --feed-index I\n"
      "      [--rate R] [--start-time T] [--stride S] [--duration SEC] [--no-end-marker]\n"
      "  chronomerge_loadgen consume --connect HOST:PORT [--connections C] [--expect N]\n"
      "      [--expect-markers M] [--until-eof] [--read-rate BYTES_PER_S] [--freeze]\n"
      "      [--timeout SEC] [--strict] [--ready-file PATH] [--done-file PATH] [--key NAME]\n"
      "      [--ties-by-vehicle]\n"
      "  chronomerge_loadgen vehicles --connect-base HOST:PORT --count C [--records R]\n"
      "      [--interval-ms MIN:MAX] [--seed S]\n"
      "  chronomerge_loadgen paced --connect-base HOST:PORT --feeds F --rate R --records N\n"
      "      [--stride S] [--start-time T] [--cpu-pid PID --cpu-from I --cpu-to J]\n"
      "  chronomerge_loadgen latency --connect HOST:PORT --feeds F --from-seq I --to-seq J\n"
      "      [--raw-out PATH] [--trace-out PATH] [--timeout SEC] [--ready-file PATH]\n"
      "      [--done-file PATH]\n"
      "  chronomerge_loadgen fleet --connect HOST:PORT --members M --rate R --duration SEC\n"
      "      [--start-time T] [--stride S] [--connect-rate C] [--connect-timeout SEC]\n"
      "      [--grace SEC] [--seed N] [--tls-cert-dir DIR]\n"
      "  chronomerge_loadgen probe --connect HOST:PORT [--path P] [--interval-ms MS]\n"
      "      [--duration SEC] [--stop-file PATH] [--timeout-ms MS] [--raw-out PATH]\n"
      "      [--ready-file PATH]\n"
      "produce, consume and fleet take [--tls-ca PATH [--tls-cert PATH --tls-key PATH]]\n",
      message);
  std::exit(2);
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "chronomerge_loadgen: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

double now_s() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double wall_s() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

int64_t wall_ms() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

void sleep_s(double seconds) {
  if (seconds <= 0) return;
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(seconds);
  ts.tv_nsec = static_cast<long>((seconds - static_cast<double>(ts.tv_sec)) * 1e9);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !g_stop) {
  }
}

// --- options -------------------------------------------------------------

struct Args {
  std::vector<std::string> items;
  size_t pos = 0;
  bool more() const { return pos < items.size(); }
  std::string next() { return items[pos++]; }
  std::string value(const std::string& name) {
    if (!more()) usage((name + " needs a value").c_str());
    return next();
  }
};

int64_t to_int(const std::string& text, const std::string& name, int64_t min, int64_t max) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v < min || v > max) {
    usage((name + ": expected an integer from " + std::to_string(min) + " to " +
           std::to_string(max) + ", got '" + text + "'")
              .c_str());
  }
  return v;
}

double to_double(const std::string& text, const std::string& name) {
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !(v >= 0)) {
    usage((name + ": expected a number >= 0, got '" + text + "'").c_str());
  }
  return v;
}

// One option of a mode: its name, and what its presence (and value) does.
struct Option {
  const char* name;
  std::function<void(Args& args, const std::string& name)> take;
};

// --NAME TEXT.
Option text_option(const char* name, std::string& out) {
  return {name, [&out](Args& args, const std::string& n) { out = args.value(n); }};
}

// --NAME N, an integer from min to max.
Option int_option(const char* name, int64_t& out, int64_t min, int64_t max) {
  return {name, [&out, min, max](Args& args, const std::string& n) {
            out = to_int(args.value(n), n, min, max);
          }};
}

// --NAME X, a number >= 0.
Option number_option(const char* name, double& out) {
  return {name, [&out](Args& args, const std::string& n) { out = to_double(args.value(n), n); }};
}

// --NAME alone sets `out` to `value`.
Option flag_option(const char* name, bool& out, bool value = true) {
  return {name, [&out, value](Args&, const std::string&) { out = value; }};
}

// Applies every remaining argument to the option of its name; an unknown
// one is a usage error of `mode`.
void parse_options(Args& args, const char* mode, const std::vector<Option>& options) {
  while (args.more()) {
    const std::string a = args.next();
    const Option* match = nullptr;
    for (const Option& o : options) {
      if (a == o.name) match = &o;
    }
    if (match == nullptr) usage((std::string(mode) + ": unknown option " + a).c_str());
    match->take(args, a);
  }
}

struct Address {
  sockaddr_storage addr{};
  socklen_t len = 0;
};

// "127.0.0.1:7070", "localhost:7070" or "[::1]:7070". Numeric only, like
// the daemon's config: no DNS.
Address parse_address(const std::string& text, int port_offset = 0) {
  std::string host;
  std::string port_text;
  if (!text.empty() && text[0] == '[') {
    auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      usage(("bad address '" + text + "'").c_str());
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos) usage(("bad address '" + text + "' (HOST:PORT)").c_str());
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }
  if (host == "localhost") host = "127.0.0.1";
  int64_t port = to_int(port_text, "port", 1, 65535) + port_offset;
  if (port > 65535) usage("port out of range");
  Address a;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.addr);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    a.len = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    a.len = sizeof(sockaddr_in6);
  } else {
    usage(("bad host '" + host + "' (numeric address or localhost)").c_str());
  }
  return a;
}

void set_nonblocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) fail("fcntl");
}

// Blocking connect, retried for a few seconds while refused (the daemon may
// still be binding). Returns a non-blocking socket.
int connect_to(const Address& a, double patience_s = 5.0) {
  double deadline = now_s() + patience_s;
  for (;;) {
    int fd = socket(a.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fail("socket");
    if (connect(fd, reinterpret_cast<const sockaddr*>(&a.addr), a.len) == 0) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      set_nonblocking(fd);
      return fd;
    }
    int e = errno;
    close(fd);
    if ((e != ECONNREFUSED && e != EINTR) || now_s() > deadline || g_stop) {
      errno = e;
      fail("connect");
    }
    sleep_s(0.05);
  }
}

void raise_fd_limit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
}

// Creates (or empties) the file at `path`, a signal to the script that runs
// us; nothing when `path` is empty.
void touch_file(const std::string& path) {
  if (path.empty()) return;
  int f = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (f >= 0) close(f);
}

// One read() from a nonblocking socket into out[0..size). Returns the bytes
// read; 0 when there were none yet (after waiting up to wait_ms for some) or
// the read was interrupted: call again; -1 at EOF (sets `eof`) or on an
// error (sets `error`).
ssize_t read_some(int fd, char* out, size_t size, int wait_ms, bool& eof, std::string& error) {
  const ssize_t n = read(fd, out, size);
  if (n > 0) return n;
  if (n == 0) {
    eof = true;
    return -1;
  }
  if (errno == EINTR) return 0;
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    pollfd p{fd, POLLIN, 0};
    poll(&p, 1, wait_ms);
    return 0;
  }
  error = std::string("read: ") + std::strerror(errno);
  return -1;
}

// Utime + stime of this process, in seconds.
double own_cpu_s() {
  rusage self{};
  getrusage(RUSAGE_SELF, &self);
  return static_cast<double>(self.ru_utime.tv_sec + self.ru_stime.tv_sec) +
         static_cast<double>(self.ru_utime.tv_usec + self.ru_stime.tv_usec) * 1e-6;
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

// "text" as a JSON string, or null when empty.
std::string json_string_or_null(const std::string& text) {
  return text.empty() ? "null" : "\"" + json_escape(text) + "\"";
}

// --- TLS -----------------------------------------------------------------

// The TLS options of produce, consume and fleet (see the top of the file).
struct TlsOptions {
  std::string ca, cert, key;
  std::string cert_dir;  // fleet: a certificate of its own per member
  bool on() const { return !ca.empty(); }
};

// `options` and the TLS options that write into `tls`; --tls-cert-dir only
// where `cert_dir` is true (fleet).
std::vector<Option> with_tls(TlsOptions& tls, std::vector<Option> options, bool cert_dir = false) {
  options.push_back(text_option("--tls-ca", tls.ca));
  options.push_back(text_option("--tls-cert", tls.cert));
  options.push_back(text_option("--tls-key", tls.key));
  if (cert_dir) options.push_back(text_option("--tls-cert-dir", tls.cert_dir));
  return options;
}

void check_tls_options(const TlsOptions& tls, const std::string& mode) {
  if (tls.cert.empty() != tls.key.empty())
    usage((mode + ": --tls-cert and --tls-key go together").c_str());
  if (!tls.on() && (!tls.cert.empty() || !tls.cert_dir.empty()))
    usage((mode + ": a client certificate needs --tls-ca (TLS is on only with it)").c_str());
  if (!tls.cert.empty() && !tls.cert_dir.empty())
    usage((mode + ": --tls-cert and --tls-cert-dir exclude each other").c_str());
}

// The OpenSSL errors queued on this thread, as text (and the queue emptied).
std::string ssl_errors() {
  std::string out;
  char text[256];
  for (unsigned long e = ERR_get_error(); e != 0; e = ERR_get_error()) {
    ERR_error_string_n(e, text, sizeof(text));
    if (!out.empty()) out += "; ";
    out += text;
  }
  return out.empty() ? "no detail from OpenSSL" : out;
}

[[noreturn]] void tls_fail(const std::string& what) {
  std::fprintf(stderr, "chronomerge_loadgen: %s: %s\n", what.c_str(), ssl_errors().c_str());
  std::exit(1);
}

// A client context: TLS 1.2 or later, the server verified against the CA,
// and the client certificate if one is given. Partial writes, as write()
// makes them, and a retried write may come from another address (a
// pending buffer that moved), as long as it starts with the same bytes.
SSL_CTX* make_tls_context(const TlsOptions& tls) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) tls_fail("SSL_CTX_new");
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (SSL_CTX_load_verify_locations(ctx, tls.ca.c_str(), nullptr) != 1)
    tls_fail("--tls-ca " + tls.ca);
  if (!tls.cert.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, tls.cert.c_str()) != 1)
      tls_fail("--tls-cert " + tls.cert);
    if (SSL_CTX_use_PrivateKey_file(ctx, tls.key.c_str(), SSL_FILETYPE_PEM) != 1)
      tls_fail("--tls-key " + tls.key);
    if (SSL_CTX_check_private_key(ctx) != 1) tls_fail("--tls-key does not match --tls-cert");
  }
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  return ctx;
}

// A connection: a socket, plain or with TLS over it. With TLS, a call
// that cannot go on may wait for the other direction (a read for a write,
// a write for a read): `want_*` is what the last handshake step, read or
// write that could not go on waits for (POLLIN or POLLOUT); 0 after one
// that went through.
struct Link {
  int fd = -1;
  SSL* ssl = nullptr;
  short want_handshake = 0, want_read = 0, want_write = 0;
  bool close_notify = false;  // the peer ended TLS properly (not a bare EOF)

  // The poll() events to wait for before the next read or write.
  short read_events() const { return ssl != nullptr && want_read != 0 ? want_read : POLLIN; }
  short write_events() const { return ssl != nullptr && want_write != 0 ? want_write : POLLOUT; }
  // Decrypted bytes that OpenSSL holds: readable with no socket event.
  bool pending() const { return ssl != nullptr && SSL_pending(ssl) > 0; }
  std::string describe() const {
    if (ssl == nullptr) return "";
    return std::string(SSL_get_version(ssl)) + " " + SSL_get_cipher_name(ssl);
  }
};

// Starts TLS on the connected socket of `link` (as the client, expecting
// the server's certificate to name "localhost"), with `cert`/`key` as its
// own certificate when given (else the context's).
void tls_start(Link& link, SSL_CTX* ctx, X509* cert = nullptr, EVP_PKEY* key = nullptr) {
  SSL* ssl = SSL_new(ctx);
  if (ssl == nullptr || SSL_set_fd(ssl, link.fd) != 1) tls_fail("SSL_new");
  if (cert != nullptr &&
      (SSL_use_certificate(ssl, cert) != 1 || SSL_use_PrivateKey(ssl, key) != 1)) {
    tls_fail("SSL_use_certificate");
  }
  SSL_set_tlsext_host_name(ssl, "localhost");
  SSL_set1_host(ssl, "localhost");
  SSL_set_connect_state(ssl);
  link.ssl = ssl;
  link.want_handshake = POLLOUT;
}

// What went wrong in the TLS call that returned `rc`, in words.
std::string tls_error(const Link& link, int rc) {
  const int e = SSL_get_error(link.ssl, rc);
  std::string what;
  if (e == SSL_ERROR_SYSCALL) {
    what = errno != 0 ? std::strerror(errno) : "connection closed";
    if (ERR_peek_error() != 0) what += " (" + ssl_errors() + ")";
  } else if (e == SSL_ERROR_ZERO_RETURN) {
    what = "closed by the peer (close_notify)";
  } else {
    what = ssl_errors();
  }
  const long verify = SSL_get_verify_result(link.ssl);
  if (verify != X509_V_OK) {
    what += std::string(" (certificate: ") + X509_verify_cert_error_string(verify) + ")";
  }
  return what;
}

// One step of the handshake: 1 done, 0 call again once `want_handshake`
// is ready, -1 failed (`error` says why).
int tls_handshake_step(Link& link, std::string& error) {
  ERR_clear_error();
  errno = 0;
  const int rc = SSL_do_handshake(link.ssl);
  if (rc == 1) {
    link.want_handshake = 0;
    return 1;
  }
  switch (SSL_get_error(link.ssl, rc)) {
    case SSL_ERROR_WANT_READ:
      link.want_handshake = POLLIN;
      return 0;
    case SSL_ERROR_WANT_WRITE:
      link.want_handshake = POLLOUT;
      return 0;
    default:
      error = "TLS handshake: " + tls_error(link, rc);
      return -1;
  }
}

// The whole handshake, waiting in poll(); exits on failure or after
// `patience_s`. For the modes that connect before their loop starts.
void tls_handshake(Link& link, SSL_CTX* ctx, double patience_s = 10.0) {
  tls_start(link, ctx);
  const double deadline = now_s() + patience_s;
  std::string error;
  for (;;) {
    const int rc = tls_handshake_step(link, error);
    if (rc == 1) return;
    if (rc < 0) {
      std::fprintf(stderr, "chronomerge_loadgen: %s\n", error.c_str());
      std::exit(1);
    }
    const double left = deadline - now_s();
    if (left <= 0 || g_stop) {
      std::fprintf(stderr, "chronomerge_loadgen: TLS handshake: no answer in %.0f s\n", patience_s);
      std::exit(1);
    }
    pollfd p{link.fd, link.want_handshake, 0};
    poll(&p, 1, static_cast<int>(std::min(left, 0.1) * 1000) + 1);
  }
}

// As read() on a non-blocking socket: the bytes read (> 0); 0 when there
// are none yet (wait for link.read_events()); -1 at the end (sets `eof`)
// or on an error (sets `error`).
ssize_t link_read(Link& link, char* out, size_t size, bool& eof, std::string& error) {
  if (link.ssl == nullptr) return read_some(link.fd, out, size, 0, eof, error);
  ERR_clear_error();
  errno = 0;
  const int rc = SSL_read(link.ssl, out, static_cast<int>(std::min<size_t>(size, 1 << 30)));
  if (rc > 0) {
    link.want_read = 0;
    return rc;
  }
  switch (SSL_get_error(link.ssl, rc)) {
    case SSL_ERROR_WANT_READ:
      link.want_read = POLLIN;
      return 0;
    case SSL_ERROR_WANT_WRITE:
      link.want_read = POLLOUT;
      return 0;
    case SSL_ERROR_ZERO_RETURN:
      link.close_notify = true;
      eof = true;
      return -1;
    case SSL_ERROR_SSL:
      // OpenSSL 3 reports a TCP EOF without close_notify as an error: the
      // end of the stream all the same, told apart by close_notify.
      if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();
        eof = true;
        return -1;
      }
      [[fallthrough]];
    default:
      error = "TLS read: " + tls_error(link, rc);
      return -1;
  }
}

// As send() on a non-blocking socket: the bytes taken (> 0); 0 when none
// could be (wait for link.write_events(), then offer at least the same
// bytes again); -1 on an error (sets `error`).
ssize_t link_write(Link& link, const char* data, size_t size, std::string& error) {
  if (link.ssl == nullptr) {
    const ssize_t w = send(link.fd, data, size, MSG_NOSIGNAL);
    if (w >= 0) return w;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
    error = std::string("send: ") + std::strerror(errno);
    return -1;
  }
  ERR_clear_error();
  errno = 0;
  const int rc = SSL_write(link.ssl, data, static_cast<int>(std::min<size_t>(size, 1 << 30)));
  if (rc > 0) {
    link.want_write = 0;
    return rc;
  }
  switch (SSL_get_error(link.ssl, rc)) {
    case SSL_ERROR_WANT_READ:
      link.want_write = POLLIN;
      return 0;
    case SSL_ERROR_WANT_WRITE:
      link.want_write = POLLOUT;
      return 0;
    default:
      error = "TLS write: " + tls_error(link, rc);
      return -1;
  }
}

// Ends the connection: with TLS, reads what the daemon sent (so that the
// kernel closes with a FIN, not a reset for unread data) and sends
// close_notify, without waiting for anything. Then closes the socket.
void link_close(Link& link) {
  if (link.ssl != nullptr) {
    char sink[4096];
    for (int i = 0; i < 64 && SSL_read(link.ssl, sink, sizeof(sink)) > 0; ++i) {
    }
    ERR_clear_error();
    if (SSL_is_init_finished(link.ssl) && !(SSL_get_shutdown(link.ssl) & SSL_SENT_SHUTDOWN)) {
      SSL_shutdown(link.ssl);
    }
    ERR_clear_error();
    SSL_free(link.ssl);
    link.ssl = nullptr;
  }
  if (link.fd >= 0) close(link.fd);
  link.fd = -1;
  link.want_handshake = link.want_read = link.want_write = 0;
}

// Member j's certificate and key from DIR/bus-NNNNN.crt and .key, for
// members 0..n-1; exits naming the first file that does not load, or a
// key that does not match its certificate.
struct MemberCerts {
  std::vector<X509*> certs;
  std::vector<EVP_PKEY*> keys;
};

MemberCerts load_member_certs(const std::string& dir, size_t n) {
  MemberCerts out;
  out.certs.reserve(n);
  out.keys.reserve(n);
  char name[32];
  for (size_t j = 0; j < n; ++j) {
    std::snprintf(name, sizeof(name), "/bus-%05zu", j);
    const std::string base = dir + name;
    FILE* f = std::fopen((base + ".crt").c_str(), "r");
    if (f == nullptr) fail((base + ".crt").c_str());
    X509* cert = PEM_read_X509(f, nullptr, nullptr, nullptr);
    std::fclose(f);
    if (cert == nullptr) tls_fail(base + ".crt");
    f = std::fopen((base + ".key").c_str(), "r");
    if (f == nullptr) fail((base + ".key").c_str());
    EVP_PKEY* key = PEM_read_PrivateKey(f, nullptr, nullptr, nullptr);
    std::fclose(f);
    if (key == nullptr) tls_fail(base + ".key");
    if (X509_check_private_key(cert, key) != 1) tls_fail(base + ".key does not match its .crt");
    out.certs.push_back(cert);
    out.keys.push_back(key);
  }
  return out;
}

// --- records -------------------------------------------------------------

// Writes bus records: {"time":T,"vehicle":"bus-0003","seq":i,<tail>}\n with
// one of 64 tails (position, speed, state of charge, and one of four
// optional fields) picked by seq: 113-127 bytes, ~122 on average for
// seq < 10^6.
class RecordMaker {
 public:
  explicit RecordMaker(int vehicle) {
    std::snprintf(vehicle_, sizeof(vehicle_), "%04d", vehicle % 10000);
    std::mt19937 rng(static_cast<unsigned>(vehicle) * 7919u + 17u);
    std::uniform_real_distribution<double> jitter(-0.01, 0.01);
    double lat = 52.30 + 0.001 * (vehicle % 97);
    double lon = 4.80 + 0.001 * (vehicle % 89);
    for (int i = 0; i < 64; ++i) {
      char buf[160];
      const char* extra;
      char extra_buf[48];
      switch (i % 4) {
        case 0:
          extra = "\"door_open\":false";
          break;
        case 1:
          std::snprintf(extra_buf, sizeof(extra_buf), "\"route\":\"%d\"", 1 + vehicle % 40);
          extra = extra_buf;
          break;
        case 2:
          std::snprintf(extra_buf, sizeof(extra_buf), "\"hvac_kw\":%.1f",
                        10.0 + (i * 7) % 150 / 10.0);
          extra = extra_buf;
          break;
        default:
          std::snprintf(extra_buf, sizeof(extra_buf), "\"stop\":%d", (vehicle * 31 + i) % 90);
          extra = extra_buf;
          break;
      }
      std::snprintf(buf, sizeof(buf), "\"lat\":%.5f,\"lon\":%.5f,\"kmh\":%.1f,\"soc\":%.3f,%s}\n",
                    lat + jitter(rng), lon + jitter(rng), 20.0 + 40.0 * (jitter(rng) + 0.01) * 50,
                    0.6 + 10 * (jitter(rng) + 0.01), extra);
      tails_[i] = buf;
    }
  }

  static constexpr size_t max_bytes = 256;

  // Writes one record at `out` (at least max_bytes free); returns its size.
  // With sent_ns >= 0, a "sent_ns" field follows seq (used by the latency
  // modes: the producer's CLOCK_MONOTONIC just before the write).
  size_t make(char* out, int64_t time, int64_t seq, int64_t sent_ns = -1) const {
    return make_as(out, vehicle_, time, seq, sent_ns);
  }

  // As make(), for the vehicle numbered `vehicle` (its digits, e.g.
  // "00042") instead of this maker's own: many vehicles can share the 64
  // tails of one maker.
  size_t make_as(char* out, std::string_view vehicle, int64_t time, int64_t seq,
                 int64_t sent_ns = -1) const {
    char* p = out;
    p = put(p, "{\"time\":");
    p = std::to_chars(p, p + 24, time).ptr;
    p = put(p, ",\"vehicle\":\"bus-");
    p = put(p, vehicle);
    p = put(p, "\",\"seq\":");
    p = std::to_chars(p, p + 24, seq).ptr;
    *p++ = ',';
    if (sent_ns >= 0) {
      p = put(p, "\"sent_ns\":");
      p = std::to_chars(p, p + 24, sent_ns).ptr;
      *p++ = ',';
    }
    const std::string& tail = tails_[static_cast<size_t>(seq) % 64];
    std::memcpy(p, tail.data(), tail.size());
    p += tail.size();
    return static_cast<size_t>(p - out);
  }

  size_t make_marker(char* out, std::string_view vehicle = {}) const {
    char* p = out;
    p = put(p, "{\"time\":");
    p = std::to_chars(p, p + 24, marker_key).ptr;
    p = put(p, ",\"vehicle\":\"bus-");
    p = put(p, vehicle.empty() ? std::string_view(vehicle_) : vehicle);
    p = put(p, "\",\"end\":true}\n");
    return static_cast<size_t>(p - out);
  }

 private:
  static char* put(char* p, std::string_view s) {
    std::memcpy(p, s.data(), s.size());
    return p + s.size();
  }
  char vehicle_[8];
  std::string tails_[64];
};

// --- produce -------------------------------------------------------------

int run_produce(Args& args) {
  std::string connect;
  int64_t count = -1;
  int64_t feed_index = -1;
  double rate = 0;
  int64_t start = default_start;
  int64_t stride = 16;
  double duration = 0;
  bool end_marker = true;
  TlsOptions tls;
  parse_options(
      args, "produce",
      with_tls(
          tls,
          {text_option("--connect", connect), int_option("--count", count, 0, INT64_C(1) << 50),
           int_option("--feed-index", feed_index, 0, 9999), number_option("--rate", rate),
           int_option("--start-time", start, 0, marker_key / 2),
           int_option("--stride", stride, 1, 1000000), number_option("--duration", duration),
           flag_option("--no-end-marker", end_marker, false)}));
  if (connect.empty() || count < 0 || feed_index < 0) {
    usage("produce needs --connect, --count and --feed-index");
  }
  check_tls_options(tls, "produce");
  if (start + count * stride + stride >= marker_key)
    usage("produce: keys would reach the end marker");

  RecordMaker maker(static_cast<int>(feed_index));
  Link link;
  link.fd = connect_to(parse_address(connect));
  if (tls.on()) tls_handshake(link, make_tls_context(tls));
  const double t0 = now_s();
  const double deadline = duration > 0 ? t0 + duration : 0;
  double last_progress = t0;

  constexpr size_t batch_bytes = 256 << 10;
  std::vector<char> buf(batch_bytes + RecordMaker::max_bytes);
  int64_t generated = 0;  // records formatted so far
  int64_t sent = 0;       // records whose last byte the kernel accepted
  uint64_t bytes = 0;
  bool marker_done = !end_marker;
  bool blocked_at_end = false;
  size_t len = 0, off = 0;
  int64_t batch_records = 0;

  while (!g_stop) {
    if (off == len) {
      // Batch fully written: make the next one.
      sent += batch_records;
      batch_records = 0;
      len = off = 0;
      if (deadline > 0 && now_s() >= deadline) break;
      int64_t allowed = count;
      if (rate > 0) {
        allowed = std::min<int64_t>(count, static_cast<int64_t>((now_s() - t0) * rate) + 1);
        if (allowed <= generated && generated < count) {
          double wait = static_cast<double>(generated) / rate - (now_s() - t0);
          if (deadline > 0) wait = std::min(wait, deadline - now_s());
          if (deadline > 0 && now_s() >= deadline) break;
          sleep_s(std::max(wait, 0.0005));
          continue;
        }
      }
      while (generated < allowed && len < batch_bytes) {
        len += maker.make(buf.data() + len, start + generated * stride + feed_index % stride,
                          generated);
        ++generated;
        ++batch_records;
      }
      if (len == 0) {
        if (!marker_done) {
          len = maker.make_marker(buf.data());
          marker_done = true;
        } else {
          break;  // everything sent
        }
      }
    }
    std::string error;
    ssize_t n = link_write(link, buf.data() + off, len - off, error);
    if (n > 0) {
      off += static_cast<size_t>(n);
      bytes += static_cast<uint64_t>(n);
      last_progress = now_s();
      continue;
    }
    if (n == 0) {
      int timeout = 1000;
      if (deadline > 0) {
        double left = deadline - now_s();
        if (left <= 0) {
          blocked_at_end = true;
          break;
        }
        timeout = static_cast<int>(std::min(left, 1.0) * 1000) + 1;
      }
      pollfd p{link.fd, link.write_events(), 0};
      poll(&p, 1, timeout);
      continue;
    }
    std::fprintf(stderr, "chronomerge_loadgen: produce %" PRId64 ": %s\n", feed_index,
                 error.c_str());
    break;
  }
  if (off == len) {
    sent += batch_records;  // the last batch got out whole
  } else {
    // A partly written batch: count the records whose newline got out.
    for (size_t i = 0; i < off; ++i) {
      if (buf[i] == '\n') ++sent;
    }
    if (marker_done && batch_records == 0) marker_done = false;  // the marker did not
  }
  const double t1 = now_s();
  bool completed = sent == count && marker_done && off == len;
  const std::string protocol = link.describe();
  link_close(link);
  std::printf("{\"mode\":\"produce\",\"feed_index\":%" PRId64 ",\"records\":%" PRId64
              ",\"bytes\":%" PRIu64
              ",\"seconds\":%.3f,\"completed\":%s,\"blocked_at_end\":%s,"
              "\"last_progress_s\":%.3f,\"stalled_s\":%.3f,\"own_cpu_s\":%.3f,\"tls\":%s}\n",
              feed_index, sent, bytes, t1 - t0, completed ? "true" : "false",
              blocked_at_end ? "true" : "false", last_progress - t0, t1 - last_progress,
              own_cpu_s(), json_string_or_null(protocol).c_str());
  return completed || duration > 0 ? 0 : 1;
}

// --- consume -------------------------------------------------------------

struct Checker {
  std::string key_prefix;  // "\"time\":"
  bool strict = false;
  int64_t records = 0;
  int64_t markers = 0;
  uint64_t bytes = 0;
  int64_t out_of_order = 0;
  int64_t unparsed = 0;
  int64_t seq_gaps = 0;
  int64_t seq_repeats = 0;
  int64_t last_key = INT64_MIN;
  bool any = false;
  // With ties_by_vehicle: records with equal keys must come in the order of
  // their vehicle numbers (a fleet breaks ties by member name, and the
  // names bus-00000, bus-00001, ... sort as their numbers do).
  bool ties_by_vehicle = false;
  int64_t tie_disorder = 0;
  int64_t tie_joins = 0;
  int64_t tie_key = INT64_MIN;  // key and vehicle of the last data record
  int64_t tie_vehicle = -1;
  std::string first_problem;
  std::vector<int64_t> next_seq;  // per vehicle number

  void problem(const std::string& what, std::string_view line) {
    if (!first_problem.empty()) return;
    first_problem = what + " at record " + std::to_string(records + markers + 1) + ": " +
                    std::string(line.substr(0, 160));
  }

  static const char* parse_int(const char* p, const char* end, int64_t& v) {
    auto r = std::from_chars(p, end, v);
    return r.ec == std::errc() ? r.ptr : nullptr;
  }

  // A vehicle's first record (seq 0) is only counted in tie_joins: a fleet
  // member that joins after the merge emitted key K from others can only
  // follow them with its own K.
  void tie(int64_t key, int64_t vehicle, int64_t seq, std::string_view l) {
    if (key == tie_key && vehicle < tie_vehicle) {
      if (seq == 0) {
        ++tie_joins;
      } else {
        ++tie_disorder;
        problem("vehicle " + std::to_string(vehicle) + " after vehicle " +
                    std::to_string(tie_vehicle) + " at the same key",
                l);
      }
    }
    tie_key = key;
    tie_vehicle = vehicle;
  }

  // One line without its '\n'.
  void line(std::string_view l) {
    const char* begin = l.data();
    const char* end = begin + l.size();
    const char* p = nullptr;
    if (l.size() > key_prefix.size() + 1 && l[0] == '{' &&
        std::memcmp(begin + 1, key_prefix.data(), key_prefix.size()) == 0) {
      p = begin + 1 + key_prefix.size();
    } else {
      auto at = l.find(key_prefix);
      if (at != std::string_view::npos) p = begin + at + key_prefix.size();
    }
    int64_t key = 0;
    const char* after = p ? parse_int(p, end, key) : nullptr;
    if (after == nullptr) {
      ++unparsed;
      problem("no integer key", l);
      return;
    }
    if (any && (key < last_key || (strict && key == last_key && key < marker_key))) {
      ++out_of_order;
      problem("key " + std::to_string(key) + " after " + std::to_string(last_key), l);
    }
    any = true;
    last_key = key;
    if (key >= marker_key) {
      ++markers;
      // End markers share one key: they too come in vehicle order.
      static constexpr std::string_view mveh = "\"vehicle\":\"bus-";
      auto at = ties_by_vehicle ? l.find(mveh) : std::string_view::npos;
      int64_t vehicle = 0;
      if (at != std::string_view::npos &&
          parse_int(begin + at + mveh.size(), end, vehicle) != nullptr) {
        tie(key, vehicle, -1, l);
      }
      return;
    }
    ++records;
    bytes += l.size() + 1;
    // Exactly once per vehicle: seq must run 0, 1, 2, ...
    static constexpr std::string_view veh = ",\"vehicle\":\"bus-";
    static constexpr std::string_view seqf = "\",\"seq\":";
    const char* v = nullptr;
    if (static_cast<size_t>(end - after) > veh.size() &&
        std::memcmp(after, veh.data(), veh.size()) == 0) {
      v = after + veh.size();
    } else {
      auto at = l.find(veh.substr(1));
      if (at != std::string_view::npos) v = begin + at + veh.size() - 1;
    }
    if (v == nullptr) return;
    int64_t vehicle = 0;
    const char* q = parse_int(v, end, vehicle);
    if (q == nullptr || vehicle < 0 || vehicle > 1000000) return;
    int64_t seq = -1;
    const bool has_seq = static_cast<size_t>(end - q) > seqf.size() &&
                         std::memcmp(q, seqf.data(), seqf.size()) == 0 &&
                         parse_int(q + seqf.size(), end, seq) != nullptr;
    if (ties_by_vehicle) tie(key, vehicle, has_seq ? seq : -1, l);
    if (!has_seq) return;
    if (static_cast<size_t>(vehicle) >= next_seq.size())
      next_seq.resize(static_cast<size_t>(vehicle) + 1, 0);
    int64_t& expected = next_seq[static_cast<size_t>(vehicle)];
    if (seq != expected) {
      if (seq < expected) {
        ++seq_repeats;
        problem("vehicle " + std::to_string(vehicle) + " seq " + std::to_string(seq) +
                    " again (expected " + std::to_string(expected) + ")",
                l);
      } else {
        seq_gaps += seq - expected;
        problem("vehicle " + std::to_string(vehicle) + " seq " + std::to_string(seq) +
                    " (expected " + std::to_string(expected) + ")",
                l);
      }
    }
    expected = std::max(expected, seq + 1);
  }
};

// One connection of consume: its socket, the unfinished line at the front
// of its buffer, its checks and its times.
struct Reader {
  Link link;
  std::vector<char> buf = std::vector<char>(1 << 20);
  size_t have = 0;  // bytes of an unfinished line at buf[0..have)
  uint64_t bytes_read = 0;
  double t_first = 0, t_last = 0, wall_first = 0, wall_data = 0;
  bool eof = false, reached = false, done = false;
  std::string error;
  Checker check;
};

int run_consume(Args& args) {
  std::string connect;
  int64_t connections = 1;
  int64_t expect = -1;
  int64_t expect_markers = 0;
  bool until_eof = false;
  std::string done_file;
  double read_rate = 0;
  bool freeze = false;
  double timeout = 0;
  std::string ready_file;
  bool strict = false;
  bool ties_by_vehicle = false;
  std::string key = "time";
  TlsOptions tls;
  parse_options(
      args, "consume",
      with_tls(tls, {text_option("--connect", connect),
                     int_option("--connections", connections, 1, 10000),
                     int_option("--expect", expect, 0, INT64_C(1) << 50),
                     int_option("--expect-markers", expect_markers, 0, INT64_C(1) << 30),
                     number_option("--read-rate", read_rate), flag_option("--freeze", freeze),
                     number_option("--timeout", timeout), flag_option("--strict", strict),
                     text_option("--ready-file", ready_file), text_option("--done-file", done_file),
                     flag_option("--until-eof", until_eof), text_option("--key", key),
                     flag_option("--ties-by-vehicle", ties_by_vehicle)}));
  if (connect.empty()) usage("consume needs --connect");
  check_tls_options(tls, "consume");
  raise_fd_limit();

  const auto n = static_cast<size_t>(connections);
  std::vector<Reader> readers(n);
  const Address address = parse_address(connect);
  SSL_CTX* ctx = tls.on() ? make_tls_context(tls) : nullptr;
  for (Reader& r : readers) {
    r.check.key_prefix = "\"" + key + "\":";
    r.check.strict = strict;
    r.check.ties_by_vehicle = ties_by_vehicle;
    r.link.fd = connect_to(address);
    // The daemon sees a TLS client only once its handshake is done, so the
    // ready file below still means "every client is connected".
    if (ctx != nullptr) tls_handshake(r.link, ctx);
  }
  const double t_connect = now_s();
  const double deadline = timeout > 0 ? t_connect + timeout : 0;
  touch_file(ready_file);

  if (freeze) {
    // Never read: the daemon's queue for us fills, then (slow_client:
    // block) the whole pipeline must stop.
    while (!g_stop && (deadline == 0 || now_s() < deadline)) sleep_s(0.1);
    for (size_t i = 0; i < n; ++i) {
      link_close(readers[i].link);
      std::printf(
          "{\"mode\":\"consume\",\"connection\":%zu,\"frozen\":true,\"records\":0,"
          "\"bytes\":0,\"seconds\":%.3f}\n",
          i, now_s() - t_connect);
    }
    return 0;
  }

  size_t open = n;     // readers still reading
  size_t reached = 0;  // readers that got N records and M markers
  auto finish = [&](Reader& r) {
    if (r.done) return;
    r.done = true;
    --open;
  };
  // The done file says that every connection got everything it expected.
  auto check_reached = [&](Reader& r) {
    if (r.reached || expect < 0 || r.check.records < expect || r.check.markers < expect_markers)
      return;
    r.reached = true;
    if (++reached == n) touch_file(done_file);
    if (!until_eof) finish(r);
  };
  for (Reader& r : readers) check_reached(r);

  // One poll over every connection, then one read from each that has data:
  // no connection waits for another to drain.
  bool timed_out = false;
  const double rate_t0 = now_s();
  std::vector<pollfd> fds;
  std::vector<size_t> who;
  while (open > 0 && !g_stop) {
    const double now = now_s();
    if (deadline > 0 && now >= deadline) {
      timed_out = true;
      break;
    }
    double wait = deadline > 0 ? std::clamp(deadline - now, 0.0, 1.0) : 1.0;
    fds.clear();
    who.clear();
    bool pending = false;  // decrypted bytes waiting in OpenSSL: no socket event comes
    for (size_t i = 0; i < n; ++i) {
      Reader& r = readers[i];
      if (r.done) continue;
      if (read_rate > 0) {
        // Read no faster than read_rate: leave a connection out while it is
        // ahead of its schedule.
        const double ahead = static_cast<double>(r.bytes_read) / read_rate - (now - rate_t0);
        if (ahead > 0) {
          wait = std::min(wait, ahead);
          continue;
        }
      }
      fds.push_back({r.link.fd, r.link.read_events(), 0});
      who.push_back(i);
      pending = pending || r.link.pending();
    }
    const int wait_ms = pending ? 0 : static_cast<int>(wait * 1000) + 1;
    if (fds.empty()) {
      sleep_s(static_cast<double>(wait_ms) / 1000);
      continue;
    }
    const int rc = poll(fds.data(), fds.size(), wait_ms);
    if (rc < 0 && errno != EINTR) fail("poll");
    for (size_t k = 0; (rc > 0 || pending) && k < fds.size(); ++k) {
      Reader& r = readers[who[k]];
      if (fds[k].revents == 0 && !r.link.pending()) continue;
      if (r.have == r.buf.size()) r.buf.resize(r.buf.size() * 2);  // one very long line
      size_t want = r.buf.size() - r.have;
      if (read_rate > 0) {
        want = std::min(want, std::max<size_t>(4096, static_cast<size_t>(read_rate / 50)));
      }
      const ssize_t got = link_read(r.link, r.buf.data() + r.have, want, r.eof, r.error);
      if (got == 0) continue;
      if (got < 0) {
        finish(r);
        continue;
      }
      if (r.bytes_read == 0) {
        r.t_first = now_s();
        r.wall_first = wall_s();
      }
      r.bytes_read += static_cast<uint64_t>(got);
      const size_t total = r.have + static_cast<size_t>(got);
      size_t start = 0;
      while (start < total) {
        auto* nl = static_cast<char*>(std::memchr(r.buf.data() + start, '\n', total - start));
        if (nl == nullptr) break;
        const size_t end = static_cast<size_t>(nl - r.buf.data());
        size_t stop = end;
        if (stop > start && r.buf[stop - 1] == '\r') --stop;
        if (stop > start) r.check.line(std::string_view(r.buf.data() + start, stop - start));
        start = end + 1;
        if (expect >= 0 && r.check.records == expect && r.wall_data == 0) {
          r.t_last = now_s();
          r.wall_data = wall_s();
        }
        check_reached(r);
        if (r.done) break;
      }
      if (r.wall_data == 0) r.t_last = now_s();
      if (r.done) continue;
      r.have = total - start;
      if (r.have > 0 && start > 0) std::memmove(r.buf.data(), r.buf.data() + start, r.have);
    }
  }
  const double wall_end = wall_s();
  bool all_ok = true;
  for (size_t i = 0; i < n; ++i) {
    Reader& r = readers[i];
    if (r.wall_data == 0) r.wall_data = wall_end;
    const std::string protocol = r.link.describe();
    const bool close_notify = r.link.close_notify;
    link_close(r.link);
    const Checker& check = r.check;
    const bool complete = (expect < 0 || check.records == expect) &&
                          check.markers >= expect_markers && (!until_eof || r.eof);
    const bool ok = complete && check.out_of_order == 0 && check.unparsed == 0 &&
                    check.seq_gaps == 0 && check.seq_repeats == 0 && check.tie_disorder == 0;
    all_ok = all_ok && ok;
    const double seconds = r.bytes_read > 0 ? r.t_last - r.t_first : 0;
    std::printf("{\"mode\":\"consume\",\"connection\":%zu,\"records\":%" PRId64
                ",\"markers\":%" PRId64 ",\"bytes\":%" PRIu64
                ",\"seconds\":%.3f,\"in_order\":%s,\"out_of_order\":%" PRId64
                ",\"unparsed\":%" PRId64 ",\"seq_gaps\":%" PRId64 ",\"seq_repeats\":%" PRId64
                ",\"tie_disorder\":%" PRId64 ",\"tie_joins\":%" PRId64
                ",\"vehicles\":%zu,\"expected\":%" PRId64 ",\"expected_markers\":%" PRId64
                ",\"complete\":%s,\"ok\":%s,\"eof\":%s,\"timed_out\":%s,"
                "\"wall_first\":%.6f,\"wall_done\":%.6f,\"wall_end\":%.6f,\"error\":\"%s\","
                "\"first_problem\":\"%s\",\"own_cpu_s\":%.3f,\"tls\":%s,\"tls_close\":%s}\n",
                i, check.records, check.markers, check.bytes, seconds,
                check.out_of_order == 0 ? "true" : "false", check.out_of_order, check.unparsed,
                check.seq_gaps, check.seq_repeats, check.tie_disorder, check.tie_joins,
                check.next_seq.size(), expect, expect_markers, complete ? "true" : "false",
                ok ? "true" : "false", r.eof ? "true" : "false",
                timed_out && !r.done ? "true" : "false", r.wall_first, r.wall_data, wall_end,
                json_escape(r.error).c_str(), json_escape(check.first_problem).c_str(), own_cpu_s(),
                json_string_or_null(protocol).c_str(),
                protocol.empty() || !r.eof ? "null"
                : close_notify             ? "\"close_notify\""
                                           : "\"eof without close_notify\"");
  }
  return all_ok ? 0 : 1;
}

// --- vehicles ------------------------------------------------------------

int run_vehicles(Args& args) {
  std::string base;
  int64_t count = -1;
  int64_t records = 20;
  int64_t min_ms = 100, max_ms = 1000;
  int64_t seed = 1;
  parse_options(args, "vehicles",
                {text_option("--connect-base", base),
                 int_option("--count", count, 1, 60000),
                 int_option("--records", records, 0, INT64_C(1) << 40),
                 int_option("--seed", seed, 0, INT64_MAX),
                 {"--interval-ms", [&](Args& a, const std::string& n) {
                    std::string v = a.value(n);
                    auto colon = v.find(':');
                    if (colon == std::string::npos) usage("--interval-ms MIN:MAX");
                    min_ms = to_int(v.substr(0, colon), n, 1, 3600000);
                    max_ms = to_int(v.substr(colon + 1), n, min_ms, 3600000);
                  }}});
  if (base.empty() || count < 0) usage("vehicles needs --connect-base and --count");
  raise_fd_limit();

  struct Vehicle {
    int fd = -1;
    bool connected = false;
    bool finished = false;  // marker queued
    bool closed = false;
    int64_t seq = 0;
    int64_t last_key = 0;
    std::string pending;
    std::unique_ptr<RecordMaker> maker;
  };
  const size_t n = static_cast<size_t>(count);
  std::vector<Vehicle> cars(n);
  std::mt19937_64 rng(static_cast<uint64_t>(seed));
  std::uniform_int_distribution<int64_t> interval(min_ms, max_ms);
  std::uniform_int_distribution<int64_t> first(0, max_ms);
  using Event = std::pair<double, size_t>;  // (due, vehicle)
  std::priority_queue<Event, std::vector<Event>, std::greater<>> due;

  const double t0 = now_s();
  int64_t failed = 0, dropped = 0, connected = 0;
  for (size_t j = 0; j < n; ++j) {
    Address a = parse_address(base, static_cast<int>(j));
    int fd = socket(a.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) fail("socket");
    int rc = connect(fd, reinterpret_cast<const sockaddr*>(&a.addr), a.len);
    if (rc < 0 && errno != EINPROGRESS) {
      std::fprintf(stderr, "chronomerge_loadgen: vehicle %zu: connect: %s\n", j,
                   std::strerror(errno));
      close(fd);
      ++failed;
      cars[j].closed = true;
      continue;
    }
    cars[j].fd = fd;
    cars[j].connected = rc == 0;
    if (rc == 0) ++connected;
    cars[j].maker = std::make_unique<RecordMaker>(static_cast<int>(j));
    due.emplace(t0 + static_cast<double>(first(rng)) / 1000.0, j);
  }

  int64_t sent = 0;
  uint64_t bytes = 0;
  char line[RecordMaker::max_bytes];
  std::vector<pollfd> fds;
  std::vector<size_t> who;
  size_t open_count = n - static_cast<size_t>(failed);

  auto drop = [&](Vehicle& c, size_t j, const char* why) {
    if (c.closed) return;
    std::fprintf(stderr, "chronomerge_loadgen: vehicle %zu: %s\n", j, why);
    close(c.fd);
    c.closed = true;
    --open_count;
    ++dropped;
  };
  auto flush = [&](Vehicle& c, size_t j) {
    while (!c.pending.empty() && !c.closed) {
      ssize_t w = send(c.fd, c.pending.data(), c.pending.size(), MSG_NOSIGNAL);
      if (w > 0) {
        c.pending.erase(0, static_cast<size_t>(w));
      } else if (w < 0 && errno == EINTR) {
        continue;
      } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOTCONN)) {
        return;  // poll for POLLOUT
      } else {
        drop(c, j, std::strerror(errno));
      }
    }
    if (c.finished && c.pending.empty() && !c.closed) {
      shutdown(c.fd, SHUT_WR);
      close(c.fd);
      c.closed = true;
      --open_count;
    }
  };

  while (open_count > 0 && !g_stop) {
    double now = now_s();
    while (!due.empty() && due.top().first <= now) {
      size_t j = due.top().second;
      due.pop();
      Vehicle& c = cars[j];
      if (c.closed) continue;
      if (c.seq < records) {
        c.last_key = std::max(c.last_key, wall_ms());
        size_t len = c.maker->make(line, c.last_key, c.seq);
        c.pending.append(line, len);
        ++c.seq;
        ++sent;
        bytes += len;
        due.emplace(now + static_cast<double>(interval(rng)) / 1000.0, j);
      } else {
        size_t len = c.maker->make_marker(line);
        c.pending.append(line, len);
        c.finished = true;
      }
      if (c.connected) flush(c, j);
    }
    fds.clear();
    who.clear();
    for (size_t j = 0; j < n; ++j) {
      Vehicle& c = cars[j];
      if (c.closed) continue;
      short events = POLLIN;  // a close by the daemon (refused, reset) shows here
      if (!c.connected || !c.pending.empty()) events |= POLLOUT;
      fds.push_back({c.fd, events, 0});
      who.push_back(j);
    }
    int ms = 1000;
    if (!due.empty()) ms = static_cast<int>(std::max(0.0, due.top().first - now_s()) * 1000) + 1;
    int rc = poll(fds.data(), fds.size(), ms);
    if (rc < 0 && errno != EINTR) fail("poll");
    if (rc <= 0) continue;
    for (size_t k = 0; k < fds.size(); ++k) {
      if (fds[k].revents == 0) continue;
      size_t j = who[k];
      Vehicle& c = cars[j];
      if (!c.connected && (fds[k].revents & (POLLOUT | POLLERR | POLLHUP))) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
          std::fprintf(stderr, "chronomerge_loadgen: vehicle %zu: connect: %s\n", j,
                       std::strerror(err));
          close(c.fd);
          c.closed = true;
          --open_count;
          ++failed;
          continue;
        }
        c.connected = true;
        ++connected;
        int one = 1;
        setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      }
      if (fds[k].revents & (POLLIN | POLLHUP | POLLERR)) {
        char sink[256];
        ssize_t r = recv(c.fd, sink, sizeof(sink), 0);
        if (r == 0) {
          drop(c, j, "closed by the daemon");
          continue;
        }
        if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          drop(c, j, std::strerror(errno));
          continue;
        }
      }
      if (c.connected) flush(c, j);
    }
  }
  for (auto& c : cars) {
    if (!c.closed) close(c.fd);
  }
  std::printf("{\"mode\":\"vehicles\",\"vehicles\":%zu,\"connected\":%" PRId64
              ",\"failed\":%" PRId64 ",\"dropped\":%" PRId64 ",\"records\":%" PRId64
              ",\"bytes\":%" PRIu64 ",\"seconds\":%.3f}\n",
              n, connected, failed, dropped, sent, bytes, now_s() - t0);
  return failed == 0 && dropped == 0 ? 0 : 1;
}

// --- paced and latency ---------------------------------------------------

int64_t mono_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void sleep_until_ns(int64_t t) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(t / 1000000000);
  ts.tv_nsec = static_cast<long>(t % 1000000000);
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR && !g_stop) {
  }
}

// CPU time of one process (utime, stime in clock ticks) and of the whole
// machine (busy and total jiffies from /proc/stat). -1 when unreadable.
struct CpuSample {
  int64_t utime = -1;
  int64_t stime = -1;
  int64_t busy = -1;
  int64_t total = -1;
};

CpuSample sample_cpu(int64_t pid) {
  CpuSample s;
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%" PRId64 "/stat", pid);
  if (FILE* f = std::fopen(path, "r")) {
    char text[1024];
    size_t n = std::fread(text, 1, sizeof(text) - 1, f);
    std::fclose(f);
    text[n] = '\0';
    // Fields after the parenthesised command name start at field 3 (state);
    // utime and stime are fields 14 and 15.
    if (const char* p = std::strrchr(text, ')')) {
      ++p;
      for (int field = 3; field <= 15 && *p; ++field) {
        while (*p == ' ') ++p;
        char* end = nullptr;
        long long v = std::strtoll(p, &end, 10);
        if (field == 14) s.utime = v;
        if (field == 15) s.stime = v;
        while (*p && *p != ' ') ++p;
      }
    }
  }
  if (FILE* f = std::fopen("/proc/stat", "r")) {
    long long v[10] = {};
    if (std::fscanf(f, "cpu %lld %lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3],
                    &v[4], &v[5], &v[6], &v[7]) == 8) {
      s.total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
      s.busy = s.total - v[3] - v[4];  // minus idle and iowait
    }
    std::fclose(f);
  }
  return s;
}

// Nearest-rank percentile of a sorted vector (q in [0, 1]).
int64_t percentile(const std::vector<int64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

// {"p50":..,"p99":..,"p999":..,"max":..,"mean":..} in microseconds.
std::string summary_us(std::vector<int64_t> ns) {
  std::sort(ns.begin(), ns.end());
  double sum = 0;
  for (int64_t v : ns) sum += static_cast<double>(v);
  char out[256];
  std::snprintf(out, sizeof(out),
                "{\"n\":%zu,\"p50\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f,\"mean\":%.1f}",
                ns.size(), static_cast<double>(percentile(ns, 0.50)) / 1e3,
                static_cast<double>(percentile(ns, 0.99)) / 1e3,
                static_cast<double>(percentile(ns, 0.999)) / 1e3,
                ns.empty() ? 0.0 : static_cast<double>(ns.back()) / 1e3,
                ns.empty() ? 0.0 : sum / static_cast<double>(ns.size()) / 1e3);
  return out;
}

int run_paced(Args& args) {
  std::string base;
  int64_t feeds = -1;
  double rate = 0;
  int64_t records = -1;
  int64_t stride = 0;
  int64_t start = default_start;
  int64_t cpu_pid = 0, cpu_from = -1, cpu_to = -1;
  parse_options(
      args, "paced",
      {text_option("--connect-base", base), int_option("--feeds", feeds, 1, 9999),
       number_option("--rate", rate), int_option("--records", records, 1, INT64_C(1) << 40),
       int_option("--stride", stride, 1, 1000000),
       int_option("--start-time", start, 0, marker_key / 2),
       int_option("--cpu-pid", cpu_pid, 1, INT32_MAX),
       int_option("--cpu-from", cpu_from, 0, INT64_C(1) << 40),
       int_option("--cpu-to", cpu_to, 0, INT64_C(1) << 40)});
  if (base.empty() || feeds < 0 || records < 0 || !(rate > 0))
    usage("paced needs --connect-base, --feeds, --records and a --rate above 0");
  if (stride == 0) {
    stride = 1;
    while (stride <= feeds) stride *= 2;
  }
  if (stride < feeds) usage("paced: --stride must be at least --feeds (keys must not tie)");
  if (start + records * stride + stride >= marker_key)
    usage("paced: keys would reach the end marker");
  if (cpu_from < 0) cpu_from = 0;
  if (cpu_to < 0 || cpu_to > records) cpu_to = records;
  if (cpu_to < cpu_from) usage("paced: --cpu-to before --cpu-from");
  raise_fd_limit();

  struct Producer {
    int fd = -1;
    std::string pending;  // bytes the socket did not take yet
    std::unique_ptr<RecordMaker> maker;
  };
  const auto n = static_cast<size_t>(feeds);
  std::vector<Producer> feed(n);
  for (size_t j = 0; j < n; ++j) {
    feed[j].fd = connect_to(parse_address(base, static_cast<int>(j)));
    feed[j].maker = std::make_unique<RecordMaker>(static_cast<int>(j));
  }

  int64_t deferred = 0;  // records that found their socket full (should stay 0)
  size_t pending_feeds = 0;
  // Writes what the socket takes; false on an error other than a full socket.
  auto flush = [&](Producer& p) {
    while (!p.pending.empty()) {
      ssize_t w = send(p.fd, p.pending.data(), p.pending.size(), MSG_NOSIGNAL);
      if (w > 0) {
        p.pending.erase(0, static_cast<size_t>(w));
        if (p.pending.empty()) --pending_feeds;
      } else if (w < 0 && errno == EINTR) {
        continue;
      } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return true;
      } else {
        return false;
      }
    }
    return true;
  };
  // Waits for POLLOUT on the feeds with pending bytes until `until_ns`
  // (or until none is pending), flushing them.
  std::vector<pollfd> fds;
  std::vector<size_t> who;
  auto drain_until = [&](int64_t until_ns) {
    while (pending_feeds > 0 && !g_stop) {
      int64_t left = until_ns - mono_ns();
      if (left <= 0) return;
      fds.clear();
      who.clear();
      for (size_t j = 0; j < n; ++j) {
        if (feed[j].pending.empty()) continue;
        fds.push_back({feed[j].fd, POLLOUT, 0});
        who.push_back(j);
      }
      int rc = poll(fds.data(), fds.size(), static_cast<int>(left / 1000000) + 1);
      if (rc < 0 && errno != EINTR) fail("poll");
      for (size_t k = 0; rc > 0 && k < fds.size(); ++k) {
        if (fds[k].revents == 0) continue;
        if (!flush(feed[who[k]])) fail("send");
      }
    }
  };

  const double period_ns = 1e9 / rate;
  const int64_t t0 = mono_ns() + 20000000;  // 20 ms to settle after connecting
  std::vector<int64_t> lags, tick_lengths;  // over the ticks [cpu_from, cpu_to)
  lags.reserve(static_cast<size_t>(cpu_to - cpu_from));
  tick_lengths.reserve(static_cast<size_t>(cpu_to - cpu_from));
  CpuSample cpu0, cpu1;
  char line[RecordMaker::max_bytes];
  int64_t ticks = 0;
  for (int64_t i = 0; i < records && !g_stop; ++i) {
    const int64_t due = t0 + static_cast<int64_t>(std::llround(static_cast<double>(i) * period_ns));
    drain_until(due);
    sleep_until_ns(due);
    if (cpu_pid > 0 && i == cpu_from) cpu0 = sample_cpu(cpu_pid);
    if (cpu_pid > 0 && i == cpu_to) cpu1 = sample_cpu(cpu_pid);
    const int64_t begin = mono_ns();
    for (size_t j = 0; j < n; ++j) {
      Producer& p = feed[j];
      size_t len = p.maker->make(line, start + i * stride + static_cast<int64_t>(j), i, mono_ns());
      if (!p.pending.empty()) {
        p.pending.append(line, len);
        ++deferred;
        if (!flush(p)) fail("send");
        continue;
      }
      ssize_t w = send(p.fd, line, len, MSG_NOSIGNAL);
      if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) fail("send");
      size_t done = w > 0 ? static_cast<size_t>(w) : 0;
      if (done < len) {
        p.pending.append(line + done, len - done);
        ++pending_feeds;
        ++deferred;
      }
    }
    if (i >= cpu_from && i < cpu_to) {
      lags.push_back(begin - due);
      tick_lengths.push_back(mono_ns() - begin);
    }
    ticks = i + 1;
  }
  if (cpu_pid > 0 && cpu_to == records) cpu1 = sample_cpu(cpu_pid);

  // End markers, then close: the daemon drains them on SIGTERM.
  for (size_t j = 0; j < n; ++j) {
    Producer& p = feed[j];
    size_t len = p.maker->make_marker(line);
    if (p.pending.empty()) ++pending_feeds;
    p.pending.append(line, len);
    if (!flush(p)) fail("send");
  }
  drain_until(mono_ns() + 30 * INT64_C(1000000000));
  for (auto& p : feed) {
    shutdown(p.fd, SHUT_WR);
    close(p.fd);
  }
  rusage self{};
  getrusage(RUSAGE_SELF, &self);
  const double own_cpu = static_cast<double>(self.ru_utime.tv_sec + self.ru_stime.tv_sec) +
                         static_cast<double>(self.ru_utime.tv_usec + self.ru_stime.tv_usec) * 1e-6;
  const bool have_cpu = cpu0.utime >= 0 && cpu1.utime >= 0;
  std::printf("{\"mode\":\"paced\",\"feeds\":%" PRId64 ",\"rate\":%.3f,\"ticks\":%" PRId64
              ",\"records\":%" PRId64 ",\"stride\":%" PRId64 ",\"deferred\":%" PRId64
              ",\"unsent_at_end\":%zu,\"cpu_from\":%" PRId64 ",\"cpu_to\":%" PRId64
              ",\"daemon_utime_ticks\":%" PRId64 ",\"daemon_stime_ticks\":%" PRId64
              ",\"machine_busy_ticks\":%" PRId64 ",\"machine_total_ticks\":%" PRId64
              ",\"clk_tck\":%ld,\"window_s\":%.3f,\"own_cpu_s\":%.3f,"
              "\"tick_lag_us\":%s,\"tick_length_us\":%s}\n",
              feeds, rate, ticks, ticks * feeds, stride, deferred, pending_feeds, cpu_from, cpu_to,
              have_cpu ? cpu1.utime - cpu0.utime : -1, have_cpu ? cpu1.stime - cpu0.stime : -1,
              cpu1.busy >= 0 && cpu0.busy >= 0 ? cpu1.busy - cpu0.busy : -1,
              cpu1.total >= 0 && cpu0.total >= 0 ? cpu1.total - cpu0.total : -1,
              sysconf(_SC_CLK_TCK), static_cast<double>(cpu_to - cpu_from) / rate, own_cpu,
              summary_us(lags).c_str(), summary_us(tick_lengths).c_str());
  return ticks == records && pending_feeds == 0 ? 0 : 1;
}

int run_latency(Args& args) {
  std::string connect;
  int64_t feeds = -1;
  int64_t from_seq = 0, to_seq = INT64_MAX;
  std::string raw_out, trace_out, ready_file, done_file;
  double timeout = 0;
  parse_options(
      args, "latency",
      {text_option("--connect", connect), int_option("--feeds", feeds, 1, 9999),
       int_option("--from-seq", from_seq, 0, INT64_C(1) << 40),
       int_option("--to-seq", to_seq, 0, INT64_C(1) << 40), text_option("--raw-out", raw_out),
       text_option("--trace-out", trace_out), number_option("--timeout", timeout),
       text_option("--ready-file", ready_file), text_option("--done-file", done_file)});
  if (connect.empty() || feeds < 0) usage("latency needs --connect and --feeds");

  Checker check;
  check.key_prefix = "\"time\":";
  check.strict = true;
  struct Received {
    int64_t key;
    int64_t sent_ns;
    int64_t recv_ns;
    int64_t seq;
    int64_t feed;
  };
  std::vector<Received> got;
  if (to_seq != INT64_MAX) got.reserve(static_cast<size_t>(feeds * (to_seq + 1000)));
  int64_t unstamped = 0;

  int fd = connect_to(parse_address(connect));
  touch_file(ready_file);
  const double deadline = timeout > 0 ? now_s() + timeout : 0;
  std::vector<char> buf(1 << 20);
  size_t have = 0;
  bool eof = false, timed_out = false, marker_seen = false;
  std::string error;
  while (!g_stop) {
    if (deadline > 0 && now_s() >= deadline) {
      timed_out = true;
      break;
    }
    if (have == buf.size()) buf.resize(buf.size() * 2);
    const ssize_t n = read_some(fd, buf.data() + have, buf.size() - have, 1000, eof, error);
    // One receive time per read: every line in it reached us together.
    const int64_t recv_ns = mono_ns();
    if (n == 0) continue;
    if (n < 0) break;
    size_t total = have + static_cast<size_t>(n);
    size_t start = 0;
    while (start < total) {
      auto* nl = static_cast<char*>(std::memchr(buf.data() + start, '\n', total - start));
      if (nl == nullptr) break;
      std::string_view l(buf.data() + start, static_cast<size_t>(nl - buf.data()) - start);
      start = static_cast<size_t>(nl - buf.data()) + 1;
      if (l.empty()) continue;
      const int64_t records = check.records;
      check.line(l);
      if (check.markers > 0 && !marker_seen) {
        marker_seen = true;
        touch_file(done_file);
      }
      if (check.records == records) continue;
      // A data record: {"time":K,"vehicle":"bus-J","seq":I,"sent_ns":S,...}
      Received r{};
      auto field = [&](std::string_view name, int64_t& v) {
        auto at = l.find(name);
        if (at == std::string_view::npos) return false;
        const char* p = l.data() + at + name.size();
        return std::from_chars(p, l.data() + l.size(), v).ec == std::errc();
      };
      if (!field("\"time\":", r.key) || !field("\"vehicle\":\"bus-", r.feed) ||
          !field("\"seq\":", r.seq) || !field("\"sent_ns\":", r.sent_ns) || r.feed < 0 ||
          r.feed >= feeds) {
        ++unstamped;
        continue;
      }
      r.recv_ns = recv_ns;
      got.push_back(r);
    }
    have = total - start;
    if (have > 0 && start > 0) std::memmove(buf.data(), buf.data() + start, have);
  }
  close(fd);

  // The emittable moment of record R (feed f, key K): the merge can emit R
  // once every other feed g has a record with key >= K, so it is the latest
  // of R's own send time and, over every other feed g, the send time of g's
  // first record with key >= K. One sweep from the largest key down keeps,
  // per feed, the send time of its first record at or past the current key.
  std::stable_sort(got.begin(), got.end(),
                   [](const Received& a, const Received& b) { return a.key < b.key; });
  std::vector<int64_t> next_sent(static_cast<size_t>(feeds), -1);
  int64_t feeds_unseen = feeds;
  std::vector<int64_t> emittable_ns, arrival_ns;
  int64_t not_emittable = 0, negative = 0;
  FILE* trace = trace_out.empty() ? nullptr : std::fopen(trace_out.c_str(), "w");
  if (trace != nullptr) std::fputs("key feed seq sent_ns emittable_ns recv_ns\n", trace);
  size_t i = got.size();
  while (i > 0) {
    size_t j = i;
    while (j > 0 && got[j - 1].key == got[i - 1].key) --j;
    // Records with the same key (from different feeds) are emittable
    // together; in a feed, the first of equal keys counts.
    for (size_t k = i; k-- > j;) {
      auto f = static_cast<size_t>(got[k].feed);
      if (next_sent[f] < 0) --feeds_unseen;
      next_sent[f] = got[k].sent_ns;
    }
    int64_t emit = feeds_unseen == 0 ? *std::max_element(next_sent.begin(), next_sent.end()) : -1;
    for (size_t k = j; k < i; ++k) {
      const Received& r = got[k];
      if (r.seq < from_seq || r.seq >= to_seq) continue;
      if (emit < 0) {
        ++not_emittable;  // some feed sent nothing at or past this key
        continue;
      }
      if (r.recv_ns < emit) ++negative;
      if (trace != nullptr) {
        std::fprintf(trace,
                     "%" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 "\n",
                     r.key, r.feed, r.seq, r.sent_ns, emit, r.recv_ns);
      }
      emittable_ns.push_back(r.recv_ns - emit);
      arrival_ns.push_back(r.recv_ns - r.sent_ns);
    }
    i = j;
  }
  if (trace != nullptr) std::fclose(trace);
  if (!raw_out.empty()) {
    if (FILE* f = std::fopen(raw_out.c_str(), "wb")) {
      for (size_t k = 0; k < emittable_ns.size(); ++k) {
        int64_t pair[2] = {emittable_ns[k], arrival_ns[k]};
        std::fwrite(pair, sizeof(pair), 1, f);
      }
      std::fclose(f);
    } else {
      error = "cannot write " + raw_out;
    }
  }
  const int64_t expected = to_seq == INT64_MAX ? -1 : feeds * (to_seq - from_seq);
  const auto measured = static_cast<int64_t>(emittable_ns.size());
  bool ok = error.empty() && check.out_of_order == 0 && check.seq_gaps == 0 &&
            check.seq_repeats == 0 && check.unparsed == 0 && unstamped == 0 &&
            (expected < 0 || measured == expected) && marker_seen;
  std::printf("{\"mode\":\"latency\",\"records\":%" PRId64 ",\"markers\":%" PRId64
              ",\"measured\":%" PRId64 ",\"expected\":%" PRId64 ",\"not_emittable\":%" PRId64
              ",\"negative\":%" PRId64 ",\"unstamped\":%" PRId64 ",\"out_of_order\":%" PRId64
              ",\"seq_gaps\":%" PRId64 ",\"seq_repeats\":%" PRId64 ",\"unparsed\":%" PRId64
              ",\"eof\":%s,\"timed_out\":%s,\"ok\":%s,\"error\":\"%s\",\"first_problem\":\"%s\","
              "\"emittable_us\":%s,\"arrival_us\":%s}\n",
              check.records, check.markers, measured, expected, not_emittable, negative, unstamped,
              check.out_of_order, check.seq_gaps, check.seq_repeats, check.unparsed,
              eof ? "true" : "false", timed_out ? "true" : "false", ok ? "true" : "false",
              json_escape(error).c_str(), json_escape(check.first_problem).c_str(),
              summary_us(emittable_ns).c_str(), summary_us(arrival_ns).c_str());
  return ok ? 0 : 1;
}

// --- fleet ---------------------------------------------------------------

// M members of one fleet feed, each a connection of its own to the same
// port, all driven from one poll() loop. Member j names itself bus-NNNNN in
// its hello, then sends its record i at (its first moment) + i/R: the first
// moment is uniform within one period after it connected, so that the
// sends of all members spread evenly over time instead of coming in a
// burst. One write() per record, as a vehicle on a network would send it.
// Key: origin + elapsed_ms * stride + j % stride, elapsed on CLOCK_MONOTONIC
// since the start, so every member's keys follow the same clock and never
// go back; with the default origin (the wall clock at the start) and stride
// 1 the key is the wall clock in ms. After R*SEC records (SEC after its
// first record) a member sends its end marker and closes.
//
// The loop wakes for the next due record (or connection), and poll()s only
// the sockets it waits for: those still connecting and those with bytes
// the kernel did not take. Every 250 ms it also polls every open socket for
// input, to see the daemon close (refuse) one; it discards anything read.
int run_fleet(Args& args) {
  std::string connect;
  int64_t members = -1;
  double rate = 0;
  double duration = -1;
  int64_t origin = -1;
  int64_t stride = 1;
  double connect_rate = 0;
  double connect_timeout = 30;
  double grace = 30;
  int64_t seed = 1;
  TlsOptions tls;
  parse_options(
      args, "fleet",
      with_tls(tls,
               {text_option("--connect", connect), int_option("--members", members, 1, 99999),
                number_option("--rate", rate), number_option("--duration", duration),
                int_option("--start-time", origin, 0, marker_key / 2),
                int_option("--stride", stride, 1, 1000000),
                number_option("--connect-rate", connect_rate),
                number_option("--connect-timeout", connect_timeout),
                number_option("--grace", grace), int_option("--seed", seed, 0, INT64_MAX)},
               true));
  if (connect.empty() || members < 0 || !(rate > 0) || duration < 0)
    usage("fleet needs --connect, --members, a --rate above 0 and a --duration");
  check_tls_options(tls, "fleet");
  const auto per_member = static_cast<int64_t>(std::llround(rate * duration));
  const auto n = static_cast<size_t>(members);
  const double period_ns = 1e9 / rate;
  const double ramp_s = connect_rate > 0 ? static_cast<double>(members) / connect_rate : 0;
  // The latest a record can be due: the last connection, a period of phase,
  // every record, the marker; then time to flush.
  const double last_due_s =
      ramp_s + connect_timeout + static_cast<double>(per_member + 2) * period_ns / 1e9;
  if (origin < 0) origin = wall_ms();
  if (origin + static_cast<int64_t>((last_due_s + grace + 1) * 1000) * stride + stride >=
      marker_key)
    usage("fleet: keys would reach the end marker");
  raise_fd_limit();
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY &&
      lim.rlim_cur < static_cast<rlim_t>(members) + 16) {
    usage(("fleet: " + std::to_string(members) + " members need more open files than the limit, " +
           std::to_string(lim.rlim_cur))
              .c_str());
  }

  // With TLS, every member's certificate and key are loaded before the
  // first connection, so that the connect storm is only connecting.
  SSL_CTX* ctx = tls.on() ? make_tls_context(tls) : nullptr;
  MemberCerts member_certs;
  if (!tls.cert_dir.empty()) member_certs = load_member_certs(tls.cert_dir, n);
  // Named by the certificate: no hello.
  const bool send_hello = tls.cert_dir.empty();

  enum class State : uint8_t { waiting, connecting, handshaking, open, closing, closed };
  struct Member {
    Link link;
    State state = State::waiting;
    bool watched = false;  // in `watch`
    char name[24] = {};    // "00042"
    int64_t seq = 0;
    int64_t connect_ns = 0;
    int64_t first_due_ns = 0;
    std::string pending;  // bytes the socket did not take yet
  };
  std::vector<Member> fleet(n);
  for (size_t j = 0; j < n; ++j) std::snprintf(fleet[j].name, sizeof(fleet[j].name), "%05zu", j);
  // The record tails of 128 vehicles, shared: 10,000 makers would hold
  // 80 MB of tails.
  std::vector<std::unique_ptr<RecordMaker>> makers(std::min<size_t>(n, 128));
  for (size_t k = 0; k < makers.size(); ++k)
    makers[k] = std::make_unique<RecordMaker>(static_cast<int>(k));
  const Address address = parse_address(connect);
  std::mt19937_64 rng(static_cast<uint64_t>(seed));
  std::uniform_real_distribution<double> phase(0, period_ns);

  using Event = std::pair<int64_t, uint32_t>;  // (due ns, member)
  std::priority_queue<Event, std::vector<Event>, std::greater<>> due;
  std::vector<uint32_t> watch;  // connecting, or bytes pending

  int64_t connected = 0, failed = 0, dropped = 0;
  int64_t records = 0, lost = 0, markers = 0, deferred = 0;
  uint64_t bytes = 0, bytes_in = 0;
  size_t max_pending = 0;
  size_t open_count = n;  // members not closed yet (including those not started)
  std::string first_error;
  int64_t errors_logged = 0;
  double wall_all = 0, wall_first_end = 0, wall_last_end = 0;
  double first_drop_s = -1, last_drop_s = -1;  // since the start
  int64_t established_ns = 0;
  std::vector<int64_t> setup_ns;  // connect() to connection made (TLS: handshake done), per member
  setup_ns.reserve(n);
  std::string protocol;       // of the first member connected
  std::vector<int64_t> lags;  // ns behind schedule, of every `lag_every`th record
  const int64_t lag_every = std::max<int64_t>(1, members * per_member / 1000000);
  lags.reserve(static_cast<size_t>(members * per_member / lag_every + 16));

  const int64_t t0 = mono_ns();
  const double wall0 = wall_s();
  const int64_t hard_deadline = t0 + static_cast<int64_t>((last_due_s + grace) * 1e9);

  auto error = [&](size_t j, const std::string& what) {
    if (first_error.empty()) first_error = "bus-" + std::string(fleet[j].name) + ": " + what;
    if (errors_logged++ < 10) {
      std::fprintf(stderr, "chronomerge_loadgen: fleet member bus-%s: %s\n", fleet[j].name,
                   what.c_str());
    }
  };
  auto records_in = [](const std::string& s) {
    int64_t k = 0;
    for (size_t at = s.find("\"seq\":"); at != std::string::npos; at = s.find("\"seq\":", at + 1))
      ++k;
    return k;
  };
  auto close_member = [&](Member& m) {
    if (m.state == State::closed) return;
    link_close(m.link);
    m.state = State::closed;
    --open_count;
  };
  auto drop = [&](size_t j, const std::string& why) {
    Member& m = fleet[j];
    if (m.state == State::closed) return;
    error(j, why);
    lost += records_in(m.pending);
    m.pending.clear();
    const double at = static_cast<double>(mono_ns() - t0) / 1e9;
    if (dropped == 0) first_drop_s = at;
    last_drop_s = at;
    ++dropped;
    close_member(m);
  };
  auto watch_member = [&](size_t j) {
    if (!fleet[j].watched) {
      fleet[j].watched = true;
      watch.push_back(static_cast<uint32_t>(j));
    }
  };
  // After the marker: close once everything is out.
  auto end_if_done = [&](Member& m) {
    if (m.state == State::closing && m.pending.empty()) {
      if (m.link.ssl == nullptr) shutdown(m.link.fd, SHUT_WR);
      close_member(m);
      wall_last_end = wall_s();
    }
  };
  auto flush = [&](size_t j) {
    Member& m = fleet[j];
    while (!m.pending.empty()) {
      std::string why;
      ssize_t w = link_write(m.link, m.pending.data(), m.pending.size(), why);
      if (w > 0) {
        bytes += static_cast<uint64_t>(w);
        m.pending.erase(0, static_cast<size_t>(w));
      } else if (w == 0) {
        return;
      } else {
        drop(j, why);
        return;
      }
    }
    end_if_done(m);
  };
  // Sends `len` bytes behind whatever is pending.
  auto put = [&](size_t j, const char* data, size_t len) {
    Member& m = fleet[j];
    if (!m.pending.empty()) {
      m.pending.append(data, len);
      ++deferred;
      max_pending = std::max(max_pending, m.pending.size());
      flush(j);
      return;
    }
    std::string why;
    ssize_t w = link_write(m.link, data, len, why);
    if (w < 0) {
      drop(j, why);
      return;
    }
    size_t done = w > 0 ? static_cast<size_t>(w) : 0;
    bytes += done;
    if (done < len) {
      m.pending.append(data + done, len - done);
      ++deferred;
      max_pending = std::max(max_pending, m.pending.size());
      watch_member(j);
    }
    end_if_done(m);
  };
  char line[RecordMaker::max_bytes];
  auto established = [&](size_t j) {
    Member& m = fleet[j];
    const int64_t now = mono_ns();
    m.state = State::open;
    ++connected;
    established_ns = now;
    setup_ns.push_back(now - m.connect_ns);
    if (protocol.empty()) protocol = m.link.describe();
    if (connected == members) {
      wall_all = wall_s();
      std::fprintf(stderr, "chronomerge_loadgen: fleet: %" PRId64 " members connected in %.3f s\n",
                   connected, static_cast<double>(now - t0) / 1e9);
    }
    if (send_hello) {
      int len = std::snprintf(line, sizeof(line), "{\"feed\":\"bus-%s\"}\n", m.name);
      put(j, line, static_cast<size_t>(len));
    }
    m.first_due_ns = now + static_cast<int64_t>(phase(rng));
    due.emplace(m.first_due_ns, static_cast<uint32_t>(j));
  };
  auto connect_failed = [&](size_t j, const std::string& why) {
    error(j, why);
    ++failed;
    close_member(fleet[j]);
  };
  // TCP is up: the member is open, or with TLS starts its handshake.
  auto tcp_up = [&](size_t j) {
    Member& m = fleet[j];
    int one = 1;
    setsockopt(m.link.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (ctx == nullptr) {
      established(j);
      return;
    }
    if (member_certs.certs.empty()) {
      tls_start(m.link, ctx);
    } else {
      tls_start(m.link, ctx, member_certs.certs[j], member_certs.keys[j]);
    }
    m.state = State::handshaking;
    watch_member(j);
  };
  // One step of a member's handshake, when its socket is ready for it.
  auto handshake = [&](size_t j) {
    Member& m = fleet[j];
    std::string why;
    const int rc = tls_handshake_step(m.link, why);
    if (rc > 0) {
      established(j);
    } else if (rc < 0) {
      connect_failed(j, why);
    }
  };
  auto start_connect = [&](size_t j) {
    Member& m = fleet[j];
    int fd = socket(address.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      connect_failed(j, std::string("socket: ") + std::strerror(errno));
      return;
    }
    m.link.fd = fd;
    m.connect_ns = mono_ns();
    int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&address.addr), address.len);
    if (rc == 0) {
      tcp_up(j);
      if (m.state == State::handshaking) handshake(j);
    } else if (errno == EINPROGRESS) {
      m.state = State::connecting;
      watch_member(j);
    } else {
      connect_failed(j, std::string("connect: ") + std::strerror(errno));
    }
  };
  // One due event of member j: its next record, or after the last its end
  // marker.
  auto send_due = [&](size_t j, int64_t due_ns, int64_t now) {
    Member& m = fleet[j];
    if (m.state != State::open) return;
    const RecordMaker& maker = *makers[j % makers.size()];
    const std::string_view name(m.name, 5);
    if (m.seq < per_member) {
      const int64_t key = origin + (now - t0) / 1000000 * stride + static_cast<int64_t>(j) % stride;
      size_t len = maker.make_as(line, name, key, m.seq);
      if (records % lag_every == 0) lags.push_back(now - due_ns);
      ++m.seq;
      ++records;
      put(j, line, len);
      if (m.state != State::open) return;  // dropped
      due.emplace(m.first_due_ns + static_cast<int64_t>(static_cast<double>(m.seq) * period_ns),
                  static_cast<uint32_t>(j));
    } else {
      size_t len = maker.make_marker(line, name);
      ++markers;
      if (wall_first_end == 0) wall_first_end = wall_s();
      m.state = State::closing;
      put(j, line, len);
    }
  };

  size_t next_connect = 0;
  int64_t last_sweep = t0;
  bool timed_out = false;
  std::vector<pollfd> fds;
  std::vector<uint32_t> who;
  constexpr int64_t sweep_ns = 250000000;
  const auto connect_timeout_ns = static_cast<int64_t>(connect_timeout * 1e9);
  auto connect_due = [&](size_t j) {
    return connect_rate > 0 ? t0 + static_cast<int64_t>(static_cast<double>(j) * 1e9 / connect_rate)
                            : t0;
  };
  while (open_count > 0 && !g_stop) {
    int64_t now = mono_ns();
    if (now >= hard_deadline) {
      timed_out = true;
      break;
    }
    // New connections: at most 256 a turn, so that a burst of them does
    // not hold up the records of the members already connected.
    for (int started = 0; next_connect < n && started < 256 && connect_due(next_connect) <= now;
         ++started) {
      start_connect(next_connect++);
    }
    now = mono_ns();
    while (!due.empty() && due.top().first <= now) {
      auto [at, j] = due.top();
      due.pop();
      send_due(j, at, now);
    }

    now = mono_ns();
    const bool sweep = now - last_sweep >= sweep_ns;
    fds.clear();
    who.clear();
    size_t kept = 0;
    for (uint32_t j : watch) {
      Member& m = fleet[j];
      const bool connecting = m.state == State::connecting || m.state == State::handshaking;
      if (connecting && now - m.connect_ns > connect_timeout_ns) {
        connect_failed(
            j, m.state == State::connecting ? "connect: timed out" : "TLS handshake: timed out");
      }
      if (m.state == State::closed || (!connecting && m.pending.empty())) {
        m.watched = false;
        continue;
      }
      watch[kept++] = j;
      // A handshake waits for what TLS asks; bytes pending for writable
      // (or what TLS asks), and for input, to see the daemon close.
      const short events = m.state == State::handshaking
                               ? m.link.want_handshake
                               : static_cast<short>(POLLIN | m.link.write_events());
      fds.push_back({m.link.fd, events, 0});
      who.push_back(j);
    }
    watch.resize(kept);
    if (sweep) {
      last_sweep = now;
      for (size_t j = 0; j < n; ++j) {
        Member& m = fleet[j];
        if ((m.state == State::open || m.state == State::closing) && !m.watched) {
          fds.push_back({m.link.fd, POLLIN, 0});
          who.push_back(static_cast<uint32_t>(j));
        }
      }
    }
    int64_t wake = std::min(hard_deadline, last_sweep + sweep_ns);
    if (!due.empty()) wake = std::min(wake, due.top().first);
    if (next_connect < n) wake = std::min(wake, connect_due(next_connect));
    const int timeout_ms =
        sweep ? 0 : static_cast<int>(std::clamp<int64_t>((wake - now + 999999) / 1000000, 0, 250));
    const int rc = poll(fds.data(), fds.size(), timeout_ms);
    if (rc < 0 && errno != EINTR) fail("poll");
    for (size_t k = 0; rc > 0 && k < fds.size(); ++k) {
      const short ev = fds[k].revents;
      if (ev == 0) continue;
      const size_t j = who[k];
      Member& m = fleet[j];
      if (m.state == State::connecting) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(m.link.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
          connect_failed(j, std::string("connect: ") + std::strerror(err));
        } else if (ev & (POLLOUT | POLLERR | POLLHUP)) {
          tcp_up(j);
          if (m.state == State::handshaking) handshake(j);
        }
        continue;
      }
      if (m.state == State::handshaking) {
        handshake(j);
        continue;
      }
      if (m.state == State::closed) continue;
      // With TLS, a read may be what a blocked write waits for.
      const bool tls_read_unblocks = m.link.ssl != nullptr && m.link.want_write == POLLIN;
      if (ev & (POLLIN | POLLHUP | POLLERR)) {
        char sink[512];
        bool eof = false;
        std::string why;
        ssize_t r = link_read(m.link, sink, sizeof(sink), eof, why);
        if (r < 0) {
          drop(j, eof ? "closed by the daemon" : why);
          continue;
        }
        if (r > 0) bytes_in += static_cast<uint64_t>(r);
      }
      if ((ev & POLLOUT || (tls_read_unblocks && ev & POLLIN)) && !m.pending.empty()) flush(j);
    }
  }
  // Whatever is left at the deadline (or on a signal) did not get out.
  int64_t unfinished = 0;
  for (size_t j = 0; j < n; ++j) {
    Member& m = fleet[j];
    if (m.state == State::closed) continue;
    ++unfinished;
    lost += records_in(m.pending);
    close_member(m);
  }
  const double seconds = static_cast<double>(mono_ns() - t0) / 1e9;
  rusage self{};
  getrusage(RUSAGE_SELF, &self);
  const double own_cpu = static_cast<double>(self.ru_utime.tv_sec + self.ru_stime.tv_sec) +
                         static_cast<double>(self.ru_utime.tv_usec + self.ru_stime.tv_usec) * 1e-6;
  // Records the kernel took (or that were in a socket the daemon then
  // reset: no way to know), and of those expected, the ones that did not.
  const int64_t sent = records - lost;
  const int64_t unsent = members * per_member - sent;
  const bool all = connected == members;
  std::printf(
      "{\"mode\":\"fleet\",\"members\":%" PRId64
      ",\"rate\":%.3f,\"duration\":%.3f,"
      "\"per_member\":%" PRId64 ",\"key_origin\":%" PRId64 ",\"stride\":%" PRId64
      ",\"connect_rate\":%.3f,\"connected\":%" PRId64 ",\"failed\":%" PRId64 ",\"dropped\":%" PRId64
      ",\"unfinished\":%" PRId64 ",\"errors\":%" PRId64 ",\"establish_s\":%.3f,\"records\":%" PRId64
      ",\"expected\":%" PRId64 ",\"unsent_records\":%" PRId64 ",\"markers\":%" PRId64
      ",\"bytes\":%" PRIu64 ",\"bytes_received\":%" PRIu64 ",\"deferred\":%" PRId64
      ",\"max_pending_bytes\":%zu,\"lag_us\":%s,\"wall_start\":%.6f,\"wall_all_connected\":%.6f,"
      "\"wall_first_end\":%.6f,\"wall_last_end\":%.6f,\"seconds\":%.3f,\"own_cpu_s\":%.3f,"
      "\"first_drop_s\":%.3f,\"last_drop_s\":%.3f,\"timed_out\":%s,\"first_error\":\"%s\","
      "\"setup_us\":%s,\"tls\":%s,\"hello\":%s}\n",
      members, rate, duration, per_member, origin, stride, connect_rate, connected, failed, dropped,
      unfinished, failed + dropped + unfinished,
      all ? static_cast<double>(established_ns - t0) / 1e9 : -1.0, sent, members * per_member,
      unsent, markers, bytes, bytes_in, deferred, max_pending, summary_us(lags).c_str(), wall0,
      wall_all, wall_first_end, wall_last_end, seconds, own_cpu, first_drop_s, last_drop_s,
      timed_out ? "true" : "false", json_escape(first_error).c_str(), summary_us(setup_ns).c_str(),
      json_string_or_null(protocol).c_str(), send_hello ? "true" : "false");
  return failed == 0 && dropped == 0 && unfinished == 0 && unsent == 0 ? 0 : 1;
}

// --- probe ---------------------------------------------------------------

// One GET on a new plain connection: the HTTP status (0: no complete
// answer in time; `error` says why).
int http_get_once(const Address& address, const std::string& request, int64_t deadline_ns,
                  std::string& error) {
  int fd = socket(address.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) fail("socket");
  auto wait = [&](short events) {
    for (;;) {
      const int64_t left = deadline_ns - mono_ns();
      if (left <= 0) return false;
      pollfd p{fd, events, 0};
      const int rc = poll(&p, 1, static_cast<int>((left + 999999) / 1000000));
      if (rc > 0) return true;
      if (rc < 0 && errno != EINTR) return false;
    }
  };
  int status = 0;
  std::string answer;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address.addr), address.len) != 0 &&
      errno != EINPROGRESS) {
    error = std::string("connect: ") + std::strerror(errno);
  } else if (!wait(POLLOUT)) {
    error = "connect: timed out";
  } else {
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      error = std::string("connect: ") + std::strerror(err);
    } else if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
               static_cast<ssize_t>(request.size())) {
      error = "send: the request did not fit at once";
    } else {
      // The daemon answers with Connection: close: the answer is all
      // there is until EOF.
      char buf[4096];
      for (;;) {
        const ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r > 0) {
          if (answer.size() < 1024) answer.append(buf, static_cast<size_t>(r));
          continue;
        }
        if (r == 0) break;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          error = std::string("recv: ") + std::strerror(errno);
          break;
        }
        if (!wait(POLLIN)) {
          error = "no complete answer in time";
          break;
        }
      }
      if (error.empty()) {
        int code = 0;
        if (std::sscanf(answer.c_str(), "HTTP/1.%*d %d", &code) == 1) {
          status = code;
        } else {
          error = "not an HTTP answer";
        }
      }
    }
  }
  close(fd);
  return status;
}

int run_probe(Args& args) {
  std::string connect;
  std::string path = "/healthz";
  int64_t interval_ms = 10;
  double duration = 0;
  std::string stop_file, raw_out, ready_file;
  int64_t timeout_ms = 5000;
  parse_options(
      args, "probe",
      {text_option("--connect", connect), text_option("--path", path),
       int_option("--interval-ms", interval_ms, 1, 60000), number_option("--duration", duration),
       text_option("--stop-file", stop_file), int_option("--timeout-ms", timeout_ms, 1, 600000),
       text_option("--raw-out", raw_out), text_option("--ready-file", ready_file)});
  if (connect.empty()) usage("probe needs --connect");
  if (duration <= 0 && stop_file.empty()) usage("probe needs --duration or --stop-file");
  const Address address = parse_address(connect);
  const std::string request =
      "GET " + path + " HTTP/1.1\r\nHost: " + connect + "\r\nConnection: close\r\n\r\n";

  struct Probe {
    double wall;  // its start
    int64_t ns;   // connect() to the end of the answer
    int status;
  };
  std::vector<Probe> probes;
  int64_t failures = 0, late_starts = 0;
  std::string first_error;
  const int64_t period = interval_ms * 1000000;
  const int64_t t0 = mono_ns();
  const int64_t end = duration > 0 ? t0 + static_cast<int64_t>(duration * 1e9) : INT64_MAX;
  int64_t next = t0;
  struct stat st {};
  touch_file(ready_file);
  while (!g_stop && mono_ns() < end && (stop_file.empty() || stat(stop_file.c_str(), &st) != 0)) {
    sleep_until_ns(next);
    const int64_t start = mono_ns();
    const double wall = wall_s();
    std::string error;
    const int status = http_get_once(address, request, start + timeout_ms * 1000000, error);
    const int64_t took = mono_ns() - start;
    probes.push_back({wall, took, status});
    if (status != 200) {
      ++failures;
      if (first_error.empty()) {
        first_error = error.empty() ? "HTTP status " + std::to_string(status) : error;
      }
    }
    // Fixed schedule; after a slow probe the next starts at once (counted),
    // and the schedule goes on from there.
    next += period;
    if (next < mono_ns()) {
      ++late_starts;
      next = mono_ns();
    }
  }
  std::vector<int64_t> ns;
  ns.reserve(probes.size());
  const Probe* slowest = nullptr;
  for (const Probe& p : probes) {
    ns.push_back(p.ns);
    if (slowest == nullptr || p.ns > slowest->ns) slowest = &p;
  }
  if (!raw_out.empty()) {
    if (FILE* f = std::fopen(raw_out.c_str(), "w")) {
      for (const Probe& p : probes) {
        std::fprintf(f, "%.6f %" PRId64 " %d\n", p.wall, p.ns / 1000, p.status);
      }
      std::fclose(f);
    } else {
      fail(raw_out.c_str());
    }
  }
  std::printf("{\"mode\":\"probe\",\"probes\":%zu,\"failures\":%" PRId64 ",\"late_starts\":%" PRId64
              ",\"interval_ms\":%" PRId64
              ",\"response_us\":%s,\"slowest_wall\":%.6f,\"seconds\":%.3f,"
              "\"first_error\":%s}\n",
              probes.size(), failures, late_starts, interval_ms, summary_us(ns).c_str(),
              slowest != nullptr ? slowest->wall : 0.0, static_cast<double>(mono_ns() - t0) / 1e9,
              json_string_or_null(first_error).c_str());
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stop = 1; };
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);

  if (argc < 2) usage("no mode given");
  Args args;
  for (int i = 2; i < argc; ++i) args.items.emplace_back(argv[i]);
  std::string mode = argv[1];
  if (mode == "produce") return run_produce(args);
  if (mode == "consume") return run_consume(args);
  if (mode == "vehicles") return run_vehicles(args);
  if (mode == "paced") return run_paced(args);
  if (mode == "latency") return run_latency(args);
  if (mode == "fleet") return run_fleet(args);
  if (mode == "probe") return run_probe(args);
  if (mode == "-h" || mode == "--help") {
    std::fprintf(stderr, "see the comment at the top of bench/loadgen.cc\n");
    return 0;
  }
  usage(("unknown mode '" + mode + "'").c_str());
}
