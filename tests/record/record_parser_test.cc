#include "record/record_parser.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>

namespace chronomerge {
namespace {

using namespace std::string_literals;

KeySpec spec_for(std::string path, KeyType type = KeyType::integer,
                 std::string heartbeat_field = {}) {
  KeySpec spec;
  spec.path = std::move(path);
  spec.type = type;
  spec.heartbeat_field = std::move(heartbeat_field);
  return spec;
}

// A heap copy of exactly the line's bytes, so that AddressSanitizer catches
// any read past the end (a std::string would hide it behind its spare
// capacity and terminating NUL).
class ExactLine {
 public:
  explicit ExactLine(std::string_view line)
      : bytes_(std::make_unique<char[]>(line.size())), size_(line.size()) {
    std::memcpy(bytes_.get(), line.data(), line.size());
  }
  std::string_view view() const { return {bytes_.get(), size_}; }

 private:
  std::unique_ptr<char[]> bytes_;
  size_t size_;
};

// "ok" or the error's metric name, so failures print readably.
std::string verdict(std::string_view line, const KeySpec& spec = KeySpec{}) {
  ParsedRecord record;
  const auto error = RecordParser(spec).parse(ExactLine(line).view(), record);
  return error ? std::string(to_string(*error)) : "ok";
}

ParsedRecord parsed(std::string_view line, const KeySpec& spec = KeySpec{}) {
  ParsedRecord record;
  const auto error = RecordParser(spec).parse(ExactLine(line).view(), record);
  INFO("line: ", line);
  REQUIRE_MESSAGE(!error, to_string(*error));
  return record;
}

int64_t integer_key(std::string_view line, const std::string& path = "time") {
  return parsed(line, spec_for(path)).key.ordinal;
}

std::string key_text(std::string_view line, const ParsedRecord& record) {
  return std::string(line.substr(record.key_offset, record.key_length));
}

TEST_CASE("line errors have stable metric names") {
  CHECK(to_string(LineError::not_json) == "not_json");
  CHECK(to_string(LineError::not_object) == "not_object");
  CHECK(to_string(LineError::missing_key) == "missing_key");
  CHECK(to_string(LineError::wrong_key_type) == "wrong_key_type");
  CHECK(to_string(LineError::key_overflow) == "key_overflow");
  CHECK(to_string(LineError::too_long) == "too_long");
  CHECK(to_string(LineError::too_deep) == "too_deep");
}

TEST_CASE("integer keys") {
  SUBCASE("a typical record yields its epoch milliseconds") {
    CHECK(integer_key(R"({"time":1700000000123,"vehicle":"bus-0042","lat":52.37321})") ==
          1700000000123);
  }
  SUBCASE("negative values and zero are keys") {
    CHECK(integer_key(R"({"time":-17})") == -17);
    CHECK(integer_key(R"({"time":0})") == 0);
    CHECK(integer_key(R"({"time":-0})") == 0);
  }
  SUBCASE("the int64 extremes fit") {
    CHECK(integer_key(R"({"time":9223372036854775807})") == std::numeric_limits<int64_t>::max());
    CHECK(integer_key(R"({"time":-9223372036854775808})") == std::numeric_limits<int64_t>::min());
  }
  SUBCASE("integers of every length from 1 to 19 digits, either sign, are read exactly") {
    // Eight digits at a time, then the rest: every split of a length.
    std::mt19937_64 rng(19);
    for (int digits = 1; digits <= 19; ++digits) {
      for (int round = 0; round < 50; ++round) {
        std::string text(1, static_cast<char>('1' + rng() % 9));
        while (static_cast<int>(text.size()) < digits) text += static_cast<char>('0' + rng() % 10);
        if (digits == 19) text[0] = static_cast<char>('1' + rng() % 8);  // below 9.2e18
        for (const std::string& signed_text : {text, "-" + text}) {
          CAPTURE(signed_text);
          CHECK(integer_key("{\"time\":" + signed_text + "}") == std::stoll(signed_text));
        }
      }
    }
  }
  SUBCASE("one past the int64 extremes overflows") {
    CHECK(verdict(R"({"time":9223372036854775808})") == "key_overflow");
    CHECK(verdict(R"({"time":-9223372036854775809})") == "key_overflow");
    CHECK(verdict(R"({"time":100000000000000000000000})") == "key_overflow");
  }
  SUBCASE("numbers with a fraction or exponent are the wrong type") {
    CHECK(verdict(R"({"time":1.5})") == "wrong_key_type");
    CHECK(verdict(R"({"time":1.0})") == "wrong_key_type");
    CHECK(verdict(R"({"time":1e3})") == "wrong_key_type");
  }
  SUBCASE("other JSON types are the wrong type") {
    CHECK(verdict(R"({"time":"1700000000123"})") == "wrong_key_type");
    CHECK(verdict(R"({"time":{"ms":1}})") == "wrong_key_type");
    CHECK(verdict(R"({"time":[1]})") == "wrong_key_type");
    CHECK(verdict(R"({"time":null})") == "wrong_key_type");
    CHECK(verdict(R"({"time":true})") == "wrong_key_type");
    CHECK(verdict(R"({"time":false})") == "wrong_key_type");
  }
  SUBCASE("an absent key is missing") {
    CHECK(verdict(R"({"tim":1})") == "missing_key");
    CHECK(verdict(R"({"times":1})") == "missing_key");
    CHECK(verdict(R"({})") == "missing_key");
    CHECK(verdict(R"({"Time":1})") == "missing_key");
  }
  SUBCASE("a key only nested deeper is missing at the top") {
    CHECK(verdict(R"({"meta":{"time":1}})") == "missing_key");
    CHECK(verdict(R"({"list":[{"time":1}]})") == "missing_key");
  }
}

TEST_CASE("number keys") {
  const KeySpec spec = spec_for("time", KeyType::number);
  auto value = [&](std::string_view line) { return key_number_value(parsed(line, spec).key); };

  SUBCASE("any JSON number is read as a double") {
    CHECK(value(R"({"time":1.5})") == 1.5);
    CHECK(value(R"({"time":-2})") == -2.0);
    CHECK(value(R"({"time":1E3})") == 1000.0);
    CHECK(value(R"({"time":2.5e-3})") == 0.0025);
    CHECK(value(R"({"time":9223372036854775808})") == 9223372036854775808.0);
  }
  SUBCASE("negative zero is the same key as zero") {
    CHECK(parsed(R"({"time":-0.0})", spec).key == parsed(R"({"time":0})", spec).key);
  }
  SUBCASE("keys order like the numbers") {
    const char* lines[] = {R"({"time":-1e300})", R"({"time":-1.5})",   R"({"time":-1e-300})",
                           R"({"time":0})",      R"({"time":1e-300})", R"({"time":0.5})",
                           R"({"time":2})",      R"({"time":1e300})"};
    for (size_t i = 0; i + 1 < std::size(lines); ++i) {
      CAPTURE(lines[i]);
      CHECK(parsed(lines[i], spec).key < parsed(lines[i + 1], spec).key);
    }
  }
  SUBCASE("a number beyond the double range overflows") {
    CHECK(verdict(R"({"time":1e309})", spec) == "key_overflow");
    CHECK(verdict(R"({"time":-1e400})", spec) == "key_overflow");
    CHECK(verdict(R"({"time":0.00001e99999999999999999999})", spec) == "key_overflow");
  }
  SUBCASE("a number too small for a double becomes zero") {
    CHECK(value(R"({"time":1e-400})") == 0.0);
    CHECK(value(R"({"time":-1e-400})") == 0.0);
    CHECK(value(R"({"time":10000e-99999999999999999999})") == 0.0);
  }
  SUBCASE("non-numbers are the wrong type") {
    CHECK(verdict(R"({"time":"1.5"})", spec) == "wrong_key_type");
    CHECK(verdict(R"({"time":null})", spec) == "wrong_key_type");
    CHECK(verdict(R"({"time":[1.5]})", spec) == "wrong_key_type");
  }
}

TEST_CASE("rfc3339 keys") {
  const KeySpec spec = spec_for("time", KeyType::rfc3339);
  auto ordinal = [&](std::string_view line) { return parsed(line, spec).key.ordinal; };

  SUBCASE("a UTC time becomes epoch nanoseconds") {
    CHECK(ordinal(R"({"time":"2024-05-01T12:00:00.123Z"})") == 1'714'564'800'123'000'000);
  }
  SUBCASE("an offset shifts the time to UTC") {
    CHECK(ordinal(R"({"time":"2024-05-01T12:00:00+02:00"})") ==
          ordinal(R"({"time":"2024-05-01T10:00:00Z"})"));
  }
  SUBCASE("escapes in the string are decoded first") {
    CHECK(ordinal(R"({"time":"2024-05-01T12:00:00\u002e123\u005A"})") ==
          ordinal(R"({"time":"2024-05-01T12:00:00.123Z"})"));
    CHECK(ordinal(R"({"time":"1970-01-01T00:00:00\u005a"})") == 0);
  }
  SUBCASE("unparsable times and non-strings are the wrong type") {
    CHECK(verdict(R"({"time":"2023-02-29T00:00:00Z"})", spec) == "wrong_key_type");
    CHECK(verdict(R"({"time":"2024-13-01T00:00:00Z"})", spec) == "wrong_key_type");
    CHECK(verdict(R"({"time":"yesterday"})", spec) == "wrong_key_type");
    CHECK(verdict(R"({"time":""})", spec) == "wrong_key_type");
    CHECK(verdict(R"({"time":1714564800})", spec) == "wrong_key_type");
  }
  SUBCASE("a long escaped string is the wrong type, not a crash") {
    std::string line = R"({"time":")";
    for (int i = 0; i < 40; ++i) line += "\\u0030";
    line += R"("})";
    CHECK(verdict(line, spec) == "wrong_key_type");
  }
}

