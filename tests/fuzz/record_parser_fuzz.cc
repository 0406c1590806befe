// RecordParser against nlohmann/json: the verdict on a line (record or not,
// and which error) and the extracted key must agree. The scalar scanner
// (RecordParser::parse) is compared with nlohmann, and every vector level
// (vector_scanner.h) with the scalar scanner, byte for byte of what they
// report: the input is scanned as a run of lines (cut at its '\n's), and
// each line the vector scanner accepts must be what the scalar scanner
// makes of it.
//
// Input: one byte choosing the KeySpec (key path, key type, heartbeat field),
// then the line.
//
// Where the two parsers legitimately differ, the case is not compared with
// nlohmann but checked against what RFC 8259 says instead:
// - NUL: nlohmann ends its input at the first NUL byte outside a string
//   (`{"a":1}\0garbage` parses), with either input adapter. A raw NUL is
//   never valid JSON, so a line holding one must be not_json for us.
// - Byte order mark: nlohmann skips a leading UTF-8 BOM (RFC 8259 lets a
//   parser do so); our records are forwarded byte for byte and a BOM is not
//   JSON text, so such a line must be not_json.
// - Numbers beyond the double range (1e999): valid JSON, but nlohmann stops
//   with out_of_range before reading the rest, so it has no verdict; these
//   lines are not compared at all.
// - Nesting: we stop at RecordParser::max_depth levels with too_deep,
//   nlohmann has no limit; too_deep must come with a document at least that
//   deep, and the rest is not compared.
// - Integers beyond int64: nlohmann keeps them as uint64 or double, an
//   integer key must report key_overflow (or wrong_key_type when nlohmann
//   read a double: its DOM no longer says whether the literal had a fraction
//   or exponent, so either error is accepted, never success).
// Everything else, including invalid UTF-8, lone surrogate escapes,
// duplicate members (the last wins in both) and the four JSON whitespace
// bytes, must agree exactly.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "record/key.h"
#include "record/record_parser.h"

namespace {

using chronomerge::Key;
using chronomerge::KeySpec;
using chronomerge::KeyType;
using chronomerge::LineError;
using chronomerge::ParsedRecord;
using chronomerge::RecordParser;
using chronomerge::SimdLevel;
using Json = nlohmann::json;

// Paths that reach top-level members, nested members, array elements,
// escaped tokens and the empty name.
constexpr const char* paths[] = {"time", "/meta/ts", "/a/0", "/~1x~0/", "", "/1", "/", "ts"};
constexpr KeyType types[] = {KeyType::integer, KeyType::number, KeyType::rfc3339, KeyType::string};

[[noreturn]] void fail(const char* what, std::string_view line) {
  std::fprintf(stderr, "record_parser_fuzz: %s\nline (%zu bytes): %s\n", what, line.size(),
               Json(std::string(line)).dump(-1, ' ', true, Json::error_handler_t::replace).c_str());
  std::abort();
}

std::string_view verdict_name(const std::optional<LineError>& error) {
  return error ? to_string(*error) : "ok";
}

void expect(bool condition, const char* what, std::string_view line,
            const std::optional<LineError>& ours) {
  if (condition) return;
  std::string message = std::string(what) + " (ours: " + std::string(verdict_name(ours)) + ")";
  fail(message.c_str(), line);
}

// Containers nested at the deepest point; the top object counts as 1.
int depth(const Json& value) {
  if (!value.is_structured()) return 0;
  int deepest = 0;
  for (const Json& child : value) deepest = std::max(deepest, depth(child));
  return deepest + 1;
}

// RFC 6901 tokens of a key path as RecordParser reads it; a path without a
// leading '/' is one member name.
std::vector<std::string> tokens_of(std::string_view path) {
  if (path.empty() || path[0] != '/') return {std::string(path)};
  std::vector<std::string> tokens(1);
  for (size_t i = 1; i < path.size(); ++i) {
    if (path[i] == '/') {
      tokens.emplace_back();
    } else if (path[i] == '~' && i + 1 < path.size() &&
               (path[i + 1] == '0' || path[i + 1] == '1')) {
      tokens.back() += path[i + 1] == '0' ? '~' : '/';
      ++i;
    } else {
      tokens.back() += path[i];
    }
  }
  return tokens;
}

// An array index token: "0" or digits without a leading zero.
std::optional<size_t> index_of(const std::string& token) {
  if (token.empty() || token.size() > 18 || (token[0] == '0' && token.size() > 1)) {
    return std::nullopt;
  }
  size_t value = 0;
  for (char c : token) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<size_t>(c - '0');
  }
  return value;
}

