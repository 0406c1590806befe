// The vector scanner against the scalar one: at every SimdLevel this CPU
// has, every line the vector scanner accepts must get the verdict, key and
// heartbeat the scalar scanner gives it, wherever its bytes fall relative
// to the 64-byte chunks — alone, and in runs of lines, compact and spaced,
// broken lines among them. And the vector
// scanner must actually accept the lines it is meant for: a test that only
// ever saw the scalar fallback would prove nothing.
#include "record/vector_scanner.h"

#include <doctest/doctest.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "record/record_parser.h"

namespace chronomerge {
namespace {

// The vector levels this CPU can run.
std::vector<SimdLevel> vector_levels() {
  std::vector<SimdLevel> levels;
  for (SimdLevel level : {SimdLevel::sse2, SimdLevel::avx2, SimdLevel::avx512}) {
    if (simd_level_supported(level)) levels.push_back(level);
  }
  return levels;
}

// A heap copy of exactly the line's bytes: AddressSanitizer then catches a
// read past its end (vector loads included).
class ExactLine {
 public:
  explicit ExactLine(std::string_view line)
      : bytes_(std::make_unique<char[]>(line.size() + 1)), size_(line.size()) {
    std::memcpy(bytes_.get(), line.data(), line.size());
  }
  std::string_view view() const { return {bytes_.get(), size_}; }

 private:
  std::unique_ptr<char[]> bytes_;
  size_t size_;
};

// Key specs the lines below exercise: top-level members of every key type,
// with and without a heartbeat field, one of them as a one-token pointer.
// (A pointer into a member, or a name with a quote in it, is never read by
// the vector scanner: RecordParser::scans_runs() is false for those.)
struct Specs {
  std::vector<KeySpec> all = {
      {"time", KeyType::integer, "hb"}, {"time", KeyType::integer, ""},
      {"time", KeyType::number, ""},    {"time", KeyType::string, "hb"},
      {"/time", KeyType::rfc3339, ""},  {"t", KeyType::string, "hb"},
      {"", KeyType::integer, "t"},
  };
};

// Scans `text` as one run at every vector level and checks each line
// against the scalar scanner; returns how many lines the vector scanner
// accepted at the first level.
int agree_on_run(std::string_view text, const KeySpec& spec) {
  const ExactLine run(text);
  const RecordParser scalar(spec, SimdLevel::scalar);
  // The lines as the framer cuts them.
  std::vector<std::string_view> lines;
  for (size_t begin = 0; begin < text.size();) {
    size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    lines.push_back(run.view().substr(begin, end - begin));
    begin = end + 1;
  }
  int first_accepted = -1;
  for (SimdLevel level : vector_levels()) {
    const RecordParser parser(spec, level);
    REQUIRE(parser.scans_runs());
    std::vector<ScannedLine> scanned;
    parser.scan_lines(run.view(), scanned);
    INFO("level ", to_string(level), ", key ", spec.path, ", run of ", text.size(), " bytes");
    REQUIRE(scanned.size() == lines.size());
    int accepted = 0;
    for (size_t i = 0; i < lines.size(); ++i) {
      const std::string_view line = run.view().substr(scanned[i].begin, scanned[i].length);
      INFO("line ", i, ": ", line);
      REQUIRE(line.data() == lines[i].data());
      REQUIRE(line.size() == lines[i].size());
      if (!scanned[i].accepted) continue;
      ++accepted;
      ParsedRecord want;
      ParsedRecord got;
      const auto want_error = scalar.parse(line, want);
      const auto got_error = parser.finish(line, scanned[i].scan, got);
      CHECK(got_error == want_error);
      if (!want_error && !got_error) {
        CHECK(got.key == want.key);
        CHECK(got.key_offset == want.key_offset);
        CHECK(got.key_length == want.key_length);
        CHECK(got.heartbeat == want.heartbeat);
      }
    }
    if (first_accepted < 0) first_accepted = accepted;
  }
  return first_accepted;
}

// Every vector level agrees with the scalar scanner on `line`, scanned as
// a run of its own, for every key spec the vector scanner reads; returns
// how many levels accepted it (key "time", with the heartbeat field "hb"
// and without one: a level must decide the same both ways, as their
// classification differs).
int agree(std::string_view text) {
  static const Specs specs;
  for (const KeySpec& spec : specs.all) {
    if (RecordParser(spec, SimdLevel::avx2).scans_runs()) agree_on_run(text, spec);
  }
  const ExactLine line(text);
  int accepted = 0;
  for (SimdLevel level : vector_levels()) {
    auto accepts = [&](std::string_view heartbeat_field) {
      std::vector<ScannedLine> scanned;
      VectorScanner::scan_lines(level, line.view(), "time", heartbeat_field, scanned);
      return scanned.size() == 1 && scanned[0].accepted;
    };
    const bool with_heartbeat = accepts("hb");
    CHECK_MESSAGE(with_heartbeat == accepts(""), "level ", to_string(level),
                  " decides differently without a heartbeat field");
    accepted += with_heartbeat ? 1 : 0;
  }
  return accepted;
}

const std::vector<std::string>& valid_lines() {
  static const std::vector<std::string> lines = {
      R"({"time":1700000000123,"lat":52.373104,"lon":4.892211,"speed":41.72,"soc":0.8123})",
      R"({"time":-5,"a":"x","b":true,"c":false,"d":null,"e":0,"f":-0.5e-3,"g":1E+9})",
      R"({"hb":true,"time":1})",
      R"({"time":1,"hb":true,"hb":false})",
      R"({"time":1,"time":"late"})",
      R"({"time":[1,2],"time":3})",
      R"({"a":[],"b":[true,false,null,"x",-0.5e+3],"time":0})",
      R"({"time" :1,"hb": true })",
      R"({"t":"2024-05-01T12:00:00Z","time":7})",
      R"({})",
      R"( { "time" : 12 , "x" : "y" } )",
      R"({"meta":{"ts":5,"x":[1,2,{"y":null}]},"time":3,"a":[0,1.5,"two"]})",
      R"({"a":[[],{}],"time":[1]})",
      R"({"time":1,"s":"caf\u00e9 \"quoted\""})",
      "{\"time\":1,\"s\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x9a\x8c\"}",
      R"({"time":12345678901234567890})",
      R"({"time":1.0})",
      R"([1,2,3])",
      R"("just a string")",
      R"(42)",
  };
  return lines;
}