TEST_CASE("string keys") {
  const KeySpec spec = spec_for("id", KeyType::string);
  auto text = [&](std::string_view line) { return parsed(line, spec).key.text; };

  SUBCASE("plain text is taken as is") {
    CHECK(text(R"({"id":"bus-0042"})") == "bus-0042");
    CHECK(text(R"({"id":""})") == "");
    CHECK(parsed(R"({"id":"x"})", spec).key.ordinal == 0);
  }
  SUBCASE("escapes are decoded to UTF-8") {
    CHECK(text(R"({"id":"a\"b\\c\/d\b\f\n\r\t"})") == "a\"b\\c/d\b\f\n\r\t");
    CHECK(text(R"({"id":"caf\u00e9 \u20ac"})") == "caf\xC3\xA9 \xE2\x82\xAC");
    CHECK(text(R"({"id":"\ud83d\ude8c"})") == "\xF0\x9F\x9A\x8C");
    CHECK(text(R"({"id":"nul\u0000byte"})") == std::string("nul\0byte", 8));
  }
  SUBCASE("raw UTF-8 passes through") {
    CHECK(text("{\"id\":\"caf\xC3\xA9 \xF0\x9F\x9A\x8C\"}") == "caf\xC3\xA9 \xF0\x9F\x9A\x8C");
  }
  SUBCASE("keys compare bytewise") {
    CHECK(parsed(R"({"id":"a"})", spec).key < parsed(R"({"id":"b"})", spec).key);
    CHECK(parsed(R"({"id":"Z"})", spec).key < parsed(R"({"id":"a"})", spec).key);
  }
  SUBCASE("a reused record loses its previous text") {
    RecordParser parser(spec);
    ParsedRecord record;
    REQUIRE_FALSE(parser.parse(R"({"id":"a long first key"})", record));
    REQUIRE_FALSE(parser.parse(R"({"id":"b"})", record));
    CHECK(record.key.text == "b");
  }
  SUBCASE("non-strings are the wrong type") {
    CHECK(verdict(R"({"id":42})", spec) == "wrong_key_type");
  }
}

