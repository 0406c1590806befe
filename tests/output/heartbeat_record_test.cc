#include "output/heartbeat_record.h"

#include <doctest/doctest.h>

#include "record/record_parser.h"

using namespace chronomerge;

namespace {

// What a downstream chronomerge reads from the record.
ParsedRecord read_back(const std::string& line, const std::string& key_path, KeyType type) {
  KeySpec spec;
  spec.path = key_path;
  spec.type = type;
  spec.heartbeat_field = "hb";
  ParsedRecord parsed;
  INFO(line);
  REQUIRE_FALSE(RecordParser(spec).parse(line, parsed));
  return parsed;
}

}  // namespace

TEST_CASE("heartbeat_record") {
  SUBCASE("writes an integer key and the field") {
    CHECK(heartbeat_record("time", KeyType::integer, Key::from_integer(1714564800123), "hb") ==
          R"({"time":1714564800123,"hb":true})");
  }
  SUBCASE("nests the key at its JSON pointer") {
    CHECK(heartbeat_record("/meta/t~1s", KeyType::integer, Key::from_integer(7), "hb") ==
          R"({"meta":{"t/s":7},"hb":true})");
  }
  SUBCASE("reads back as the same key and a heartbeat, for every key type") {
    const Key keys[] = {Key::from_integer(-42), Key::from_number(1714564800.125),
                        Key{1714564800123456789, {}}, Key::from_string("b\"us\\01\x01")};
    const KeyType types[] = {KeyType::integer, KeyType::number, KeyType::rfc3339, KeyType::string};
    for (size_t i = 0; i < 4; ++i) {
      for (const char* path : {"time", "/meta/ts"}) {
        const std::string line = heartbeat_record(path, types[i], keys[i], "hb");
        const ParsedRecord parsed = read_back(line, path, types[i]);
        CHECK(parsed.heartbeat);
        CHECK(parsed.key == keys[i]);
      }
    }
  }
}
