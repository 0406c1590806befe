// Keys of every type against independent references.
//
// Input: one byte choosing the key type, then the type's text:
// - integer: a JSON number literal, as the value of the key in a record;
//   checked against the JSON grammar and std::from_chars into int64;
// - number: the same, checked against strtod and the order of doubles;
// - rfc3339: a timestamp, checked against a table of hand-checked cases (at
//   start-up) and an implementation on C++20 <chrono> calendar types that
//   shares no code with the parser; rendering must parse back;
// - string: two strings (split at the first 0xFF byte) as JSON string
//   bodies, checked against nlohmann's decoding, bytewise order and
//   rendering.
#include <nlohmann/json.hpp>

#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include "record/key.h"
#include "record/record_parser.h"

namespace {

using chronomerge::Key;
using chronomerge::KeySpec;
using chronomerge::KeyType;
using chronomerge::LineError;
using chronomerge::ParsedRecord;
using chronomerge::RecordParser;

[[noreturn]] void fail(const char* what, std::string_view text) {
  std::fprintf(stderr, "key_fuzz: %s\ntext (%zu bytes): %s\n", what, text.size(),
               nlohmann::json(std::string(text))
                   .dump(-1, ' ', true, nlohmann::json::error_handler_t::replace)
                   .c_str());
  std::abort();
}

void expect(bool condition, const char* what, std::string_view text) {
  if (!condition) fail(what, text);
}

// --- RFC 3339 reference ----------------------------------------------------

// YYYY-MM-DD (T|t| ) hh:mm:ss [.f{1,9}] (Z|z|(+|-)hh:mm), a leap second :60
// counted as the next second, in int64 nanoseconds or nothing. Written on
// <chrono>'s calendar and 128-bit arithmetic, sharing nothing with
// parse_rfc3339_nanos.
std::optional<int64_t> reference_rfc3339(std::string_view s) {
  auto number = [&](size_t pos, size_t n) -> std::optional<int> {
    if (pos + n > s.size()) return std::nullopt;
    int value = 0;
    for (size_t i = pos; i < pos + n; ++i) {
      if (s[i] < '0' || s[i] > '9') return std::nullopt;
      value = value * 10 + (s[i] - '0');
    }
    return value;
  };
  auto at = [&](size_t pos, std::string_view allowed) {
    return pos < s.size() && allowed.find(s[pos]) != std::string_view::npos;
  };
  const auto year = number(0, 4), month = number(5, 2), day = number(8, 2);
  const auto hour = number(11, 2), minute = number(14, 2), second = number(17, 2);
  if (!year || !month || !day || !hour || !minute || !second || !at(4, "-") || !at(7, "-") ||
      !at(10, "Tt ") || !at(13, ":") || !at(16, ":")) {
    return std::nullopt;
  }
  size_t pos = 19;
  __int128 fraction = 0;
  if (at(pos, ".")) {
    size_t digits = 0;
    while (at(pos + 1 + digits, "0123456789")) ++digits;
    if (digits < 1 || digits > 9) return std::nullopt;
    for (size_t i = 0; i < 9; ++i) {
      fraction = fraction * 10 + (i < digits ? s[pos + 1 + i] - '0' : 0);
    }
    pos += 1 + digits;
  }
  __int128 offset = 0;
  if (s.substr(pos) == "Z" || s.substr(pos) == "z") {
    pos += 1;
  } else if (at(pos, "+-") && s.size() == pos + 6 && at(pos + 3, ":")) {
    const auto oh = number(pos + 1, 2), om = number(pos + 4, 2);
    if (!oh || !om || *oh > 23 || *om > 59) return std::nullopt;
    offset = (*oh * 3600 + *om * 60) * (s[pos] == '-' ? -1 : 1);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;

  using namespace std::chrono;
  const year_month_day date{std::chrono::year{*year}, std::chrono::month(*month),
                            std::chrono::day(*day)};
  if (!date.ok() || *hour > 23 || *minute > 59 || *second > 60) return std::nullopt;
  const __int128 days = sys_days(date).time_since_epoch().count();
  const __int128 seconds = days * 86400 + *hour * 3600 + *minute * 60 + *second - offset;
  const __int128 nanos = seconds * 1'000'000'000 + fraction;
  if (nanos < std::numeric_limits<int64_t>::min() || nanos > std::numeric_limits<int64_t>::max()) {
    return std::nullopt;
  }
  return static_cast<int64_t>(nanos);
}

struct TimeCase {
  const char* text;
  std::optional<int64_t> nanos;
};

// Checked by hand against `date -u -d @N` and the examples of RFC 3339 §5.8.
constexpr int64_t sec = 1'000'000'000;
const TimeCase time_cases[] = {
    {"1970-01-01T00:00:00Z", 0},
    {"2024-05-01T12:00:00.123Z", 1714564800 * sec + 123'000'000},
    {"2024-05-01T14:00:00+02:00", 1714564800 * sec},
    {"2024-05-01T12:00:00-00:30", 1714566600 * sec},
    {"2024-05-01t12:00:00z", 1714564800 * sec},
    {"2024-05-01 12:00:00Z", 1714564800 * sec},
    {"2024-05-01T12:00:00-00:00", 1714564800 * sec},
    {"1985-04-12T23:20:50.52Z", 482196050 * sec + 520'000'000},
    {"1996-12-19T16:39:57-08:00", 851042397 * sec},
    {"2000-02-29T00:00:00Z", 951782400 * sec},
    {"2100-02-28T23:59:59Z", 4107542399 * sec},
    {"2016-12-31T23:59:60Z", 1483228800 * sec},
    {"1969-12-31T23:59:59.999999999Z", -1},
    {"1970-01-01T00:00:00.000000001Z", 1},
    {"2262-04-11T23:47:16.854775807Z", std::numeric_limits<int64_t>::max()},
    {"1677-09-21T00:12:43.145224192Z", std::numeric_limits<int64_t>::min()},
    {"2262-04-11T23:47:16.854775808Z", std::nullopt},
    {"1677-09-21T00:12:43.145224191Z", std::nullopt},
    {"2262-04-12T01:47:16.854775807+02:00", std::numeric_limits<int64_t>::max()},
    {"2001-02-29T00:00:00Z", std::nullopt},
    {"1900-02-29T00:00:00Z", std::nullopt},
    {"2024-04-31T00:00:00Z", std::nullopt},
    {"2024-13-01T00:00:00Z", std::nullopt},
    {"2024-00-01T00:00:00Z", std::nullopt},
    {"2024-05-00T00:00:00Z", std::nullopt},
    {"2024-05-01T24:00:00Z", std::nullopt},
    {"2024-05-01T12:60:00Z", std::nullopt},
    {"2024-05-01T12:00:61Z", std::nullopt},
    {"2024-05-01T12:00:00", std::nullopt},
    {"2024-05-01T12:00:00.Z", std::nullopt},
    {"2024-05-01T12:00:00.1234567890Z", std::nullopt},
    {"2024-05-01T12:00:00+24:00", std::nullopt},
    {"2024-05-01T12:00:00+02:60", std::nullopt},
    {"2024-05-01T12:00:00+0200", std::nullopt},
    {"2024-05-01T12:00:00+02:00Z", std::nullopt},
    {"2024-05-01T12:00:00ZZ", std::nullopt},
    {"2024-5-01T12:00:00Z", std::nullopt},
    {"2024-05-01X12:00:00Z", std::nullopt},
    {"+024-05-01T12:00:00Z", std::nullopt},
    {"", std::nullopt},
};

void check_time(std::string_view text) {
  const std::optional<int64_t> ours = chronomerge::parse_rfc3339_nanos(text);
  const std::optional<int64_t> theirs = reference_rfc3339(text);
  if (ours != theirs) {
    std::fprintf(stderr, "key_fuzz: rfc3339 ours %s%lld, reference %s%lld\n", ours ? "" : "none ",
                 static_cast<long long>(ours.value_or(0)), theirs ? "" : "none ",
                 static_cast<long long>(theirs.value_or(0)));
    fail("rfc3339 differs from the reference", text);
  }
  if (!ours) return;
  // Rendering is canonical UTC and parses back to the same instant.
  const std::string rendered =
      chronomerge::key_to_string(KeyType::rfc3339, Key::from_integer(*ours));
  expect(rendered.ends_with('Z'), "rendered time without Z", rendered);
  expect(chronomerge::parse_rfc3339_nanos(rendered) == ours, "rendered time does not parse back",
         rendered);
}

// --- integer and number keys -------------------------------------------------

std::optional<LineError> parse_key(std::string_view literal, KeyType type, ParsedRecord& record) {
  KeySpec spec;
  spec.path = "k";
  spec.type = type;
  const std::string line = "{\"k\":" + std::string(literal) + "}";
  return RecordParser(spec).parse(line, record);
}

// The JSON number grammar, and whether the literal is an integer.
enum class Literal { invalid, integer, real };
Literal classify(std::string_view t) {
  size_t i = 0;
  auto digits = [&] {
    size_t start = i;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i;
    return i - start;
  };
  if (i < t.size() && t[i] == '-') ++i;
  if (i < t.size() && t[i] == '0') {
    ++i;
  } else if (i < t.size() && t[i] >= '1' && t[i] <= '9') {
    digits();
  } else {
    return Literal::invalid;
  }
  bool real = false;
  if (i < t.size() && t[i] == '.') {
    ++i;
    if (digits() == 0) return Literal::invalid;
    real = true;
  }
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
    if (digits() == 0) return Literal::invalid;
    real = true;
  }
  if (i != t.size()) return Literal::invalid;
  return real ? Literal::real : Literal::integer;
}

void check_integer(std::string_view literal) {
  ParsedRecord record;
  const auto error = parse_key(literal, KeyType::integer, record);
  switch (classify(literal)) {
    case Literal::invalid:
      // Whitespace around the literal is still JSON; anything else is not.
      if (literal.find_first_not_of(" \t\r\n0123456789-+.eE") == std::string_view::npos && !error) {
        const size_t first = literal.find_first_not_of(" \t\r\n");
        const size_t last = literal.find_last_not_of(" \t\r\n");
        expect(first != std::string_view::npos &&
                   classify(literal.substr(first, last - first + 1)) == Literal::integer,
               "a malformed integer was accepted", literal);
      }
      return;
    case Literal::real:
      expect(error == LineError::wrong_key_type, "a real number as an integer key", literal);
      return;
    case Literal::integer: {
      int64_t value = 0;
      const auto [end, ec] =
          std::from_chars(literal.data(), literal.data() + literal.size(), value);
      if (ec == std::errc::result_out_of_range) {
        expect(error == LineError::key_overflow, "an out-of-range integer must overflow", literal);
        return;
      }
      expect(ec == std::errc() && end == literal.data() + literal.size(), "from_chars disagrees",
             literal);
      expect(!error, "a valid integer key was rejected", literal);
      expect(record.key == Key::from_integer(value), "the integer key differs", literal);
      expect(chronomerge::key_to_string(KeyType::integer, record.key) == std::to_string(value),
             "an integer renders differently", literal);
      return;
    }
  }
}

void check_number(std::string_view literal, double other) {
  ParsedRecord record;
  const auto error = parse_key(literal, KeyType::number, record);
  if (classify(literal) == Literal::invalid) {
    // Other characters can make another valid record ({"k":1,"x":2}).
    if (!error && literal.find_first_not_of(" \t\r\n0123456789-+.eE") == std::string_view::npos) {
      const size_t first = literal.find_first_not_of(" \t\r\n");
      const size_t last = literal.find_last_not_of(" \t\r\n");
      expect(first != std::string_view::npos &&
                 classify(literal.substr(first, last - first + 1)) != Literal::invalid,
             "a malformed number was accepted", literal);
    }
    return;
  }
  const std::string text(literal);
  const double value = std::strtod(text.c_str(), nullptr);
  if (std::isinf(value)) {
    expect(error == LineError::key_overflow, "a number beyond double must overflow", literal);
    return;
  }
  expect(!error, "a valid number key was rejected", literal);
  const double got = chronomerge::key_number_value(record.key);
  // Exactly strtod's double; negative zero is the same key as zero.
  expect(got == value && !std::signbit(got == 0 ? got : 0.0), "the number key differs", literal);
  expect(record.key == Key::from_number(value), "the number key's ordinal differs", literal);
  // Keys order like their doubles.
  const Key other_key = Key::from_number(other);
  expect((record.key < other_key) == (value < other), "number keys misorder", literal);
  expect((record.key == other_key) == (value == other), "number keys misorder (equal)", literal);
  // Rendering is the shortest round-trip form.
  const std::string rendered = chronomerge::key_to_string(KeyType::number, record.key);
  expect(std::strtod(rendered.c_str(), nullptr) == value, "a number renders lossily", rendered);
  // Distance saturates instead of reaching infinity.
  const double distance = chronomerge::key_distance(KeyType::number, other_key, record.key);
  const double direct = value - other;
  expect(std::isfinite(distance), "a number distance is not finite", literal);
  if (std::isfinite(direct)) expect(distance == direct, "a number distance differs", literal);
}

void check_ordinals(int64_t a, int64_t b) {
  for (KeyType type : {KeyType::integer, KeyType::rfc3339}) {
    const double distance =
        chronomerge::key_distance(type, Key::from_integer(a), Key::from_integer(b));
    const auto exact = static_cast<double>(static_cast<__int128>(b) - a);
    if (distance != exact && std::fabs(distance - exact) > std::fabs(exact) * 1e-15) {
      fail("an integer distance is off", std::to_string(a) + " " + std::to_string(b));
    }
  }
}

// --- string keys -------------------------------------------------------------

void check_string(std::string_view body, std::string_view other) {
  KeySpec spec;
  spec.path = "k";
  spec.type = KeyType::string;
  // nlohmann ends its input at a NUL byte (see record_parser_fuzz.cc);
  // a raw NUL is never valid in a string anyway.
  if (body.find('\0') != std::string_view::npos) {
    ParsedRecord record;
    expect(RecordParser(spec).parse("{\"k\":\"" + std::string(body) + "\"}", record).has_value(),
           "a raw NUL in a string was accepted", body);
    return;
  }
  const std::string line = "{\"k\":\"" + std::string(body) + "\"}";
  ParsedRecord record;
  const auto error = RecordParser(spec).parse(line, record);
  std::string decoded;
  bool valid = true;
  try {
    decoded = nlohmann::json::parse(line).at("k").get<std::string>();
  } catch (const nlohmann::json::exception&) {
    valid = false;
  }
  if (!valid) {
    // A body with an unescaped quote can still make valid JSON of another
    // shape ({"k":"a","b":"c"}); then the key is the first string.
    return;
  }
  expect(!error, "a valid string key was rejected", body);
  expect(record.key.text == decoded, "the string key differs from nlohmann's", body);
  expect(record.key.ordinal == 0, "a string key with an ordinal", body);
  const Key other_key = Key::from_string(std::string(other));
  expect((record.key < other_key) == (decoded < std::string(other)), "string keys misorder", body);
  expect(chronomerge::key_to_string(KeyType::string, record.key) == decoded,
         "a string key renders differently", body);
  expect(chronomerge::key_distance(KeyType::string, record.key, other_key) == 0,
         "string keys have a distance", body);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  for (const TimeCase& c : time_cases) {
    if (chronomerge::parse_rfc3339_nanos(c.text) != c.nanos) fail("table: parser", c.text);
    if (reference_rfc3339(c.text) != c.nanos) fail("table: reference", c.text);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      check_integer(text);
      if (text.size() >= 16) {
        int64_t a, b;
        std::memcpy(&a, text.data(), 8);
        std::memcpy(&b, text.data() + 8, 8);
        check_ordinals(a, b);
      }
      break;
    case 1: {
      // A second double, for order and distance, from the first bytes.
      double other = 0;
      if (text.size() >= 8) std::memcpy(&other, text.data(), 8);
      if (!std::isfinite(other)) other = 1.5;
      check_number(text.size() >= 8 ? text.substr(8) : text, other);
      break;
    }
    case 2:
      check_time(text);
      break;
    case 3: {
      const size_t split = text.find('\xff');
      check_string(text.substr(0, split),
                   split == std::string_view::npos ? std::string_view() : text.substr(split + 1));
      break;
    }
  }
  return 0;
}