TEST_CASE("JSON pointer keys") {
  SUBCASE("a nested member is found") {
    CHECK(integer_key(R"({"meta":{"ts":5,"x":1},"ts":9})", "/meta/ts") == 5);
  }
  SUBCASE("a single-token pointer is a top-level member") {
    CHECK(integer_key(R"({"a":{"time":1},"time":2})", "/time") == 2);
  }
  SUBCASE("array elements are selected by index") {
    CHECK(integer_key(R"({"a":[{"b":1},{"b":2}]})", "/a/0/b") == 1);
    CHECK(integer_key(R"({"a":[{"b":1},{"b":2}]})", "/a/1/b") == 2);
    CHECK(integer_key(R"({"a":[0,1,2,3,4,5,6,7,8,9,10,11]})", "/a/11") == 11);
  }
  SUBCASE("indices out of range or malformed select nothing") {
    CHECK(verdict(R"({"a":[1,2]})", spec_for("/a/2")) == "missing_key");
    CHECK(verdict(R"({"a":[1,2]})", spec_for("/a/01")) == "missing_key");
    CHECK(verdict(R"({"a":[1,2]})", spec_for("/a/-")) == "missing_key");
    CHECK(verdict(R"({"a":[1,2]})", spec_for("/a/x")) == "missing_key");
    CHECK(verdict(R"({"a":[]})", spec_for("/a/0")) == "missing_key");
  }
  SUBCASE("a numeric token also names object members") {
    CHECK(integer_key(R"({"a":{"0":7}})", "/a/0") == 7);
  }
  SUBCASE("escaped tokens match names with slash and tilde") {
    CHECK(integer_key(R"({"a/b":{"c~d":3}})", "/a~1b/c~0d") == 3);
    CHECK(integer_key(R"({"~1":4})", "/~01") == 4);
  }
  SUBCASE("an empty token names the empty member") {
    CHECK(integer_key(R"({"":{"":6}})", "//") == 6);
  }
  SUBCASE("a path through a scalar or a missing member is missing") {
    CHECK(verdict(R"({"meta":5})", spec_for("/meta/ts")) == "missing_key");
    CHECK(verdict(R"({"meta":{"tz":1}})", spec_for("/meta/ts")) == "missing_key");
    CHECK(verdict(R"({"other":{"ts":1}})", spec_for("/meta/ts")) == "missing_key");
  }
  SUBCASE("same-named members elsewhere are not mistaken for the target") {
    CHECK(integer_key(R"({"x":{"meta":{"ts":1}},"meta":{"y":{"ts":2},"ts":3}})", "/meta/ts") == 3);
  }
  SUBCASE("pointer validity for config checks") {
    CHECK(RecordParser::valid_key_path("/a~0b/~1"));
    CHECK(RecordParser::valid_key_path("time~2"));
    CHECK_FALSE(RecordParser::valid_key_path("/a~2"));
    CHECK_FALSE(RecordParser::valid_key_path("/a~"));
  }
}