const std::vector<std::string>& invalid_lines() {
  static const std::vector<std::string> lines = {
      R"({"time":1,})",
      R"({"time":1 "a":2})",
      R"({"time":01})",
      R"({"time":1.})",
      R"({"time":.5})",
      R"({"time":-})",
      R"({"time":1e})",
      R"({"time":1e+})",
      R"({"time":+1})",
      R"({"time":1.2.3})",
      R"({"time":1e2e3})",
      R"({"time":1e2.3})",
      R"({"time":tru})",
      R"({"time":truex})",
      R"({"time":nul})",
      R"({"time":1,"a":fals})",
      R"({"time":1,"a":falsy})",
      R"({"time":1,"a":nulL})",
      R"({"time":1,"a":True})",
      R"({"time":1,"a":trUe})",
      R"({"time":1,"a":false0})",
      // The same with eight bytes or more after the literal's start.
      R"({"a":fals,"time":1})",
      R"({"a":falsy,"time":1})",
      R"({"a":nulL,"time":1})",
      R"({"a":True,"time":1})",
      R"({"a":trUe,"time":1})",
      R"({"a":false0,"time":1})",
      R"({"a":truefalse,"time":1})",
      R"({"time":1x})",
      R"({"time":1,"a":2)",
      R"({"time":1}})",
      R"({"time":1} x)",
      R"({"time"1})",
      R"({"time"::1})",
      R"({:1})",
      R"({"a",1})",
      R"({,"a":1})",
      R"({"time":1,,"a":2})",
      R"({"time":[1,]})",
      R"({"time":[1}})",
      R"({"time":[,1]})",
      R"({"time":[1 2]})",
      R"({"time":[1]]})",
      R"({"time":]})",
      R"({"time":[1],})",
      R"({"time":[1]"a":2})",
      R"({"time":1,"a":[1,2})",
      R"({"time":1,"a":1:2})",
      R"({"time":"a":2})",
      R"({"time","a":2})",
      R"({"time":1,"a"})",
      R"({"a"})",
      R"({"time":1,[1]})",
      R"({"time":[1,[2]]})",
      R"({"time":1 ,})",
      R"({ "time" : 1 , })",
      R"({"time" "a"})",
      R"({"time":1,"a","b"})",  // ',' where a ':' belongs: only the parity tells
      R"({"time":1,"a":[1],"b","c"})",
      R"({"a":{"b":1})",
      R"({"time":"abc)",
      R"({"time":1"a"})",
      R"({"time":"a"1})",
      R"({"time":00})",
      R"({"time":-01})",
      R"({"time":1-2})",
      R"({"time":1e5-})",
      R"({"time":e5})",
      R"({"time":1E})",
      R"({"time":Infinity})",
      R"({"time":NaN})",
      R"({'time':1})",
      "{\"time\":1,\"s\":\"a\tb\"}",          // a raw tab inside a string
      "{\"time\":1,\"s\":\"\xc3\"}",          // a cut UTF-8 sequence
      "{\"time\":1,\"s\":\"\xed\xa0\x80\"}",  // a UTF-16 surrogate in UTF-8
      "{\"time\":1}\x0b",                     // a vertical tab is not whitespace
      "{\"time\":1,\x80:2}",                  // non-ASCII outside a string
      "",
      "   ",
  };
  return lines;
}

