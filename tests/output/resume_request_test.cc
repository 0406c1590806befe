// The three parsers of the resume protocol: the request line of stream
// clients, the query string of GET /stream and Last-Event-ID.
#include "output/resume_request.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

using namespace chronomerge;

namespace {

constexpr const char* kRun = "0123456789abcdef";

// The request of an accepted input; fails the check (and returns the
// default request) when it was refused.
ResumeRequest accepted(const ResumeParse& parse) {
  INFO("error: ", parse.error);
  REQUIRE(parse.request.has_value());
  CHECK(parse.error.empty());
  return *parse.request;
}

// The message of a refused input.
std::string refused(const ResumeParse& parse) {
  CHECK_FALSE(parse.request.has_value());
  CHECK_FALSE(parse.error.empty());
  return parse.error;
}

std::string line_error(std::string_view line, KeyType key_type = KeyType::integer) {
  return refused(parse_resume_line(line, key_type));
}

std::string query_error(std::string_view query, KeyType key_type = KeyType::integer) {
  return refused(parse_resume_query(query, key_type));
}

}  // namespace

TEST_CASE("parse_resume_line") {
  auto parse = [](std::string_view line, KeyType key_type = KeyType::integer) {
    return accepted(parse_resume_line(line, key_type));
  };

  SUBCASE("an empty object starts now, with every feed, closing on a gap") {
    const ResumeRequest request = parse("{}");
    CHECK(request.from == ResumeRequest::From::now);
    CHECK(request.feeds.empty());
    CHECK(request.on_gap == ResumeRequest::OnGap::close);
    CHECK(request == ResumeRequest{});
  }
  SUBCASE("a token comes with any request, and is kept as sent") {
    const ResumeRequest request = parse(R"({"token": "s3cret", "since": "oldest"})");
    CHECK(request.token == "s3cret");
    CHECK(request.from == ResumeRequest::From::oldest);
    CHECK(parse(R"({"token": "x"})").from == ResumeRequest::From::now);
    CHECK(parse_resume_line(R"({"token": 5})", KeyType::integer).error ==
          "token: expected a string of 1 to 1024 bytes");
    CHECK(parse_resume_line(R"({"token": ""})", KeyType::integer).error ==
          "token: expected a string of 1 to 1024 bytes");
    CHECK(parse_resume_line(R"({"token": "a", "token": "b"})", KeyType::integer).error ==
          "token: given twice");
  }
  SUBCASE("after names the run and the offset to continue after") {
    const ResumeRequest request = parse(R"({"after": ["0123456789abcdef", 41]})");
    CHECK(request.from == ResumeRequest::From::after);
    CHECK(request.run == kRun);
    CHECK(request.offset == 41);
    CHECK(request.key == Key{});
    CHECK(request.skip == 0);
  }
  SUBCASE("the offset may be any unsigned 64-bit integer") {
    CHECK(parse(R"({"after": ["0123456789abcdef", 18446744073709551615]})").offset == UINT64_MAX);
    CHECK(parse(R"({"after": ["0123456789abcdef", 0]})").offset == 0);
  }
  SUBCASE("since takes the words now and oldest") {
    CHECK(parse(R"({"since": "now"})").from == ResumeRequest::From::now);
    CHECK(parse(R"({"since": "oldest"})").from == ResumeRequest::From::oldest);
    CHECK(parse(R"({"since": "oldest"})", KeyType::string).from == ResumeRequest::From::oldest);
  }
  SUBCASE("since takes a key of the configured type") {
    ResumeRequest request = parse(R"({"since": -12, "skip": 3})");
    CHECK(request.from == ResumeRequest::From::key);
    CHECK(request.key == Key::from_integer(-12));
    CHECK(request.skip == 3);
    CHECK(parse(R"({"since": -9223372036854775808})").key == Key::from_integer(INT64_MIN));
    CHECK(parse(R"({"since": 9223372036854775807})").key == Key::from_integer(INT64_MAX));

    CHECK(parse(R"({"since": 1.5})", KeyType::number).key == Key::from_number(1.5));
    CHECK(parse(R"({"since": 7})", KeyType::number).key == Key::from_number(7));
    CHECK(parse(R"({"since": -0.0})", KeyType::number).key == Key::from_number(0));
    CHECK(parse(R"({"since": 1e-400})", KeyType::number).key == Key::from_number(0));

    request = parse(R"({"since": "2024-05-01T12:00:00.5+02:00"})", KeyType::rfc3339);
    CHECK(request.key == Key{1714557600'500'000'000, {}});

    request = parse(R"({"since": "bus-\u00e9\u0000"})", KeyType::string);
    CHECK(request.key == Key::from_string(std::string("bus-\xc3\xa9\0", 7)));
    CHECK(parse(R"({"since": ""})", KeyType::string).key == Key::from_string(""));
  }
  SUBCASE("feeds and on_gap go with any start") {
    const ResumeRequest request = parse(
        R"({"on_gap": "oldest", "feeds": ["bus-101", "fleet/bus_7.a"], "after": ["0123456789abcdef", 5]})");
    CHECK(request.from == ResumeRequest::From::after);
    CHECK(request.feeds == std::vector<std::string>{"bus-101", "fleet/bus_7.a"});
    CHECK(request.on_gap == ResumeRequest::OnGap::oldest);
    CHECK(parse(R"({"on_gap": "close"})").on_gap == ResumeRequest::OnGap::close);
  }
  SUBCASE("one trailing carriage return and JSON whitespace are tolerated") {
    CHECK(parse("{\"since\": \"oldest\"}\r").from == ResumeRequest::From::oldest);
    CHECK(parse(" \t{ \"since\" : \"oldest\" } ").from == ResumeRequest::From::oldest);
  }
  SUBCASE("a line of exactly 64 KiB is read") {
    std::string line = R"({"since": "oldest"})";
    line.append(kMaxResumeLineBytes - line.size(), ' ');
    CHECK(parse(line).from == ResumeRequest::From::oldest);
    CHECK(parse(line + "\r").from == ResumeRequest::From::oldest);
  }
  SUBCASE("1024 feeds and names of 255 characters are read") {
    std::string line = R"({"feeds": [)";
    for (size_t i = 0; i < kMaxResumeFeeds; ++i) {
      const std::string number = std::to_string(i);
      line += (i ? ",\"" : "\"") + number + std::string(50 - number.size(), 'x') + "\"";
    }
    line += "]}";
    CHECK(parse(line).feeds.size() == kMaxResumeFeeds);
    const std::string longest(kMaxResumeFeedNameBytes, 'a');
    CHECK(parse(R"({"feeds": [")" + longest + "\"]}").feeds[0] == longest);
  }

  SUBCASE("refuses what is not one JSON object") {
    CHECK(line_error("") ==
          "request: invalid JSON at column 1: syntax error while parsing value - unexpected end "
          "of input; expected '[', '{', or a literal");
    CHECK(line_error(R"({"since": "now"} x)") ==
          "request: invalid JSON at column 18: syntax error while parsing value - invalid "
          "literal; last read: '\"now\"} x'; expected end of input");
    CHECK(line_error("[]") == "request: expected a JSON object");
    CHECK(line_error("\"now\"") == "request: expected a JSON object");
    CHECK(line_error("{}\n{}") ==
          "request: invalid JSON at column 4: syntax error while parsing value - unexpected '{'; "
          "expected end of input");
  }
  SUBCASE("quotes the client's bytes only as printable ASCII") {
    const std::string error = line_error("{\"since\": \"\x01\xff\"}");
    CHECK(error.starts_with("request: invalid JSON at column 12: "));
    for (char c : error) CHECK((c >= 0x20 && c < 0x7f));
    CHECK(line_error(std::string("{\"\xc3\xa9\": 1}")) == "\"??\": unknown field");
    CHECK(line_error(R"({"": 1})") == "\"\": unknown field");
    CHECK(line_error("{\"" + std::string(100, 'x') + "\": 1}") ==
          "\"" + std::string(40, 'x') + "...\": unknown field");
  }
  SUBCASE("quotes a field name that is not a plain word") {
    // Found by fuzzing: a name holding ": " made the message ambiguous.
    CHECK(line_error(R"({"a: b": 1})") == "\"a: b\": unknown field");
    CHECK(line_error(R"({"say \"hi\\\"": 1})") == R"("say \"hi\\\"": unknown field)");
    CHECK(line_error(R"({"on-gap_2.x": 1})") == "on-gap_2.x: unknown field");
  }
  SUBCASE("refuses a line over 64 KiB and deep nesting before parsing them") {
    std::string line = R"({"since": "oldest"})";
    line.append(kMaxResumeLineBytes + 1 - line.size(), ' ');
    CHECK(line_error(line) == "request: line over 65536 bytes");
    CHECK(line_error(std::string(100000, '[')) == "request: line over 65536 bytes");
    CHECK(line_error(std::string(60000, '[')) ==
          "request: arrays and objects nested deeper than 4 levels");
    CHECK(line_error(R"({"feeds": [[[[]]]]})") ==
          "request: arrays and objects nested deeper than 4 levels");
    // Brackets in strings do not nest.
    CHECK(line_error(R"({"feeds": ["[[[[[[["]})") ==
          "feeds[0]: expected a feed name, 1 to 255 characters of A-Z a-z 0-9 _ . - /");
  }
  SUBCASE("refuses unknown and repeated fields") {
    CHECK(line_error(R"({"tokens": "x"})") == "tokens: unknown field");
    CHECK(line_error(R"({"Since": "now"})") == "Since: unknown field");
    CHECK(line_error(R"({"since": "now", "since": "now"})") == "since: given twice");
    CHECK(line_error(R"({"x": 1, "x": 2})") == "x: unknown field");
  }
  SUBCASE("stops reading at a seventh field, the first that cannot be right") {
    // Each field used to be looked up among all before it: a line of
    // thousands of fields cost over 100 ms.
    std::string line = R"({"since": 1, "skip": 2, "feeds": ["a"], "on_gap": "close", "skip": 3)";
    for (int i = 0; line.size() < 60000; ++i) line += ", \"" + std::to_string(i) + "\": 0";
    CHECK(line_error(line + "}") == "skip: given twice");
    CHECK(line_error(line + "]") == "skip: given twice");
    CHECK(line_error(R"({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7 x)") ==
          "a: unknown field");
    CHECK(line_error(R"({"since": "x", "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7})") ==
          "since: expected \"now\", \"oldest\" or an integer key");
  }
  SUBCASE("refuses a malformed after") {
    const std::string expected = "after: expected [run id, offset]";
    CHECK(line_error(R"({"after": "0123456789abcdef:1"})") == expected);
    CHECK(line_error(R"({"after": ["0123456789abcdef"]})") == expected);
    CHECK(line_error(R"({"after": ["0123456789abcdef", 1, 2]})") == expected);
    const std::string run = "after: the run id must be 16 lowercase hex digits";
    CHECK(line_error(R"({"after": ["0123456789ABCDEF", 1]})") == run);
    CHECK(line_error(R"({"after": ["0123456789abcde", 1]})") == run);
    CHECK(line_error(R"({"after": [12345678, 1]})") == run);
    const std::string offset = "after: the offset must be an unsigned integer";
    CHECK(line_error(R"({"after": ["0123456789abcdef", -1]})") == offset);
    CHECK(line_error(R"({"after": ["0123456789abcdef", 1.5]})") == offset);
    CHECK(line_error(R"({"after": ["0123456789abcdef", "1"]})") == offset);
    CHECK(line_error(R"({"after": ["0123456789abcdef", 18446744073709551616]})") ==
          "after: the offset is out of range");
  }
  SUBCASE("refuses a since of the wrong type") {
    CHECK(line_error(R"({"since": "later"})") ==
          "since: expected \"now\", \"oldest\" or an integer key");
    CHECK(line_error(R"({"since": 1.0})") ==
          "since: expected \"now\", \"oldest\" or an integer key");
    CHECK(line_error(R"({"since": "1"})") ==
          "since: expected \"now\", \"oldest\" or an integer key");
    CHECK(line_error(R"({"since": 9223372036854775808})") == "since: integer key out of range");
    CHECK(line_error(R"({"since": -9223372036854775809})") == "since: integer key out of range");
    CHECK(line_error(R"({"since": "1"})", KeyType::number) ==
          "since: expected \"now\", \"oldest\" or a number key");
    CHECK(line_error(R"({"since": 1e400})", KeyType::number) ==
          "request: invalid JSON at column 15: number overflow parsing '1e400'");
    CHECK(line_error(R"({"since": "2024-13-01T00:00:00Z"})", KeyType::rfc3339) ==
          "since: expected \"now\", \"oldest\" or an RFC 3339 time");
    CHECK(line_error(R"({"since": 1714557600})", KeyType::rfc3339) ==
          "since: expected \"now\", \"oldest\" or an RFC 3339 time");
    CHECK(line_error(R"({"since": null})", KeyType::string) ==
          "since: expected \"now\", \"oldest\" or a string key");
  }
  SUBCASE("refuses a skip without a key or not an unsigned integer") {
    CHECK(line_error(R"({"skip": 1})") == "skip: allowed only with a key in since");
    CHECK(line_error(R"({"since": "oldest", "skip": 0})") ==
          "skip: allowed only with a key in since");
    CHECK(line_error(R"({"since": 5, "skip": -1})") == "skip: expected an unsigned integer");
    CHECK(line_error(R"({"since": 5, "skip": true})") == "skip: expected an unsigned integer");
    CHECK(line_error(R"({"since": 5, "skip": 1e20})") == "skip: out of range");
  }
  SUBCASE("refuses after and since together") {
    CHECK(line_error(R"({"after": ["0123456789abcdef", 1], "since": "now"})") ==
          "since: not allowed together with after");
  }
  SUBCASE("refuses feeds that are not distinct feed names") {
    CHECK(line_error(R"({"feeds": "bus-101"})") == "feeds: expected an array of feed names");
    CHECK(line_error(R"({"feeds": []})") == "feeds: expected at least one feed name");
    const std::string name =
        "feeds[1]: expected a feed name, 1 to 255 characters of A-Z a-z 0-9 _ . - /";
    CHECK(line_error(R"({"feeds": ["a", ""]})") == name);
    CHECK(line_error(R"({"feeds": ["a", "b c"]})") == name);
    CHECK(line_error(R"({"feeds": ["a", 1]})") == name);
    CHECK(line_error(R"({"feeds": ["a", ")" + std::string(256, 'x') + "\"]}") == name);
    CHECK(line_error(R"({"feeds": ["a", "b", "a"]})") == "feeds[2]: repeats feeds[0]");
    std::string many = R"({"feeds": [)";
    for (size_t i = 0; i <= kMaxResumeFeeds; ++i)
      many += (i ? ",\"" : "\"") + std::to_string(i) + "\"";
    CHECK(line_error(many + "]}") == "feeds: more than 1024 feed names");
  }
  SUBCASE("refuses an unknown on_gap") {
    CHECK(line_error(R"({"on_gap": "skip"})") == "on_gap: expected \"close\" or \"oldest\"");
    CHECK(line_error(R"({"on_gap": null})") == "on_gap: expected \"close\" or \"oldest\"");
  }
  SUBCASE("reports the first field in the order written") {
    CHECK(line_error(R"({"on_gap": 1, "since": "x"})") ==
          "on_gap: expected \"close\" or \"oldest\"");
    CHECK(line_error(R"({"since": "x", "on_gap": 1})") ==
          "since: expected \"now\", \"oldest\" or an integer key");
  }
}

TEST_CASE("parse_resume_query") {
  auto parse = [](std::string_view query, KeyType key_type = KeyType::integer) {
    return accepted(parse_resume_query(query, key_type));
  };

  SUBCASE("the empty query starts now") {
    CHECK(parse("") == ResumeRequest{});
    CHECK(parse("&&") == ResumeRequest{});
  }
  SUBCASE("never takes a token: it would end up in logs and histories") {
    CHECK(parse_resume_query("token=abc", KeyType::integer).error == "token: unknown parameter");
  }
  SUBCASE("takes every field of the line") {
    ResumeRequest request = parse("after=0123456789abcdef:41&feeds=a,b/c&on_gap=oldest");
    CHECK(request.from == ResumeRequest::From::after);
    CHECK(request.run == kRun);
    CHECK(request.offset == 41);
    CHECK(request.feeds == std::vector<std::string>{"a", "b/c"});
    CHECK(request.on_gap == ResumeRequest::OnGap::oldest);

    request = parse("since=-7&skip=2&");
    CHECK(request.from == ResumeRequest::From::key);
    CHECK(request.key == Key::from_integer(-7));
    CHECK(request.skip == 2);
    CHECK(parse("since=oldest").from == ResumeRequest::From::oldest);
    CHECK(parse("since=now&on_gap=close") == ResumeRequest{});
  }
  SUBCASE("reads keys as text of their type") {
    CHECK(parse("since=-9223372036854775808").key == Key::from_integer(INT64_MIN));
    CHECK(parse("since=-0").key == Key::from_integer(0));
    CHECK(parse("since=1.5e3", KeyType::number).key == Key::from_number(1500));
    CHECK(parse("since=-0.0", KeyType::number).key == Key::from_number(0));
    CHECK(parse("since=1e-400", KeyType::number).key == Key::from_number(0));
    CHECK(parse("since=2024-05-01T12:00:00.5%2B02:00", KeyType::rfc3339).key ==
          Key{1714557600'500'000'000, {}});
    CHECK(parse("since=2024-05-01+12:00:00Z", KeyType::rfc3339).key ==
          Key{1714564800'000'000'000, {}});
    CHECK(parse("since=bus+%C3%a9%26", KeyType::string).key == Key::from_string("bus \xc3\xa9&"));
    CHECK(parse("since=", KeyType::string).key == Key::from_string(""));
    CHECK(parse("since", KeyType::string).key == Key::from_string(""));
  }
  SUBCASE("decodes names too") {
    CHECK(parse("%73ince=oldest").from == ResumeRequest::From::oldest);
    CHECK(parse("on%5Fgap=oldest").on_gap == ResumeRequest::OnGap::oldest);
  }
  SUBCASE("refuses unknown and repeated parameters") {
    CHECK(query_error("token=x") == "token: unknown parameter");
    CHECK(query_error("since=now&since=now") == "since: given twice");
    CHECK(query_error("since=now&%73ince=oldest") == "since: given twice");
    CHECK(query_error("=x") == "\"\": unknown parameter");
    CHECK(query_error("%C3%A9=1") == "\"??\": unknown parameter");
    // Found by fuzzing: a name holding ": " made the message ambiguous.
    CHECK(query_error("%3A+x=1") == "\": x\": unknown parameter");
  }
  SUBCASE("refuses invalid escapes and NUL bytes") {
    CHECK(query_error("since=%") == "since: invalid percent escape");
    CHECK(query_error("since=%4") == "since: invalid percent escape");
    CHECK(query_error("since=%g0") == "since: invalid percent escape");
    CHECK(query_error("since=a%00", KeyType::string) == "since: NUL byte");
    CHECK(query_error("s%ince=1") == "query: invalid percent escape in a parameter name");
    CHECK(query_error("since%00=1") == "query: NUL byte in a parameter name");
    CHECK(query_error(std::string("since=\0", 7), KeyType::string) == "since: NUL byte");
  }
  SUBCASE("refuses a query over 64 KiB") {
    CHECK(query_error(std::string(kMaxResumeLineBytes + 1, '&')) == "query: over 65536 bytes");
    CHECK(parse(std::string(kMaxResumeLineBytes, '&')) == ResumeRequest{});
  }
  SUBCASE("refuses a malformed after") {
    const std::string expected =
        "after: expected R:N, a run id of 16 lowercase hex digits and an offset";
    CHECK(query_error("after=0123456789abcdef") == expected);
    CHECK(query_error("after=0123456789abcdef:") == expected);
    CHECK(query_error("after=0123456789abcdef:01") == expected);
    CHECK(query_error("after=0123456789abcdef:-1") == expected);
    CHECK(query_error("after=0123456789abcdef:18446744073709551616") == expected);
    CHECK(query_error("after=0123456789ABCDEF:1") == expected);
    CHECK(query_error("after=:1") == expected);
  }
  SUBCASE("refuses keys that are not of the configured type") {
    const std::string integer = "since: expected \"now\", \"oldest\" or an integer key";
    CHECK(query_error("since=1.0") == integer);
    CHECK(query_error("since=01") == integer);
    CHECK(query_error("since=+1") == integer);
    CHECK(query_error("since=%201") == integer);
    CHECK(query_error("since=") == integer);
    CHECK(query_error("since=9223372036854775808") == "since: integer key out of range");
    const std::string number = "since: expected \"now\", \"oldest\" or a number key";
    CHECK(query_error("since=.5", KeyType::number) == number);
    CHECK(query_error("since=1.", KeyType::number) == number);
    CHECK(query_error("since=inf", KeyType::number) == number);
    CHECK(query_error("since=0x10", KeyType::number) == number);
    CHECK(query_error("since=1e400", KeyType::number) == "since: number key out of range");
    CHECK(query_error("since=-1e400", KeyType::number) == "since: number key out of range");
    CHECK(query_error("since=2024-05-01T12:00:00+02:00", KeyType::rfc3339) ==
          "since: expected \"now\", \"oldest\" or an RFC 3339 time");
    CHECK(query_error("since=%FF", KeyType::string) == "since: the string key is not valid UTF-8");
    CHECK(query_error("since=%ED%A0%80", KeyType::string) ==
          "since: the string key is not valid UTF-8");
    CHECK(query_error("since=%C0%80", KeyType::string) ==
          "since: the string key is not valid UTF-8");
  }
  SUBCASE("refuses skip, feeds and on_gap as the line does") {
    CHECK(query_error("skip=1") == "skip: allowed only with a key in since");
    CHECK(query_error("since=1&skip=") == "skip: expected an unsigned integer");
    CHECK(query_error("since=1&skip=18446744073709551616") == "skip: out of range");
    CHECK(query_error("after=0123456789abcdef:1&since=now") ==
          "since: not allowed together with after");
    CHECK(query_error("feeds=") == "feeds: expected at least one feed name");
    CHECK(query_error("feeds=a,,b") ==
          "feeds[1]: expected a feed name, 1 to 255 characters of A-Z a-z 0-9 _ . - /");
    CHECK(query_error("feeds=a,b,") ==
          "feeds[2]: expected a feed name, 1 to 255 characters of A-Z a-z 0-9 _ . - /");
    CHECK(query_error("feeds=a,b%2Ca") == "feeds[2]: repeats feeds[0]");
    std::string many = "feeds=0";
    for (size_t i = 1; i <= kMaxResumeFeeds; ++i) many += "," + std::to_string(i);
    CHECK(query_error(many) == "feeds: more than 1024 feed names");
    CHECK(query_error("on_gap=") == "on_gap: expected \"close\" or \"oldest\"");
  }
}

TEST_CASE("parse_event_id") {
  SUBCASE("R:N asks for the records after offset N of run R") {
    const ResumeRequest request = accepted(parse_event_id("0123456789abcdef:7"));
    CHECK(request.from == ResumeRequest::From::after);
    CHECK(request.run == kRun);
    CHECK(request.offset == 7);
    CHECK(request.feeds.empty());
    CHECK(request.on_gap == ResumeRequest::OnGap::close);
  }
  SUBCASE("reads what format_event_id writes") {
    CHECK(format_event_id(kRun, 0) == "0123456789abcdef:0");
    CHECK(format_event_id(kRun, UINT64_MAX) == "0123456789abcdef:18446744073709551615");
    CHECK(accepted(parse_event_id(format_event_id(kRun, UINT64_MAX))).offset == UINT64_MAX);
  }
  SUBCASE("refuses anything else") {
    const std::string expected =
        "Last-Event-ID: expected R:N, a run id of 16 lowercase hex digits and an offset";
    CHECK(refused(parse_event_id("")) == expected);
    CHECK(refused(parse_event_id("7")) == expected);
    CHECK(refused(parse_event_id(" 0123456789abcdef:7")) == expected);
    CHECK(refused(parse_event_id("0123456789abcdef:7 ")) == expected);
    CHECK(refused(parse_event_id("0123456789abcdef:7:8")) == expected);
    CHECK(refused(parse_event_id("0123456789abcdef:+7")) == expected);
    CHECK(refused(parse_event_id("0123456789abcdef0:7")) == expected);
  }
}
