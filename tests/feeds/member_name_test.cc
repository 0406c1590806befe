#include "feeds/member_name.h"

#include <doctest/doctest.h>

#include <string>

using namespace chronomerge;

TEST_CASE("member names from a hello line") {
  SUBCASE("takes the feed field") {
    MemberName name = member_name_from_hello(R"({"feed": "bus-0042"})");
    CHECK(name.ok());
    CHECK(name.name == "bus-0042");
  }
  SUBCASE("ignores other fields, whatever their order") {
    CHECK(member_name_from_hello(R"({"v": 1, "feed": "a.b_c", "x": [1, {"y": 2}]})").name ==
          "a.b_c");
  }
  SUBCASE("refuses what is not a hello, and says why") {
    CHECK(member_name_from_hello("").error.find("not a JSON object") != std::string::npos);
    CHECK(member_name_from_hello("[1]").error.find("not a JSON object") != std::string::npos);
    CHECK(member_name_from_hello(R"({"feed": 42})").error.find("no \"feed\" string") !=
          std::string::npos);
    CHECK(member_name_from_hello(R"({"name": "a"})").error.find("no \"feed\" string") !=
          std::string::npos);
  }
  SUBCASE("refuses a name outside the name rule") {
    for (const char* bad : {R"({"feed": ""})", R"({"feed": "a/b"})", R"({"feed": "a b"})",
                            R"({"feed": "bus\u00e9"})"}) {
      INFO(bad);
      CHECK_FALSE(member_name_from_hello(bad).ok());
    }
    CHECK(member_name_from_hello(R"({"feed": ")" + std::string(64, 'x') + "\"}").ok());
    CHECK_FALSE(member_name_from_hello(R"({"feed": ")" + std::string(65, 'x') + "\"}").ok());
  }
  SUBCASE("refuses deep nesting without recursing into it") {
    std::string deep = R"({"feed": "a", "x": )" + std::string(100000, '[');
    CHECK_FALSE(member_name_from_hello(deep).ok());
  }
}

TEST_CASE("member names from the first record") {
  const std::string record = R"({"time": 5, "vehicle": "bus-7", "meta": {"id": 12, "f": 1.5}})";
  CHECK(member_name_from_record(record, "/vehicle").name == "bus-7");
  CHECK(member_name_from_record(record, "/meta/id").name == "12");
  CHECK(member_name_from_record(record, "/meta/f").error.find("not a string or a non-negative") !=
        std::string::npos);
  CHECK(member_name_from_record(record, "/missing").error.find("has no /missing") !=
        std::string::npos);
  CHECK(member_name_from_record("not json", "/vehicle").error.find("not a JSON object") !=
        std::string::npos);
}

TEST_CASE("member names from the peer's address") {
  CHECK(member_name_from_peer("127.0.0.1:5000").name == "127.0.0.1");
  CHECK(member_name_from_peer("[::1]:5000").name == "__1");
  CHECK(member_name_from_peer("[fe80::1%eth0]:5000").name == "fe80__1_eth0");
  CHECK_FALSE(member_name_from_peer("").ok());
}