TEST_CASE("the vector scanner accepts the lines it is meant for") {
  if (vector_levels().empty()) return;  // nothing to compare on this CPU
  for (const char* line :
       {R"({"time":1700000000123,"lat":52.373104,"lon":4.892211,"speed":41.72,"soc":0.8123})",
        R"({"time":-5,"a":"x","b":true,"c":false,"d":null,"e":0,"f":-0.5e-3,"g":1E+9})", R"({})",
        "{\"time\":1,\"s\":\"caf\xc3\xa9\"}", R"({"time":1,"v":[52.1,-4,"x",true,null],"w":[]})",
        R"({"v":[1e5],"time":"2024-05-01T12:00:00Z"})",
        // whitespace between tokens: the general rules, not the compact ones
        R"({ "time": 12, "v": [ 1, 2 ] , "s" : "a b" })", "{\"time\":1,\t\"a\":2}\r"}) {
    CAPTURE(line);
    CHECK(agree(line) == static_cast<int>(vector_levels().size()));
  }
  // Escapes, errors and nested lines are the scalar scanner's to decide.
  CHECK(agree(R"({"time":1,"s":"a\"b"})") == 0);
  CHECK(agree(R"({"time":1,})") == 0);
  CHECK(agree(R"({"meta":{"ts":5},"time":3})") == 0);
  CHECK(agree(R"({"time":3,"a":[[1]]})") == 0);
  CHECK(agree(R"({"time":3,"a":[{}]})") == 0);
  CHECK(agree(R"([1,2])") == 0);
}

TEST_CASE("vector and scalar scanners agree on every line, at every offset from a chunk edge") {
  // Leading whitespace moves every byte of the line across the 64-byte
  // chunk edges and the 128-byte single-word limit; trailing whitespace
  // moves its end.
  std::vector<std::string> lines = valid_lines();
  lines.insert(lines.end(), invalid_lines().begin(), invalid_lines().end());
  for (const std::string& line : lines) {
    for (size_t pad = 0; pad <= 140; ++pad) {
      agree(std::string(pad, ' ') + line);
      agree(line + std::string(pad, ' '));
    }
  }
}