const Json* lookup(const Json& root, const std::vector<std::string>& tokens) {
  const Json* node = &root;
  for (const std::string& token : tokens) {
    if (node->is_object()) {
      auto it = node->find(token);
      if (it == node->end()) return nullptr;
      node = &*it;
    } else if (node->is_array()) {
      std::optional<size_t> index = index_of(token);
      if (!index || *index >= node->size()) return nullptr;
      node = &(*node)[*index];
    } else {
      return nullptr;
    }
  }
  return node;
}

bool is_json_whitespace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

}  // namespace

// The input as a run of lines: the vector scanner must report every line
// (cut where the framer cuts), and each it accepts must be what the scalar
// scanner makes of it.
void check_run(const KeySpec& spec, std::string_view run) {
  const RecordParser scalar(spec, SimdLevel::scalar);
  for (SimdLevel level : {SimdLevel::sse2, SimdLevel::avx2, SimdLevel::avx512}) {
    if (!chronomerge::simd_level_supported(level)) continue;
    const RecordParser parser(spec, level);
    if (!parser.scans_runs()) return;
    std::vector<chronomerge::ScannedLine> scanned;
    parser.scan_lines(run, scanned);
    size_t begin = 0;
    for (const chronomerge::ScannedLine& s : scanned) {
      const size_t end = std::min(run.find('\n', begin), run.size());
      expect(s.begin == begin && s.begin + s.length == end,
             "a run's line is not where the framer cuts it", run, std::nullopt);
      begin = end + 1;
      if (!s.accepted) continue;
      const std::string_view line = run.substr(s.begin, s.length);
      ParsedRecord want;
      ParsedRecord got;
      const std::optional<LineError> want_error = scalar.parse(line, want);
      const std::optional<LineError> got_error = parser.finish(line, s.scan, got);
      expect(got_error == want_error, "a run's line: the vector verdict differs from scalar", line,
             want_error);
      if (!want_error) {
        expect(got.key == want.key && got.key_offset == want.key_offset &&
                   got.key_length == want.key_length && got.heartbeat == want.heartbeat,
               "a run's line: the vector scanner read another key or heartbeat", line, want_error);
      }
    }
    expect(begin >= run.size(), "a run's lines are missing at its end", run, std::nullopt);
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t selector = data[0];
  KeySpec spec;
  spec.path = paths[selector % 8];
  spec.type = types[(selector >> 3) % 4];
  if (selector & 0x20) spec.heartbeat_field = "hb";
  // The scalar scanner is the reference checked against nlohmann; every
  // vector level this CPU has must then say exactly what it says.
  const RecordParser parser(spec, SimdLevel::scalar);
  // libFuzzer hands over exactly `size` bytes of heap: a read past the end
  // of the line is caught by AddressSanitizer.
  const std::string_view line(reinterpret_cast<const char*>(data) + 1, size - 1);

  ParsedRecord record;
  const std::optional<LineError> ours = parser.parse(line, record);
  check_run(spec, line);
  const bool ours_json = !ours || (*ours != LineError::not_json && *ours != LineError::too_deep);

  if (line.find('\0') != std::string_view::npos) {
    expect(!ours_json, "a line with a NUL byte was accepted as JSON", line, ours);
    return 0;
  }
  if (line.starts_with("\xEF\xBB\xBF")) {
    expect(ours == LineError::not_json, "a line starting with a BOM must be not_json", line, ours);
    return 0;
  }

  Json doc;
  try {
    doc = Json::parse(line.begin(), line.end());
  } catch (const Json::out_of_range&) {
    return 0;  // a number beyond double: nlohmann gives no verdict
  } catch (const Json::parse_error&) {
    expect(!ours_json, "nlohmann rejects, we accept", line, ours);
    return 0;
  }
  if (ours == LineError::too_deep) {
    expect(depth(doc) > RecordParser::max_depth, "too_deep on a shallow document", line, ours);
    return 0;
  }
  expect(ours_json, "nlohmann accepts, we reject", line, ours);
  expect(depth(doc) <= RecordParser::max_depth, "a too deep document was not too_deep", line, ours);
  if (!doc.is_object()) {
    expect(ours == LineError::not_object, "expected not_object", line, ours);
    return 0;
  }
  const Json* value = lookup(doc, tokens_of(spec.path));
  if (value == nullptr) {
    expect(ours == LineError::missing_key, "expected missing_key", line, ours);
    return 0;
  }

  // The key's value, as nlohmann read it, decides the rest.
  Key expected;
  switch (spec.type) {
    case KeyType::integer:
      if (value->is_number_unsigned()) {
        const auto n = value->get<uint64_t>();
        if (n > static_cast<uint64_t>(INT64_MAX)) {
          expect(ours == LineError::key_overflow, "expected key_overflow (uint64)", line, ours);
          return 0;
        }
        expected = Key::from_integer(static_cast<int64_t>(n));
      } else if (value->is_number_integer()) {
        expected = Key::from_integer(value->get<int64_t>());
      } else if (value->is_number_float()) {
        expect(ours == LineError::wrong_key_type || ours == LineError::key_overflow,
               "a non-int64 number as an integer key", line, ours);
        if (ours == LineError::key_overflow) {
          const double d = value->get<double>();
          expect(d >= 9.2e18 || d <= -9.2e18, "key_overflow for a small number", line, ours);
        }
        return 0;
      } else {
        expect(ours == LineError::wrong_key_type, "expected wrong_key_type", line, ours);
        return 0;
      }
      break;
    case KeyType::number:
      if (!value->is_number()) {
        expect(ours == LineError::wrong_key_type, "expected wrong_key_type", line, ours);
        return 0;
      }
      // nlohmann converts integers exactly and parses other numbers with
      // strtod; both round to nearest like from_chars.
      expected = Key::from_number(value->get<double>());
      break;
    case KeyType::rfc3339: {
      if (!value->is_string()) {
        expect(ours == LineError::wrong_key_type, "expected wrong_key_type", line, ours);
        return 0;
      }
      std::optional<int64_t> nanos = chronomerge::parse_rfc3339_nanos(value->get<std::string>());
      if (!nanos) {
        expect(ours == LineError::wrong_key_type, "expected wrong_key_type (time)", line, ours);
        return 0;
      }
      expected = Key::from_integer(*nanos);
      break;
    }
    case KeyType::string:
      if (!value->is_string()) {
        expect(ours == LineError::wrong_key_type, "expected wrong_key_type", line, ours);
        return 0;
      }
      expected = Key::from_string(value->get<std::string>());
      break;
  }
  expect(!ours, "nlohmann finds a valid key", line, ours);
  expect(record.key == expected, "the keys differ", line, ours);

  // The span must hold exactly the key's JSON text.
  expect(size_t{record.key_offset} + record.key_length <= line.size() && record.key_length > 0,
         "the key span is out of the line", line, ours);
  const std::string_view span = line.substr(record.key_offset, record.key_length);
  expect(!is_json_whitespace(span.front()) && !is_json_whitespace(span.back()),
         "the key span includes whitespace", line, ours);
  Json span_value;
  try {
    span_value = Json::parse(span.begin(), span.end());
  } catch (const Json::exception&) {
    fail("the key span is not a JSON value", line);
  }
  expect(span_value == *value, "the key span holds another value", line, ours);

  if (!spec.heartbeat_field.empty()) {
    auto it = doc.find(spec.heartbeat_field);
    const bool heartbeat = it != doc.end() && it->is_boolean() && it->get<bool>();
    expect(record.heartbeat == heartbeat, "the heartbeat flag differs", line, ours);
  } else {
    expect(!record.heartbeat, "a heartbeat without a heartbeat field", line, ours);
  }
  return 0;
}
