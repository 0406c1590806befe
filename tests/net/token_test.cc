#include "net/token.h"

#include <doctest/doctest.h>

using namespace chronomerge;

TEST_CASE("tokens are checked by their SHA-256") {
  SUBCASE("sha256_hex is the digest sha256sum prints") {
    CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  }
  SUBCASE("a token is allowed when its hash is listed, and only then") {
    const std::vector<std::string> hashes = {sha256_hex("bus-token"), sha256_hex("dash-token")};
    CHECK(token_allowed("bus-token", hashes));
    CHECK(token_allowed("dash-token", hashes));
    CHECK_FALSE(token_allowed("bus-token2", hashes));
    CHECK_FALSE(token_allowed("", hashes));
    CHECK_FALSE(token_allowed("bus-token", {}));
    // The list holds hashes: the hash itself is not a token.
    CHECK_FALSE(token_allowed(hashes[0], hashes));
  }
  SUBCASE("a kept hash is checked against a new list") {
    const std::string kept = sha256_hex("bus-token");
    CHECK(hash_allowed(kept, {sha256_hex("other"), kept}));
    CHECK_FALSE(hash_allowed(kept, {sha256_hex("other")}));
    CHECK_FALSE(hash_allowed("", {sha256_hex("")}));
  }
  SUBCASE("bearer_token reads an Authorization value") {
    CHECK(bearer_token("Bearer abc") == "abc");
    CHECK(bearer_token("bearer  abc") == "abc");
    CHECK(bearer_token("Basic abc") == "");
    CHECK(bearer_token("Bearer") == "");
    CHECK(bearer_token("") == "");
  }
}