TEST_CASE("member names are compared after unescaping") {
  SUBCASE("an escaped name matches the plain key") {
    CHECK(integer_key(R"({"ti\u006de":8})") == 8);
    CHECK(integer_key(R"({"\u0074\u0069\u006D\u0065":8})") == 8);
  }
  SUBCASE("an escaped name matches a pointer token") {
    CHECK(integer_key(R"({"a\/b":{"c":1}})", "/a~1b/c") == 1);
  }
  SUBCASE("a name whose escapes decode to something else does not match") {
    CHECK(verdict(R"({"ti\u006De2":8})") == "missing_key");
    CHECK(verdict(R"({"tim\n":8})") == "missing_key");
  }
  SUBCASE("non-ASCII names match their UTF-8 spelling") {
    CHECK(integer_key(R"({"caf\u00e9":1})", "caf\xC3\xA9") == 1);
    CHECK(integer_key("{\"caf\xC3\xA9\":2}", "caf\xC3\xA9") == 2);
  }
}

TEST_CASE("duplicate members: the last one wins") {
  SUBCASE("a repeated key takes its last value") {
    CHECK(integer_key(R"({"time":1,"time":2})") == 2);
  }
  SUBCASE("a later duplicate of the wrong type makes the line wrong") {
    CHECK(verdict(R"({"time":1,"time":"x"})") == "wrong_key_type");
  }
  SUBCASE("a later duplicate of an intermediate member replaces the whole subtree") {
    CHECK(verdict(R"({"meta":{"ts":1},"meta":{"x":2}})", spec_for("/meta/ts")) == "missing_key");
    CHECK(integer_key(R"({"meta":{"x":2},"meta":{"ts":3}})", "/meta/ts") == 3);
  }
  SUBCASE("the key span points at the winning value") {
    const std::string line = R"({"time":1,"time":22})";
    CHECK(key_text(line, parsed(line)) == "22");
  }
}

TEST_CASE("heartbeat detection") {
  const KeySpec spec = spec_for("time", KeyType::integer, "hb");
  SUBCASE("a top-level true marks a heartbeat") {
    CHECK(parsed(R"({"time":1,"hb":true})", spec).heartbeat);
    CHECK(parsed(R"({"hb" : true , "time":1})", spec).heartbeat);
  }
  SUBCASE("false, other values and absence do not") {
    CHECK_FALSE(parsed(R"({"time":1,"hb":false})", spec).heartbeat);
    CHECK_FALSE(parsed(R"({"time":1,"hb":"true"})", spec).heartbeat);
    CHECK_FALSE(parsed(R"({"time":1,"hb":1})", spec).heartbeat);
    CHECK_FALSE(parsed(R"({"time":1,"hb":null})", spec).heartbeat);
    CHECK_FALSE(parsed(R"({"time":1})", spec).heartbeat);
  }
  SUBCASE("a nested flag does not count") {
    CHECK_FALSE(parsed(R"({"time":1,"x":{"hb":true}})", spec).heartbeat);
    CHECK_FALSE(parsed(R"({"time":1,"x":[{"hb":true}]})", spec).heartbeat);
  }
  SUBCASE("without a heartbeat field nothing is a heartbeat") {
    CHECK_FALSE(parsed(R"({"time":1,"hb":true})").heartbeat);
  }
  SUBCASE("a reused record is reset") {
    RecordParser parser(spec);
    ParsedRecord record;
    REQUIRE_FALSE(parser.parse(R"({"time":1,"hb":true})", record));
    REQUIRE_FALSE(parser.parse(R"({"time":2})", record));
    CHECK_FALSE(record.heartbeat);
  }
  SUBCASE("the last duplicate decides") {
    CHECK_FALSE(parsed(R"({"time":1,"hb":true,"hb":false})", spec).heartbeat);
    CHECK(parsed(R"({"time":1,"hb":false,"hb":true})", spec).heartbeat);
  }
  SUBCASE("a heartbeat still needs a valid key") {
    CHECK(verdict(R"({"hb":true})", spec) == "missing_key");
    CHECK(verdict(R"({"hb":true,"time":"x"})", spec) == "wrong_key_type");
  }
  SUBCASE("the heartbeat field may be written with escapes") {
    CHECK(parsed(R"({"time":1,"\u0068b":true})", spec).heartbeat);
  }
}

