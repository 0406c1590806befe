#include "net/tls_context.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <fmt/format.h>

#include "log/log.h"

#include <cstring>

namespace chronomerge {

namespace {

bool is_ip_address(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// Seconds since the epoch of an ASN1_TIME.
std::optional<int64_t> unix_time(const ASN1_TIME* time) {
  if (time == nullptr) return std::nullopt;
  struct tm tm {};
  if (ASN1_TIME_to_tm(time, &tm) != 1) return std::nullopt;
  return static_cast<int64_t>(timegm(&tm));
}

}  // namespace

std::string openssl_error_text(const std::string& fallback) {
  std::string text;
  while (unsigned long error = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(error, buf, sizeof(buf));
    if (!text.empty()) text += "; ";
    text += buf;
  }
  return text.empty() ? fallback : text;
}

TlsContext::TlsContext(ssl_ctx_st* ctx, TlsConfig config, Role role)
    : ctx_(ctx), config_(std::move(config)), role_(role) {}

TlsContext::~TlsContext() {
  SSL_CTX_free(ctx_);
}

std::shared_ptr<TlsContext> TlsContext::make(const TlsConfig& config, Role role, Problem& problem) {
  ERR_clear_error();
  const bool server = role == Role::server;
  SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (ctx == nullptr) {
    problem = {"cert", openssl_error_text("cannot create a TLS context")};
    return nullptr;
  }
  std::shared_ptr<TlsContext> context(new TlsContext(ctx, config, role));
  SSL_CTX_set_min_proto_version(ctx, config.tls13_only ? TLS1_3_VERSION : TLS1_2_VERSION);
  // Compression leaks plaintext lengths (CRIME); renegotiation and tickets
  // are state and attack surface nobody here needs.
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  // Thousands of mostly idle producers: no buffers held between records.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (server) {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);  // TLS 1.3 sends tickets unless told not to
  }
  if (!config.ciphers.empty() && SSL_CTX_set_cipher_list(ctx, config.ciphers.c_str()) != 1) {
    problem = {"ciphers", openssl_error_text("no cipher in the list is known")};
    return nullptr;
  }
  if (!config.cert.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, config.cert.c_str()) != 1) {
      problem = {"cert", fmt::format("cannot load the certificate {}: {}", config.cert,
                                     openssl_error_text())};
      return nullptr;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, config.key.c_str(), SSL_FILETYPE_PEM) != 1) {
      problem = {"key", fmt::format("cannot load the private key {}: {}", config.key,
                                    openssl_error_text())};
      return nullptr;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      problem = {"key", fmt::format("the private key {} does not match the certificate {}",
                                    config.key, config.cert)};
      ERR_clear_error();
      return nullptr;
    }
    context->expires_at_ = unix_time(X509_get0_notAfter(SSL_CTX_get0_certificate(ctx)));
    struct stat st {};
    if (::stat(config.key.c_str(), &st) == 0 && (st.st_mode & (S_IRGRP | S_IROTH)) != 0) {
      context->warnings_.push_back(
          fmt::format("the private key {} is readable by other users (mode {:o}); make it 0600",
                      config.key, st.st_mode & 0777));
    }
  }
  if (!config.ca.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, config.ca.c_str(), nullptr) != 1) {
      problem = {"ca",
                 fmt::format("cannot load the CA file {}: {}", config.ca, openssl_error_text())};
      return nullptr;
    }
  } else if (!server) {
    SSL_CTX_set_default_verify_paths(ctx);
  }
  if (!config.crl.empty()) {
    X509_STORE* store = SSL_CTX_get_cert_store(ctx);
    X509_LOOKUP* lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file());
    if (lookup == nullptr ||
        X509_load_crl_file(lookup, config.crl.c_str(), X509_FILETYPE_PEM) <= 0) {
      problem = {"crl", fmt::format("cannot load the revocation list {}: {}", config.crl,
                                    openssl_error_text())};
      return nullptr;
    }
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
  }
  if (server) {
    int mode = SSL_VERIFY_NONE;
    if (config.client_auth == TlsConfig::ClientAuth::request) mode = SSL_VERIFY_PEER;
    if (config.client_auth == TlsConfig::ClientAuth::require) {
      mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    }
    SSL_CTX_set_verify(ctx, mode, nullptr);
    if (mode != SSL_VERIFY_NONE) {
      if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(config.ca.c_str())) {
        SSL_CTX_set_client_CA_list(ctx, names);
      }
    }
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  }
  ERR_clear_error();
  return context;
}

bool TlsContext::accepts_peer_of(ssl_st* ssl) const {
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr) {
    return role_ == Role::server && config_.client_auth != TlsConfig::ClientAuth::require;
  }
  if (role_ == Role::server && config_.client_auth == TlsConfig::ClientAuth::none) return true;
  X509_STORE_CTX* check = X509_STORE_CTX_new();
  if (check == nullptr) return true;  // out of memory: keep what was verified
  bool ok = X509_STORE_CTX_init(check, SSL_CTX_get_cert_store(ctx_), cert,
                                SSL_get_peer_cert_chain(ssl)) == 1 &&
            X509_verify_cert(check) == 1;
  X509_STORE_CTX_free(check);
  ERR_clear_error();
  return ok;
}

ssl_st* TlsContext::new_connection(const std::string& host) const {
  SSL* ssl = SSL_new(ctx_);
  if (ssl == nullptr || role_ == Role::server) return ssl;
  const std::string& name = config_.server_name.empty() ? host : config_.server_name;
  if (is_ip_address(name)) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str());
  } else {
    SSL_set_tlsext_host_name(ssl, name.c_str());
    SSL_set1_host(ssl, name.c_str());
  }
  return ssl;
}

std::shared_ptr<TlsContext> load_tls_context(const TlsConfig& config, TlsContext::Role role,
                                             const std::string& what) {
  TlsContext::Problem problem;
  auto context = TlsContext::make(config, role, problem);
  if (!context) log::error("{}: TLS {}: {}", what, problem.field, problem.message);
  return context;
}

std::vector<ConfigProblem> check_tls_files(const Config& config) {
  std::vector<ConfigProblem> problems;
  auto check = [&](const std::optional<TlsConfig>& tls, TlsContext::Role role,
                   const std::string& pointer) {
    if (!tls) return;
    TlsContext::Problem problem;
    if (!TlsContext::make(*tls, role, problem)) {
      problems.push_back({pointer + "/tls/" + problem.field, problem.message});
    }
  };
  for (size_t i = 0; i < config.feeds.size(); ++i) {
    const FeedConfig& feed = config.feeds[i];
    check(feed.tls,
          feed.type == FeedType::tcp_connect ? TlsContext::Role::client : TlsContext::Role::server,
          feed_pointer(config, i));
  }
  for (size_t i = 0; i < config.outputs.size(); ++i) {
    check(config.outputs[i].tls, TlsContext::Role::server, fmt::format("/outputs/{}", i));
  }
  if (config.metrics) check(config.metrics->tls, TlsContext::Role::server, "/metrics");
  return problems;
}

void check_tls_files(ConfigResult& result) {
  if (!result.config) return;
  std::vector<ConfigProblem> problems = check_tls_files(*result.config);
  if (problems.empty()) return;
  result.problems = std::move(problems);
  result.config.reset();
}

}  // namespace chronomerge
