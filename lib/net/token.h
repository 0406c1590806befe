// Tokens: shared secrets for clients where certificates are too heavy.
// The configuration holds only their SHA-256 hashes (64 hex digits), so a
// leaked file reveals no token.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace chronomerge {

// The SHA-256 of `text`, as 64 lowercase hex digits.
std::string sha256_hex(std::string_view text);

// The token of an `Authorization: Bearer <token>` header value (the
// scheme's case ignored); empty if it is not one.
std::string_view bearer_token(std::string_view authorization);

// Whether `hash` (a token's sha256_hex) is one of `hashes` (lowercase
// hex), compared in constant time. An empty hash is never allowed. A
// connection keeps the hash of the token it was admitted with, so that a
// reload that removes the token can find it.
bool hash_allowed(std::string_view hash, const std::vector<std::string>& hashes);

// Whether `token` hashes to one of `hashes`. An empty token is never
// allowed.
bool token_allowed(std::string_view token, const std::vector<std::string>& hashes);

}  // namespace chronomerge