TEST_CASE("key spans") {
  SUBCASE("an integer span covers its digits") {
    const std::string line = R"({"time":1700000000000,"v":1})";
    const ParsedRecord record = parsed(line);
    CHECK(record.key_offset == 8);
    CHECK(record.key_length == 13);
    CHECK(key_text(line, record) == "1700000000000");
  }
  SUBCASE("a string span includes the quotes") {
    const std::string line = R"({"a":1, "time" :  "2024-05-01T12:00:00Z" })";
    const ParsedRecord record = parsed(line, spec_for("time", KeyType::rfc3339));
    CHECK(key_text(line, record) == R"("2024-05-01T12:00:00Z")");
  }
  SUBCASE("surrounding whitespace is not part of the span") {
    const std::string line = "  {\t\"time\"\n:\r -5e0 \n}  ";
    CHECK(key_text(line, parsed(line, spec_for("time", KeyType::number))) == "-5e0");
  }
  SUBCASE("a nested span is found inside its parent") {
    const std::string line = R"({"a":[{"b":12},{"b":345}]})";
    CHECK(key_text(line, parsed(line, spec_for("/a/1/b"))) == "345");
  }
}

TEST_CASE("top level must be an object") {
  SUBCASE("valid JSON of another type is not an object") {
    for (const char* line :
         {"[]", "[1,2]", "1", "-1.5e3", "\"x\"", "true", "false", "null", R"([{"time":1}])"}) {
      CAPTURE(line);
      CHECK(verdict(line) == "not_object");
    }
  }
  SUBCASE("invalid JSON is reported as such first") {
    CHECK(verdict("[1,") == "not_json");
    CHECK(verdict("tru") == "not_json");
  }
}

