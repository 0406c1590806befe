#include "record/line_framer.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace chronomerge;

namespace {
struct Collect {
  std::vector<std::string> lines;
  std::vector<std::pair<std::string, size_t>> overlong;
  void line(std::string_view l) { lines.emplace_back(l); }
  void overlong_line(std::string_view head, size_t total) { overlong.emplace_back(head, total); }
};
// Adapts the visitor's method names.
struct Visitor {
  Collect& c;
  void line(std::string_view l) { c.line(l); }
  void overlong(std::string_view head, size_t total) { c.overlong_line(head, total); }
};

Collect frame(const std::vector<std::string>& chunks, size_t max = 1 << 20, bool finish = true) {
  Collect c;
  Visitor v{c};
  LineFramer framer(max);
  for (const auto& chunk : chunks) framer.push(chunk, v);
  if (finish) framer.finish(v);
  return c;
}
using Lines = std::vector<std::string>;
}  // namespace

TEST_CASE("LineFramer") {
  SUBCASE("splits a chunk into lines") {
    CHECK(frame({"a\nbb\nccc\n"}).lines == Lines{"a", "bb", "ccc"});
  }
  SUBCASE("strips one CR of a CRLF, also when the CRLF is split across chunks") {
    CHECK(frame({"a\r\nb\r", "\nc\r\r\n"}).lines == Lines{"a", "b", "c\r"});
  }
  SUBCASE("assembles a line across many chunks") {
    std::vector<std::string> chunks;
    std::string expected;
    for (int i = 0; i < 100; ++i) {
      chunks.push_back(std::string(7, static_cast<char>('a' + i % 26)));
      expected += chunks.back();
    }
    chunks.push_back("\nnext\n");
    CHECK(frame(chunks).lines == Lines{expected, "next"});
  }
  SUBCASE("delivers a final line without newline at finish") {
    CHECK(frame({"a\nlast"}).lines == Lines{"a", "last"});
    CHECK(frame({"a\nlast"}, 100, false).lines == Lines{"a"});
  }
  SUBCASE("skips empty lines silently") {
    CHECK(frame({"\n\r\n\na\n\n", "\n"}).lines == Lines{"a"});
  }
  SUBCASE("skips an overlong line up to its newline and reports it once") {
    auto c = frame({"ok\n" + std::string(50, 'x') + "\nafter\n"}, 10);
    CHECK(c.lines == Lines{"ok", "after"});
    REQUIRE(c.overlong.size() == 1);
    CHECK(c.overlong[0].second == 50);
  }
  SUBCASE("never buffers an overlong line split across chunks") {
    Collect c;
    Visitor v{c};
    LineFramer framer(100);
    framer.push("start" + std::string(60, 'y'), v);
    for (int i = 0; i < 1000; ++i) {
      framer.push(std::string(1000, 'z'), v);
      REQUIRE(framer.pending_bytes() <= LineFramer::excerpt_bytes);
    }
    framer.push("tail\ngood\n", v);
    CHECK(c.lines == Lines{"good"});
    REQUIRE(c.overlong.size() == 1);
    CHECK(c.overlong[0].second == 65 + 1000 * 1000 + 4);
    CHECK(c.overlong[0].first.starts_with("start"));
  }
  SUBCASE("accepts a line of exactly max_line_bytes, with or without CR") {
    auto c = frame({std::string(10, 'a') + "\n" + std::string(10, 'b') + "\r\n"}, 10);
    CHECK(c.lines.size() == 2);
    CHECK(c.overlong.empty());
  }
  SUBCASE("reports an overlong line the same however its bytes are split into reads") {
    // Found by fuzzing: the excerpt stopped at what the first reads held,
    // and a CR before the newline was counted once the line was skipped.
    for (const auto& chunks :
         std::vector<std::vector<std::string>>{{"abcdef\r\nok\n"},
                                               {"ab", "cd", "ef\r\nok\n"},
                                               {"a", "b", "c", "d", "e", "f", "\r", "\n", "ok\n"},
                                               {"abcdef\r", "\nok\n"},
                                               {"abcd", "ef\r", "\n", "ok\n"}}) {
      auto c = frame(chunks, 3);
      CAPTURE(chunks.size());
      CHECK(c.lines == Lines{"ok"});
      REQUIRE(c.overlong.size() == 1);
      CHECK(c.overlong[0].first == "abcdef");
      CHECK(c.overlong[0].second == 6);
    }
  }
  SUBCASE("keeps the first excerpt_bytes of an overlong line that arrives byte by byte") {
    std::string line;
    for (int i = 0; i < 300; ++i) line += static_cast<char>('a' + i % 26);
    std::vector<std::string> chunks;
    for (char byte : line) chunks.emplace_back(1, byte);
    chunks.push_back("\r\n");
    auto c = frame(chunks, 10);
    REQUIRE(c.overlong.size() == 1);
    CHECK(c.overlong[0].first == line.substr(0, LineFramer::excerpt_bytes));
    CHECK(c.overlong[0].second == line.size());
  }
  SUBCASE("an unterminated overlong last line is reported at finish without its CR") {
    auto c = frame({"abc", "def\r"}, 3);
    REQUIRE(c.overlong.size() == 1);
    CHECK(c.overlong[0].first == "abcdef");
    CHECK(c.overlong[0].second == 6);
  }
  SUBCASE("discards a partial line on disconnect so it is never glued to the next") {
    Collect c;
    Visitor v{c};
    LineFramer framer(100);
    framer.push("{\"time\":1}\n{\"ti", v);
    CHECK(framer.discard_partial() == 4);
    framer.push("me\":2}\n", v);
    CHECK(c.lines == Lines{"{\"time\":1}", "me\":2}"});
    CHECK(framer.discard_partial() == 0);
  }
}

TEST_CASE("LineFramer numbers the lines it delivers, empty ones counted") {
  struct Numbers {
    const LineFramer* framer;
    std::vector<uint64_t> seen;
    void line(std::string_view) { seen.push_back(framer->line_number()); }
    void overlong(std::string_view, size_t) { seen.push_back(framer->line_number()); }
  };
  LineFramer framer(64);
  Numbers numbers{&framer, {}};
  framer.push("a\n\n\r\nb\n" + std::string(100, 'x') + "\nc", numbers);
  framer.finish(numbers);
  CHECK(numbers.seen == std::vector<uint64_t>{1, 4, 5, 6});
}
