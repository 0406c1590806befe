#include "net/token.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cctype>

namespace chronomerge {

std::string sha256_hex(std::string_view text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  static constexpr char hex[] = "0123456789abcdef";
  std::string out(2 * sizeof(digest), '0');
  for (size_t i = 0; i < sizeof(digest); ++i) {
    out[2 * i] = hex[digest[i] >> 4];
    out[2 * i + 1] = hex[digest[i] & 15];
  }
  return out;
}

std::string_view bearer_token(std::string_view authorization) {
  constexpr std::string_view scheme = "bearer ";
  if (authorization.size() <= scheme.size()) return {};
  for (size_t i = 0; i < scheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != scheme[i]) return {};
  }
  std::string_view token = authorization.substr(scheme.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  return token;
}

bool hash_allowed(std::string_view hash, const std::vector<std::string>& hashes) {
  if (hash.empty()) return false;
  bool allowed = false;
  // Every hash is compared, each in constant time: how long the check takes
  // tells nothing about which one matched, or how much of it.
  for (const std::string& candidate : hashes) {
    if (candidate.size() == hash.size() &&
        CRYPTO_memcmp(candidate.data(), hash.data(), hash.size()) == 0) {
      allowed = true;
    }
  }
  return allowed;
}

bool token_allowed(std::string_view token, const std::vector<std::string>& hashes) {
  return !token.empty() && hash_allowed(sha256_hex(token), hashes);
}

}  // namespace chronomerge
