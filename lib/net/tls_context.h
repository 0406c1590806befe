// TlsContext: OpenSSL's SSL_CTX for one configured port, with the safe
// defaults: TLS 1.2 at least, no compression, no renegotiation, no session
// tickets, buffers released while a connection is idle.
//
// Built from a TlsConfig by reading its files (certificate chain, key, CA):
// check_tls_files() does the same for --check-config and a reload, so a bad
// file is a configuration problem at its JSON pointer, not a failure later.
//
// Immutable once built; shared by the connections made from it (a reload
// builds a new one for new handshakes). Loop thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"

struct ssl_ctx_st;
struct ssl_st;

namespace chronomerge {

class TlsContext {
 public:
  enum class Role { server, client };
  // A problem with one of the files or settings: `field` is the tls
  // object's member to point at ("cert", "key", "ca", "ciphers").
  struct Problem {
    std::string field;
    std::string message;
  };

  // The context, or the first problem found.
  static std::shared_ptr<TlsContext> make(const TlsConfig& config, Role role, Problem& problem);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  // A new connection's SSL object, set up for `role` (clients: the name to
  // verify and send as SNI, `server_name` or else `host`). Null if OpenSSL
  // is out of memory.
  ssl_st* new_connection(const std::string& host) const;
  // Whether this context's CA and CRL accept the peer certificate `ssl`
  // was verified with (made by another context, before a reload).
  bool accepts_peer_of(ssl_st* ssl) const;

  Role role() const { return role_; }
  const TlsConfig& config() const { return config_; }
  // When the configured certificate expires (Unix seconds); unset without
  // a certificate.
  std::optional<int64_t> expires_at() const { return expires_at_; }
  // Warnings found while loading (a private key readable by anyone).
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  TlsContext(ssl_ctx_st* ctx, TlsConfig config, Role role);

  ssl_ctx_st* ctx_;
  TlsConfig config_;
  Role role_;
  std::optional<int64_t> expires_at_;
  std::vector<std::string> warnings_;
};

// The context for a port, or null after logging why (`what` names the
// port: "feed buses").
std::shared_ptr<TlsContext> load_tls_context(const TlsConfig& config, TlsContext::Role role,
                                             const std::string& what);

// Every TLS object of `config` loaded once, without keeping anything: the
// problems, at their JSON pointers (e.g. /feeds/0/tls/key).
std::vector<ConfigProblem> check_tls_files(const Config& config);

// A loaded configuration whose TLS files do not load becomes a rejected
// one: their problems join `result` (and its config is dropped).
void check_tls_files(ConfigResult& result);

// OpenSSL's queued errors as one line (and the queue cleared); `fallback`
// if there were none.
std::string openssl_error_text(const std::string& fallback = "unknown TLS error");

}  // namespace chronomerge