TEST_CASE("rare bytes on either side of a step edge are classified in their step") {
  // AVX-512 and AVX2 classify a step of eight or four chunks (512 or 256
  // bytes) at a time and look for brackets, '+', control and non-ASCII
  // bytes only in steps that have one; a filler string moves each of them
  // across the edge at 512 bytes (a step edge at both levels).
  for (size_t fill = 440; fill <= 520; ++fill) {
    const std::string head = R"({"time":1,"s":")" + std::string(fill, 'x');
    CAPTURE(fill);
    CHECK(agree(head + R"(","v":[1,2],"p":1e+5,"u":"caf)"
                       "\xc3\xa9"
                       R"("})") == static_cast<int>(vector_levels().size()));
    CHECK(agree(head + R"(","v":[],"w":[3]})") == static_cast<int>(vector_levels().size()));
    // A lone UTF-8 continuation byte, and a control byte, in a string.
    agree(head + "\x80\"}");
    agree(head + "\x8f\x8f\"}");
    agree(head + "\x01\"}");
  }
}

TEST_CASE("an error at every position of a long record is found at every level") {
  // A record of about 300 bytes (three chunks, carries between them), each
  // byte in turn replaced by characters that break JSON or numbers.
  std::string record = R"({"time":1700000000123)";
  for (int i = 0; record.size() < 290; ++i) {
    record += ",\"f" + std::to_string(i) + "\":" +
              (i % 3 == 0   ? std::string("-12.5e-3")
               : i % 3 == 1 ? "\"text\""
                            : "true");
  }
  record += "}";
  REQUIRE(agree(record) == static_cast<int>(vector_levels().size()));
  for (size_t at = 0; at < record.size(); ++at) {
    for (char replacement : {'x', '"', ',', ':', '{', '}', '.', '-', 'e', '0', ' ', '\x01'}) {
      std::string broken = record;
      broken[at] = replacement;
      agree(broken);
    }
    std::string cut = record.substr(0, at);
    agree(cut);
  }
}

TEST_CASE("vector and scalar scanners agree on random records and their mutations") {
  std::mt19937 rng(7);
  const std::string alphabet = "{}[]:,\"\\ 0123456789.-+eEtrufalsn\tx";
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  auto value = [&](auto&& self, int depth) -> std::string {
    switch (pick(depth < 3 ? 8 : 6)) {
      case 0:
        return std::to_string(static_cast<int64_t>(rng()) - (1LL << 31));
      case 1:
        return std::to_string(pick(1000)) + "." + std::to_string(pick(1000)) +
               (pick(2) ? "e-" + std::to_string(pick(20)) : "");
      case 2:
        return "\"s" +
               std::string(static_cast<size_t>(pick(90)), 'a' + static_cast<char>(pick(26))) + "\"";
      case 3:
        return pick(2) ? "true" : "false";
      case 4:
        return "null";
      case 5:
        return "0";
      case 6: {
        std::string object = "{";
        for (int i = pick(4); i > 0; --i) {
          object += "\"k" + std::to_string(i) + "\":" + self(self, depth + 1) + (i > 1 ? "," : "");
        }
        return object + "}";
      }
      default: {
        std::string array = "[";
        for (int i = pick(4); i > 0; --i) array += self(self, depth + 1) + (i > 1 ? "," : "");
        return array + "]";
      }
    }
  };
  for (int round = 0; round < 2000; ++round) {
    std::string line = "{";
    const int members = 1 + pick(14);
    for (int i = 0; i < members; ++i) {
      // Besides the keys: names of the same size and first byte as one
      // ("temp", "h0"), a prefix ("tim") and an extension ("times").
      static const char* const near[] = {"temp", "h0", "tim", "times", "t", "", "hb"};
      const std::string name = pick(4) == 0   ? "time"
                               : pick(3) == 0 ? near[pick(7)]
                                              : "f" + std::to_string(i);
      line += (i ? "," : "") + ("\"" + name + "\":") + value(value, 0);
    }
    line += "}";
    agree(line);
    for (int mutation = 0; mutation < 4; ++mutation) {
      std::string mutated = line;
      const size_t at = static_cast<size_t>(pick(static_cast<int>(mutated.size())));
      switch (pick(3)) {
        case 0:
          mutated[at] = alphabet[static_cast<size_t>(pick(static_cast<int>(alphabet.size())))];
          break;
        case 1:
          mutated.erase(at, 1);
          break;
        default:
          mutated.insert(at, 1,
                         alphabet[static_cast<size_t>(pick(static_cast<int>(alphabet.size())))]);
          break;
      }
      agree(mutated);
    }
  }
}