TEST_CASE("malformed JSON is rejected") {
  SUBCASE("empty and blank lines") {
    CHECK(verdict("") == "not_json");
    CHECK(verdict(" \t\r\n ") == "not_json");
  }
  SUBCASE("broken escapes") {
    for (const char* line :
         {R"({"time":1,"s":"\x"})", R"({"time":1,"s":"\u12"})", R"({"time":1,"s":"\u12g4"})",
          R"({"time":1,"s":"\U0041"})", R"({"time":1,"s":"\'"})", R"x({"time":1,"s":"\)"})x"}) {
      CAPTURE(line);
      CHECK(verdict(line) == "not_json");
    }
  }
  SUBCASE("lone or misordered surrogate escapes") {
    for (const char* line : {R"({"time":1,"s":"\ud800"})", R"({"time":1,"s":"\ud800x"})",
                             R"({"time":1,"s":"\udc00"})", R"({"time":1,"s":"\ude8c\ud83d"})",
                             R"({"time":1,"s":"\ud83d\u0041"})", R"({"time":1,"s":"\ud83d\ud83d"})",
                             R"({"time":1,"s":"\ud83d\n"})", R"({"time\ud800":1})"}) {
      CAPTURE(line);
      CHECK(verdict(line) == "not_json");
    }
  }
  SUBCASE("trailing commas") {
    CHECK(verdict(R"({"time":1,})") == "not_json");
    CHECK(verdict(R"({"time":1,"a":[1,2,]})") == "not_json");
    CHECK(verdict(R"({"time":1,"a":[,]})") == "not_json");
    CHECK(verdict(R"({,"time":1})") == "not_json");
    CHECK(verdict(R"({"time":1,,"a":2})") == "not_json");
  }
  SUBCASE("unterminated strings and containers") {
    for (const char* line : {R"({"time":1,"s":"abc})", R"({"time":1,"s":"abc)", R"({"time":1)",
                             R"({"time":1,"a":[1)", R"({"time":1,"a":{)", R"({"time")",
                             R"({"time":)", R"({"time)", "{", "{\"time\":1,\"s\":\"abc\\"}) {
      CAPTURE(line);
      CHECK(verdict(line) == "not_json");
    }
  }
  SUBCASE("raw control characters in strings") {
    CHECK(verdict(std::string("{\"time\":1,\"s\":\"a\tb\"}")) == "not_json");
    CHECK(verdict(std::string("{\"time\":1,\"s\":\"a\nb\"}")) == "not_json");
    CHECK(verdict("{\"time\":1,\"s\":\"a\0b\"}"s) == "not_json");
    CHECK(verdict(std::string("{\"time\":1,\"s\":\"a\x1f"
                              "b\"}")) == "not_json");
    CHECK(verdict(std::string("{\"time\":1,\"s\":\"a\x7f"
                              "b\"}")) == "ok");
  }
  SUBCASE("invalid UTF-8") {
    for (const char* bytes :
         {"\x80", "\xBF", "\xC0\xAF", "\xC1\xBF", "\xC3", "\xC3\x28", "\xE0\x80\xAF",
          "\xE0\x9F\xBF", "\xED\xA0\x80", "\xED\xBF\xBF", "\xE2\x82", "\xF0\x8F\xBF\xBF",
          "\xF4\x90\x80\x80", "\xF5\x80\x80\x80", "\xF8\x88\x80\x80\x80", "\xFE", "\xFF",
          "\xF0\x9F\x9A"}) {
      const std::string line = std::string("{\"time\":1,\"s\":\"ab") + bytes + "cd\"}";
      CAPTURE(line);
      CHECK(verdict(line) == "not_json");
    }
  }
  SUBCASE("UTF-8 cut off by the closing quote or the end of the line") {
    CHECK(verdict("{\"time\":1,\"s\":\"\xE2\x82\"}") == "not_json");
    CHECK(verdict("{\"time\":1,\"s\":\"\xE2\x82") == "not_json");
  }
  SUBCASE("raw UTF-8 outside strings") {
    CHECK(verdict("{\"time\":1}\xC2\xA0") == "not_json");
  }
  SUBCASE("numbers outside the JSON grammar") {
    for (const char* number : {"01",  "-01",   "00",    "1.",  "1.e5", ".5",    "-",        "-.5",
                               "+1",  "1e",    "1e+",   "1E-", "0x10", "1_000", "Infinity", "NaN",
                               "- 1", "1.5.2", "1e5.2", "--1", "0.",   "1ee5"}) {
      const std::string line = std::string("{\"time\":") + number + "}";
      CAPTURE(line);
      CHECK(verdict(line, spec_for("time", KeyType::number)) == "not_json");
    }
  }
  SUBCASE("bad literals") {
    for (const char* literal : {"tru", "truee", "True", "nul", "NULL", "fals", "undefined"}) {
      const std::string line = std::string("{\"time\":1,\"x\":") + literal + "}";
      CAPTURE(line);
      CHECK(verdict(line) == "not_json");
    }
  }
  SUBCASE("garbage after the object") {
    CHECK(verdict(R"({"time":1}x)") == "not_json");
    CHECK(verdict(R"({"time":1}{"time":2})") == "not_json");
    CHECK(verdict(R"({"time":1} })") == "not_json");
    CHECK(verdict("{\"time\":1}\0"s) == "not_json");
  }
  SUBCASE("structure errors") {
    for (const char* line :
         {R"({"time" 1})", R"({"time"::1})", R"({time:1})", R"({'time':1})", R"({"time":1 "a":2})",
          R"({"time":1,"a":[1 2]})", R"({"time":1,"a":[1:2]})", R"({"time":1,"a":{"b"}})",
          R"({"time":1,"a":{1:2}})", R"({"time":1]})", R"({"time":1,"a":[1}})", R"({1})", R"(})",
          R"(])", "\xEF\xBB\xBF{\"time\":1}", "{\"time\":1}\f", "\v{\"time\":1}"}) {
      CAPTURE(line);
      CHECK(verdict(line) == "not_json");
    }
  }
}

TEST_CASE("nesting depth") {
  auto nested = [](int depth, char open, char close) {
    std::string line = "{\"time\":1,\"x\":";
    line += std::string(static_cast<size_t>(depth - 1), open);
    line += std::string(static_cast<size_t>(depth - 1), close);
    line += "}";
    return line;
  };
  SUBCASE("max_depth levels are accepted") {
    CHECK(verdict(nested(RecordParser::max_depth, '[', ']')) == "ok");
    std::string objects = "{\"time\":1";
    for (int i = 1; i < RecordParser::max_depth; ++i) objects += ",\"a\":{\"b\":1";
    objects += std::string(RecordParser::max_depth, '}');
    CHECK(verdict(objects) == "ok");
  }
  SUBCASE("one level more is too deep") {
    CHECK(verdict(nested(RecordParser::max_depth + 1, '[', ']')) == "too_deep");
    CHECK(verdict(std::string(100000, '[')) == "too_deep");
    CHECK(verdict(std::string(100000, '{')) == "not_json");
  }
}

TEST_CASE("valid tricky JSON is accepted") {
  SUBCASE("unicode escapes and surrogate pairs anywhere") {
    CHECK(verdict(R"({"time":1,"s":"\u0000\u001f\u00e9\uFFFF\uD83D\uDE8C\uDBFF\uDFFF"})") == "ok");
    CHECK(verdict(R"({"\ud83d\ude8c":{"\u00e9":["\ud800\udc00"]},"time":1})") == "ok");
  }
  SUBCASE("the full range of raw UTF-8") {
    CHECK(verdict("{\"time\":1,\"s\":\"\xC2\x80\xDF\xBF\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80"
                  "\xEF\xBF\xBF\xF0\x90\x80\x80\xF4\x8F\xBF\xBF\"}") == "ok");
  }
  SUBCASE("long strings cross the eight-byte fast path at every alignment") {
    for (size_t pad = 0; pad < 24; ++pad) {
      const std::string text = std::string(pad, 'a') + "\\\"" + std::string(pad, 'b') + "\xC3\xA9";
      const std::string line = "{\"id\":\"" + text + "\"}";
      CAPTURE(line);
      CHECK(parsed(line, spec_for("id", KeyType::string)).key.text ==
            std::string(pad, 'a') + "\"" + std::string(pad, 'b') + "\xC3\xA9");
      const std::string broken = "{\"id\":\"" + std::string(pad, 'a') + "\x01\"}";
      CHECK(verdict(broken, spec_for("id", KeyType::string)) == "not_json");
    }
  }
  SUBCASE("nested values with the key's name deeper inside") {
    const std::string line =
        R"({"a":{"time":"x","b":[{"time":null}]},"time":42,"c":[[{"time":[]}]],"d":{"time":{}}})";
    CHECK(integer_key(line) == 42);
  }
  SUBCASE("whitespace everywhere") {
    CHECK(integer_key(" \t\r\n{ \t\r\n\"a\" \t\r\n: \t\r\n[ \t\r\n1 \t\r\n, \t\r\n{ } \t\r\n, "
                      "[ ] \t\r\n] \t\r\n, \t\r\n\"time\" \t\r\n: \t\r\n7 \t\r\n} \t\r\n") == 7);
  }
  SUBCASE("every kind of value") {
    CHECK(integer_key(R"({"n":null,"t":true,"f":false,"i":-0,"r":-0.5e-7,"e":1E+2,"s":"",)"
                      R"("o":{},"a":[],"time":3})") == 3);
  }
  SUBCASE("large and precise numbers elsewhere are fine") {
    CHECK(verdict(R"({"time":1,"big":123456789012345678901234567890e999999})") == "ok");
  }
}

// Random documents from nlohmann/json: what it writes we must accept, and on
// single-byte mutations our verdict on validity must match its own.
nlohmann::json random_value(std::mt19937_64& rng, int depth) {
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); };
  auto random_string = [&] {
    std::string text;
    const int size = pick(12);
    for (int i = 0; i < size; ++i) {
      switch (pick(5)) {
        case 0:
          text += static_cast<char>(pick(0x20));  // control: dumped as an escape
          break;
        case 1: {
          char buf[4];
          uint32_t cp = 0;
          do cp = static_cast<uint32_t>(pick(0x110000));
          while (cp >= 0xD800 && cp <= 0xDFFF);
          std::string utf8;
          if (cp < 0x80) {
            utf8 = static_cast<char>(cp);
          } else if (cp < 0x800) {
            buf[0] = static_cast<char>(0xC0 | cp >> 6);
            buf[1] = static_cast<char>(0x80 | (cp & 0x3F));
            utf8.assign(buf, 2);
          } else if (cp < 0x10000) {
            buf[0] = static_cast<char>(0xE0 | cp >> 12);
            buf[1] = static_cast<char>(0x80 | (cp >> 6 & 0x3F));
            buf[2] = static_cast<char>(0x80 | (cp & 0x3F));
            utf8.assign(buf, 3);
          } else {
            buf[0] = static_cast<char>(0xF0 | cp >> 18);
            buf[1] = static_cast<char>(0x80 | (cp >> 12 & 0x3F));
            buf[2] = static_cast<char>(0x80 | (cp >> 6 & 0x3F));
            buf[3] = static_cast<char>(0x80 | (cp & 0x3F));
            utf8.assign(buf, 4);
          }
          text += utf8;
          break;
        }
        case 2:
          text += "\"\\/"[pick(3)];
          break;
        default:
          text += static_cast<char>('a' + pick(26));
      }
    }
    return text;
  };
  switch (depth > 3 ? pick(5) : pick(7)) {
    case 0:
      return nullptr;
    case 1:
      return pick(2) == 0;
    case 2:
      return static_cast<int64_t>(rng()) >> pick(64);
    case 3:
      return std::ldexp(static_cast<double>(static_cast<int64_t>(rng())), pick(200) - 100);
    case 4:
      return random_string();
    case 5: {
      nlohmann::json array = nlohmann::json::array();
      for (int i = pick(4); i > 0; --i) array.push_back(random_value(rng, depth + 1));
      return array;
    }
    default: {
      nlohmann::json object = nlohmann::json::object();
      for (int i = pick(4); i > 0; --i) object[random_string()] = random_value(rng, depth + 1);
      return object;
    }
  }
}