TEST_CASE("runs of lines: each line gets the scalar scanner's verdict") {
  if (vector_levels().empty()) return;
  const KeySpec spec{"time", KeyType::integer, "hb"};
  const std::string a = R"({"time":1700000000123,"lat":52.373104,"v":[1,2],"s":"x y"})";
  const std::string b = R"({"time":-7,"hb":true})";
  const std::string spaced = R"({ "time": 3, "v": [ 1 ] })";

  SUBCASE("compact lines, each accepted, with and without a last newline") {
    CHECK(agree_on_run(a + "\n" + b + "\n" + a + "\n", spec) == 3);
    CHECK(agree_on_run(a + "\n" + b, spec) == 2);
    CHECK(agree_on_run(a, spec) == 1);
  }
  SUBCASE("short lines: up to 64 of them end in one 64-byte chunk, each accepted") {
    // Lines of 8 to 14 bytes: 4 to 8 newlines per chunk, past the two a
    // chunk's newlines are listed for without a loop.
    std::string run;
    int lines = 0;
    for (int i = 0; i < 300; ++i, ++lines) run += R"({"time":)" + std::to_string(i * 997) + "}\n";
    CHECK(agree_on_run(run, spec) == lines);
    CHECK(agree_on_run(std::string(64, '\n') + run, spec) == lines);
    CHECK(agree_on_run(std::string(R"({"t":1})") + "\n" + run, spec) == lines + 1);
  }
  SUBCASE("a spaced line among compact ones: the run is scanned the general way") {
    CHECK(agree_on_run(a + "\n" + spaced + "\n" + b + "\n", spec) == 3);
    std::string late;
    for (int i = 0; i < 40; ++i) late += a + "\n";
    CHECK(agree_on_run(late + spaced + "\n", spec) == 41);
  }
  SUBCASE("CRLF, empty and blank lines are left to the framer and the scalar scanner") {
    CHECK(agree_on_run(a + "\r\n" + b + "\r\n", spec) == 2);
    CHECK(agree_on_run("\n" + a + "\n\n" + b + "\n  \n\r\n", spec) == 2);
  }
  SUBCASE("a broken line does not disturb the next one") {
    for (const std::string broken :
         {R"({"time":"x)", R"({"time":[1)", R"({"time":1,)", R"({"time":"a\")",
          R"({"time":1,"s":")", R"({"time":[1,[2)", R"({"a":{"b":1)", R"("x)", R"(])", R"(})",
          R"({"a":1}})", "{\"time\":1,\"s\":\"\xc3\"}", "{\"time\":1,\"s\":\"a\tb\"}"}) {
      CAPTURE(broken);
      CHECK(agree_on_run(broken + "\n" + a + "\n" + broken + "\n" + b + "\n", spec) == 2);
      CHECK(agree_on_run(broken + "\n" + spaced + "\n", spec) == 1);
    }
  }
  SUBCASE("a string left open restarts at the newline, wherever the newline falls") {
    // With the string parity carried over the newline, `x"` would be the
    // end of a string and the record after it valid.
    for (size_t pad = 0; pad < 140; ++pad) {
      CAPTURE(pad);
      const std::string open = R"({"time":1,"s":")" + std::string(pad, 's') + "\n";
      CHECK(agree_on_run(open + R"(x"{"time":2})" + "\n" + b + "\n", spec) == 1);
      CHECK(agree_on_run(open + R"(x" {"time":2})" + "\n" + b + "\n", spec) == 1);
      const std::string empty = "{" + std::string(pad, ' ') + "}\n";
      CHECK(agree_on_run(empty + a + "\n", spec) == 2);
      const std::string array = R"({"a":[)" + std::string(pad, ' ') + "\n";
      CHECK(agree_on_run(array + a + "\n", spec) == 1);
    }
  }
  SUBCASE("a line over the vector scanner's limit goes to the scalar scanner") {
    std::string long_line = R"({"time":1,"pad":")";
    long_line += std::string(VectorScanner::max_line_bytes, 'x') + "\"}";
    CHECK(agree_on_run(a + "\n" + long_line + "\n" + b + "\n", spec) == 2);
  }
}

TEST_CASE("runs of random lines agree with the scalar scanner at every alignment") {
  if (vector_levels().empty()) return;
  std::vector<std::string> pool = valid_lines();
  pool.insert(pool.end(), invalid_lines().begin(), invalid_lines().end());
  pool.push_back(R"({"time":1,"v":[1.5,"a",[2]],"hb":true})");
  pool.push_back(R"({"time" : 2 , "hb" : false})");
  std::mt19937 rng(11);
  static const Specs specs;
  for (int round = 0; round < 300; ++round) {
    // A first line of every length moves the rest across the chunk edges.
    std::string run =
        R"({"time":0,"p":")" + std::string(static_cast<size_t>(round % 70), 'p') + "\"}\n";
    const int lines = 1 + static_cast<int>(rng() % 12);
    for (int i = 0; i < lines; ++i) {
      run += pool[rng() % pool.size()];
      run += rng() % 5 == 0 ? "\r\n" : "\n";
    }
    if (rng() % 3 == 0) run.pop_back();  // no newline after the last line
    for (const KeySpec& spec : specs.all) {
      if (!RecordParser(spec, SimdLevel::avx2).scans_runs()) continue;
      agree_on_run(run, spec);
    }
  }
}

TEST_CASE("which keys the vector scanner reads") {
  auto runs = [](KeySpec spec, SimdLevel level) {
    return RecordParser(std::move(spec), level).scans_runs();
  };
  for (SimdLevel level : {SimdLevel::sse2, SimdLevel::avx2, SimdLevel::avx512}) {
    CAPTURE(to_string(level));
    CHECK(runs({"time", KeyType::integer, ""}, level));
    CHECK(runs({"/time", KeyType::integer, "hb"}, level));  // a pointer of one token
    CHECK(runs({"", KeyType::integer, ""}, level));
    // A pointer into a member can reach an array element it does not read.
    CHECK_FALSE(runs({"/meta/ts", KeyType::integer, ""}, level));
    // A name no line without escapes can hold, for the key or the heartbeat.
    CHECK_FALSE(runs({"a\"b", KeyType::integer, ""}, level));
    CHECK_FALSE(runs({"a\\b", KeyType::integer, ""}, level));
    CHECK_FALSE(runs({"time", KeyType::integer, "h\tb"}, level));
    // Names up to max_name_bytes long.
    const std::string longest(VectorScanner::max_name_bytes, 'k');
    CHECK(runs({longest, KeyType::integer, longest}, level));
    CHECK_FALSE(runs({longest + "k", KeyType::integer, ""}, level));
    CHECK_FALSE(runs({"time", KeyType::integer, longest + "h"}, level));
  }
  CHECK_FALSE(runs({"time", KeyType::integer, ""}, SimdLevel::scalar));
}

TEST_CASE("SimdLevel names and support") {
  for (SimdLevel level : {SimdLevel::scalar, SimdLevel::sse2, SimdLevel::avx2, SimdLevel::avx512}) {
    CHECK(simd_level_from(to_string(level)) == level);
  }
  CHECK_FALSE(simd_level_from("neon").has_value());
  CHECK(simd_level_supported(SimdLevel::scalar));
  CHECK(simd_level_supported(widest_simd_level()));
  CHECK(simd_level_supported(default_simd_level()));
}

}  // namespace
}  // namespace chronomerge