// nlohmann/json's verdict, or nullopt when it cannot give one: it stops at
// the first number that overflows a double ("1E999", valid JSON) with
// out_of_range, before it has seen the rest of the text.
std::optional<bool> nlohmann_accepts(const std::string& text) {
  try {
    const auto value = nlohmann::json::parse(text);
    return true;
  } catch (const nlohmann::json::out_of_range&) {
    return std::nullopt;
  } catch (const nlohmann::json::parse_error&) {
    return false;
  }
}

TEST_CASE("randomised agreement with nlohmann/json") {
  std::mt19937_64 rng(20240501);
  const RecordParser integer_parser(spec_for("time"));
  const RecordParser string_parser(spec_for("/meta/id", KeyType::string));
  int mutated_valid = 0;
  int mutated_invalid = 0;

  for (int round = 0; round < 3000; ++round) {
    nlohmann::json doc = nlohmann::json::object();
    for (int i = static_cast<int>(rng() % 6); i > 0; --i) {
      doc["f" + std::to_string(rng() % 100)] = random_value(rng, 1);
    }
    const auto time = static_cast<int64_t>(rng());
    doc["time"] = time;
    nlohmann::json id = random_value(rng, 5);
    if (!id.is_string()) id = "id-" + std::to_string(round);
    doc["meta"] = {{"id", id}, {"x", random_value(rng, 3)}};

    const bool ascii = rng() % 2 == 0;
    const std::string line = doc.dump(rng() % 3 == 0 ? 1 : -1, ' ', ascii);
    CAPTURE(line);

    ParsedRecord record;
    const auto error = integer_parser.parse(line, record);
    REQUIRE_FALSE(error);
    CHECK(record.key.ordinal == time);
    CHECK(nlohmann::json::parse(key_text(line, record)) == time);
    REQUIRE_FALSE(string_parser.parse(line, record));
    CHECK(record.key.text == id.get<std::string>());
    CHECK(nlohmann::json::parse(key_text(line, record)) == id);

    if (!ascii) continue;  // compare validity only on ASCII text (see below)
    for (int m = 0; m < 8; ++m) {
      std::string mutant = line;
      const size_t at = rng() % mutant.size();
      if (rng() % 4 == 0) {
        mutant.erase(at, 1);
      } else {
        // ASCII only: not every nlohmann version checks UTF-8 the way we do.
        mutant[at] = static_cast<char>(rng() % 0x80);
      }
      CAPTURE(mutant);
      const auto mutant_error = integer_parser.parse(ExactLine(mutant).view(), record);
      const bool ours = !mutant_error || *mutant_error != LineError::not_json;
      const std::optional<bool> theirs = nlohmann_accepts(mutant);
      if (!theirs) continue;
      CHECK(ours == *theirs);
      (ours ? mutated_valid : mutated_invalid)++;
    }
  }
  // The mutations must exercise both verdicts to mean anything.
  CHECK(mutated_valid > 1000);
  CHECK(mutated_invalid > 1000);
}

}  // namespace
}  // namespace chronomerge
