#include "record/record_parser.h"

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <system_error>

// The parser is a recursive-descent JSON validator specialised for one job:
// accept or reject a whole line and, on the way, remember where the key's
// value lies. It never builds a DOM and never copies the line; the key is
// converted only after the whole line has proved valid, so a syntax error
// always wins over a key error ("not_json" before "wrong_key_type").
//
// Duplicate member names: the LAST occurrence wins, at every level of the
// key's path and for the heartbeat field, as in nlohmann/json and most
// other parsers. A later duplicate of an intermediate member (for the
// pointer /meta/ts, a second "meta") therefore discards whatever the first
// one held, even if the second lacks "ts".

namespace chronomerge {

namespace {

constexpr uint64_t ones = 0x0101010101010101ULL;
constexpr uint64_t highs = 0x8080808080808080ULL;

// Bytes a string body can hold with no further look: printable ASCII other
// than '"' and '\\'.
constexpr std::array<bool, 256> make_plain_table() {
  std::array<bool, 256> table{};
  for (int c = 0x20; c < 0x80; ++c) table[c] = c != '"' && c != '\\';
  return table;
}
constexpr std::array<bool, 256> plain_byte = make_plain_table();

constexpr std::array<bool, 256> make_whitespace_table() {
  std::array<bool, 256> table{};
  table[' '] = table['\t'] = table['\n'] = table['\r'] = true;
  return table;
}
constexpr std::array<bool, 256> whitespace_byte = make_whitespace_table();

inline bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Returns the first byte at or after `p` that is not plain (see plain_byte),
// or `end`. Eight bytes at a time: each term of the mask flags the bytes of
// one class, and although the subtraction tricks may also flag bytes above a
// genuinely flagged one (borrows run upwards), the lowest flag is always
// genuine, which is all countr_zero looks at.
inline const char* skip_plain(const char* p, const char* end) {
  if constexpr (std::endian::native == std::endian::little) {
    while (end - p >= 8) {
      uint64_t x;
      std::memcpy(&x, p, 8);
      const uint64_t quote = x ^ (ones * '"');
      const uint64_t backslash = x ^ (ones * '\\');
      const uint64_t mask = (x | ((quote - ones) & ~quote) | ((backslash - ones) & ~backslash) |
                             ((x - ones * 0x20) & ~x)) &
                            highs;
      if (mask != 0) return p + (std::countr_zero(mask) >> 3);
      p += 8;
    }
  }
  while (p < end && plain_byte[static_cast<unsigned char>(*p)]) ++p;
  return p;
}

inline int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Four hex digits at `p` (caller checked the bounds); -1 if any is not hex.
inline int32_t read_hex4(const char* p) {
  int32_t value = 0;
  for (int i = 0; i < 4; ++i) {
    const int digit = hex_value(p[i]);
    if (digit < 0) return -1;
    value = value << 4 | digit;
  }
  return value;
}

inline size_t encode_utf8(uint32_t cp, char* out) {
  if (cp < 0x80) {
    out[0] = static_cast<char>(cp);
    return 1;
  }
  if (cp < 0x800) {
    out[0] = static_cast<char>(0xC0 | cp >> 6);
    out[1] = static_cast<char>(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = static_cast<char>(0xE0 | cp >> 12);
    out[1] = static_cast<char>(0x80 | (cp >> 6 & 0x3F));
    out[2] = static_cast<char>(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = static_cast<char>(0xF0 | cp >> 18);
  out[1] = static_cast<char>(0x80 | (cp >> 12 & 0x3F));
  out[2] = static_cast<char>(0x80 | (cp >> 6 & 0x3F));
  out[3] = static_cast<char>(0x80 | (cp & 0x3F));
  return 4;
}

// Decodes the body of a string the scanner already validated, handing the
// UTF-8 result to `sink(const char*, size_t)` in pieces; stops early when the
// sink returns false and then returns false itself.
template <typename Sink>
bool decode_string(const char* p, const char* end, Sink&& sink) {
  while (p < end) {
    const auto* slash = static_cast<const char*>(std::memchr(p, '\\', end - p));
    if (slash == nullptr) return sink(p, static_cast<size_t>(end - p));
    if (slash != p && !sink(p, static_cast<size_t>(slash - p))) return false;
    char buf[4];
    size_t n = 1;
    switch (slash[1]) {
      case 'b':
        buf[0] = '\b';
        break;
      case 'f':
        buf[0] = '\f';
        break;
      case 'n':
        buf[0] = '\n';
        break;
      case 'r':
        buf[0] = '\r';
        break;
      case 't':
        buf[0] = '\t';
        break;
      case 'u': {
        auto cp = static_cast<uint32_t>(read_hex4(slash + 2));
        if (cp >= 0xD800 && cp <= 0xDBFF) {  // validated: a low surrogate follows
          const auto low = static_cast<uint32_t>(read_hex4(slash + 8));
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          p = slash + 12;
        } else {
          p = slash + 6;
        }
        if (!sink(buf, encode_utf8(cp, buf))) return false;
        continue;
      }
      default:  // '"', '\\', '/'
        buf[0] = slash[1];
        break;
    }
    if (!sink(buf, n)) return false;
    p = slash + 2;
  }
  return true;
}

// Compares a raw (still escaped) member name with an unescaped token.
inline bool name_equals(const char* begin, const char* end, bool escaped, std::string_view want) {
  const auto raw_size = static_cast<size_t>(end - begin);
  if (!escaped) return raw_size == want.size() && std::memcmp(begin, want.data(), raw_size) == 0;
  // Unescaping never lengthens a string, so a shorter raw name cannot match.
  if (raw_size < want.size()) return false;
  size_t matched = 0;
  const bool equal = decode_string(begin, end, [&](const char* data, size_t n) {
    if (n > want.size() - matched || std::memcmp(data, want.data() + matched, n) != 0) return false;
    matched += n;
    return true;
  });
  return equal && matched == want.size();
}

// An RFC 6901 array index: "0" or a decimal without a leading zero; -1 for
// any other token, which then matches no element.
int64_t array_index(std::string_view token) {
  if (token.empty() || token.size() > 18 || (token[0] == '0' && token.size() > 1)) return -1;
  int64_t value = 0;
  for (const char c : token) {
    if (!is_digit(c)) return -1;
    value = value * 10 + (c - '0');
  }
  return value;
}

enum class ValueKind : uint8_t { string, integer, real, true_literal, other };

struct KeyValue {
  const char* begin = nullptr;  // nullptr: not found
  const char* end = nullptr;
  ValueKind kind = ValueKind::other;
  bool escaped = false;  // a string with at least one backslash
};

// One pass over one line. `level` arguments say how many pointer tokens the
// path to the current value has matched, or -1 when it is off the path.
class Scanner {
 public:
  Scanner(std::string_view line, const std::vector<std::string>& tokens,
          std::string_view heartbeat_field)
      : p_(line.data()),
        end_(line.data() + line.size()),
        tokens_(tokens.data()),
        token_count_(static_cast<int>(tokens.size())),
        heartbeat_field_(heartbeat_field) {}

  // Validates the line; on success `top_is_object`, `key` and `heartbeat`
  // describe it.
  bool run() {
    skip_whitespace();
    if (p_ == end_) return fail();
    top_is_object = *p_ == '{';
    if (!parse_value(0, 0)) return false;
    skip_whitespace();
    return p_ == end_ || fail();
  }

  LineError error = LineError::not_json;
  bool top_is_object = false;
  bool heartbeat = false;
  KeyValue key;

 private:
  bool fail(LineError why = LineError::not_json) {
    error = why;
    return false;
  }

  void skip_whitespace() {
    while (p_ < end_ && whitespace_byte[static_cast<unsigned char>(*p_)]) ++p_;
  }

  bool parse_value(int depth, int level) {
    if (p_ == end_) return fail();
    switch (*p_) {
      case '"':
        kind_ = ValueKind::string;
        return scan_string(escaped_);
      case '{':
        kind_ = ValueKind::other;
        return parse_object(depth + 1, level);
      case '[':
        kind_ = ValueKind::other;
        return parse_array(depth + 1, level);
      case 't':
        kind_ = ValueKind::true_literal;
        return scan_literal("true", 4);
      case 'f':
        kind_ = ValueKind::other;
        return scan_literal("false", 5);
      case 'n':
        kind_ = ValueKind::other;
        return scan_literal("null", 4);
      default:
        return scan_number();
    }
  }

  bool scan_literal(const char* word, size_t size) {
    if (static_cast<size_t>(end_ - p_) < size || std::memcmp(p_, word, size) != 0) return fail();
    p_ += size;
    return true;
  }

  // '-'? ('0' | [1-9][0-9]*) ('.' [0-9]+)? ([eE] [+-]? [0-9]+)?
  // What may follow (',', '}', ']', whitespace, end) is the caller's check,
  // which is also what rejects "01".
  bool scan_number() {
    kind_ = ValueKind::integer;
    if (*p_ == '-' && ++p_ == end_) return fail();
    if (*p_ == '0') {
      ++p_;
    } else if (is_digit(*p_)) {
      do ++p_;
      while (p_ < end_ && is_digit(*p_));
    } else {
      return fail();
    }
    if (p_ < end_ && *p_ == '.') {
      kind_ = ValueKind::real;
      if (++p_ == end_ || !is_digit(*p_)) return fail();
      do ++p_;
      while (p_ < end_ && is_digit(*p_));
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      kind_ = ValueKind::real;
      if (++p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ == end_ || !is_digit(*p_)) return fail();
      do ++p_;
      while (p_ < end_ && is_digit(*p_));
    }
    return true;
  }

  // At the opening quote; leaves p_ after the closing one.
  bool scan_string(bool& escaped) {
    escaped = false;
    ++p_;
    for (;;) {
      p_ = skip_plain(p_, end_);
      if (p_ == end_) return fail();
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        ++p_;
        return true;
      }
      if (c == '\\') {
        escaped = true;
        if (!scan_escape()) return false;
      } else if (c < 0x20) {
        return fail();
      } else if (!scan_utf8()) {
        return false;
      }
    }
  }

  bool scan_escape() {
    if (end_ - p_ < 2) return fail();
    switch (p_[1]) {
      case '"':
      case '\\':
      case '/':
      case 'b':
      case 'f':
      case 'n':
      case 'r':
      case 't':
        p_ += 2;
        return true;
      case 'u':
        break;
      default:
        return fail();
    }
    if (end_ - p_ < 6) return fail();
    const int32_t cp = read_hex4(p_ + 2);
    if (cp < 0 || (cp >= 0xDC00 && cp <= 0xDFFF)) return fail();  // lone low surrogate
    p_ += 6;
    if (cp >= 0xD800 && cp <= 0xDBFF) {  // a high surrogate needs its low half
      if (end_ - p_ < 6 || p_[0] != '\\' || p_[1] != 'u') return fail();
      const int32_t low = read_hex4(p_ + 2);
      if (low < 0xDC00 || low > 0xDFFF) return fail();
      p_ += 6;
    }
    return true;
  }

  // One multi-byte UTF-8 sequence (RFC 3629 table 2): no overlong forms, no
  // UTF-16 surrogates, nothing above U+10FFFF.
  bool scan_utf8() {
    const auto* s = reinterpret_cast<const unsigned char*>(p_);
    const auto left = end_ - p_;
    const unsigned char c = s[0];
    auto cont = [&](int i, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
      return i < left && s[i] >= lo && s[i] <= hi;
    };
    int size = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      size = cont(1) ? 2 : 0;
    } else if (c == 0xE0) {
      size = cont(1, 0xA0) && cont(2) ? 3 : 0;
    } else if (c == 0xED) {
      size = cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
    } else if (c >= 0xE1 && c <= 0xEF) {
      size = cont(1) && cont(2) ? 3 : 0;
    } else if (c == 0xF0) {
      size = cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
    } else if (c >= 0xF1 && c <= 0xF3) {
      size = cont(1) && cont(2) && cont(3) ? 4 : 0;
    } else if (c == 0xF4) {
      size = cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
    }
    if (size == 0) return fail();
    p_ += size;
    return true;
  }

  bool parse_object(int depth, int level) {
    if (depth > RecordParser::max_depth) return fail(LineError::too_deep);
    ++p_;
    skip_whitespace();
    if (p_ < end_ && *p_ == '}') {
      ++p_;
      return true;
    }
    const bool top = depth == 1 && !heartbeat_field_.empty();
    for (;;) {
      if (p_ == end_ || *p_ != '"') return fail();
      const char* name = p_ + 1;
      bool name_escaped;
      if (!scan_string(name_escaped)) return false;
      const char* name_end = p_ - 1;
      skip_whitespace();
      if (p_ == end_ || *p_ != ':') return fail();
      ++p_;
      skip_whitespace();

      int child_level = -1;
      bool is_key = false;
      if (level >= 0 && name_equals(name, name_end, name_escaped, tokens_[level])) {
        key = KeyValue{};  // last wins: forget what an earlier duplicate held
        if (level + 1 == token_count_) {
          is_key = true;
        } else {
          child_level = level + 1;
        }
      }
      const bool is_heartbeat = top && name_equals(name, name_end, name_escaped, heartbeat_field_);
      const char* value = p_;
      if (!parse_value(depth, child_level)) return false;
      if (is_key) key = KeyValue{value, p_, kind_, escaped_};
      if (is_heartbeat) heartbeat = kind_ == ValueKind::true_literal;

      skip_whitespace();
      if (p_ == end_) return fail();
      if (*p_ == ',') {
        ++p_;
        skip_whitespace();
        continue;
      }
      if (*p_ != '}') return fail();
      ++p_;
      kind_ = ValueKind::other;
      return true;
    }
  }

  bool parse_array(int depth, int level) {
    if (depth > RecordParser::max_depth) return fail(LineError::too_deep);
    ++p_;
    skip_whitespace();
    if (p_ < end_ && *p_ == ']') {
      ++p_;
      return true;
    }
    const int64_t wanted = level >= 0 ? array_index(tokens_[level]) : -1;
    for (int64_t index = 0;; ++index) {
      int child_level = -1;
      bool is_key = false;
      if (index == wanted) {
        key = KeyValue{};
        if (level + 1 == token_count_) {
          is_key = true;
        } else {
          child_level = level + 1;
        }
      }
      const char* value = p_;
      if (!parse_value(depth, child_level)) return false;
      if (is_key) key = KeyValue{value, p_, kind_, escaped_};

      skip_whitespace();
      if (p_ == end_) return fail();
      if (*p_ == ',') {
        ++p_;
        skip_whitespace();
        continue;
      }
      if (*p_ != ']') return fail();
      ++p_;
      kind_ = ValueKind::other;
      return true;
    }
  }

  const char* p_;
  const char* const end_;
  const std::string* const tokens_;
  const int token_count_;
  const std::string_view heartbeat_field_;
  // What the last parse_value saw.
  ValueKind kind_ = ValueKind::other;
  bool escaped_ = false;
};

// A JSON integer (already validated) into int64.
std::optional<LineError> read_integer_key(const char* p, const char* end, int64_t& out) {
  const bool negative = *p == '-';
  if (negative) ++p;
  const uint64_t limit = negative ? uint64_t{1} << 63 : (uint64_t{1} << 63) - 1;
  uint64_t value = 0;
  for (; p < end; ++p) {
    const auto digit = static_cast<uint64_t>(*p - '0');
    if (value > (limit - digit) / 10) return LineError::key_overflow;
    value = value * 10 + digit;
  }
  out = static_cast<int64_t>(negative ? 0 - value : value);
  return std::nullopt;
}

// Whether a validated JSON number that from_chars found out of range is too
// large (true) or too small (false): the decimal position of its first
// significant digit plus its exponent is positive only for large magnitudes.
bool number_overflows(const char* p, const char* end) {
  if (*p == '-') ++p;
  int64_t magnitude = 0;
  bool significant = false;
  bool fraction = false;
  for (; p < end && *p != 'e' && *p != 'E'; ++p) {
    if (*p == '.') {
      fraction = true;
    } else if (!significant && *p != '0') {
      significant = true;
      if (!fraction) ++magnitude;
    } else if (!significant && fraction) {
      --magnitude;
    } else if (significant && !fraction) {
      ++magnitude;
    }
  }
  if (p < end) {  // exponent, saturated far beyond any double's range
    ++p;
    const bool negative = *p == '-';
    if (*p == '-' || *p == '+') ++p;
    int64_t exponent = 0;
    for (; p < end; ++p) exponent = std::min<int64_t>(exponent * 10 + (*p - '0'), 1'000'000'000);
    magnitude += negative ? -exponent : exponent;
  }
  return magnitude > 0;
}

std::optional<LineError> read_number_key(const char* p, const char* end, double& out) {
  const auto result = std::from_chars(p, end, out);
  if (result.ec == std::errc::result_out_of_range) {
    if (number_overflows(p, end)) return LineError::key_overflow;
    out = 0.0;  // underflow: closer to zero than any double
    return std::nullopt;
  }
  if (result.ec != std::errc() || result.ptr != end || !std::isfinite(out)) {
    return LineError::key_overflow;
  }
  return std::nullopt;
}

std::optional<LineError> read_rfc3339_key(const KeyValue& value, int64_t& out) {
  const char* body = value.begin + 1;
  const char* body_end = value.end - 1;
  std::optional<int64_t> nanos;
  if (!value.escaped) {
    nanos = parse_rfc3339_nanos(std::string_view(body, static_cast<size_t>(body_end - body)));
  } else {
    // Escapes in a timestamp are odd but legal JSON. A valid timestamp is at
    // most 35 bytes, so a small stack buffer suffices.
    char buf[64];
    size_t size = 0;
    const bool fits = decode_string(body, body_end, [&](const char* data, size_t n) {
      if (n > sizeof buf - size) return false;
      std::memcpy(buf + size, data, n);
      size += n;
      return true;
    });
    if (fits) nanos = parse_rfc3339_nanos(std::string_view(buf, size));
  }
  if (!nanos) return LineError::wrong_key_type;
  out = *nanos;
  return std::nullopt;
}

}  // namespace

std::string_view to_string(LineError error) {
  switch (error) {
    case LineError::not_json:
      return "not_json";
    case LineError::not_object:
      return "not_object";
    case LineError::missing_key:
      return "missing_key";
    case LineError::wrong_key_type:
      return "wrong_key_type";
    case LineError::key_overflow:
      return "key_overflow";
    case LineError::too_long:
      return "too_long";
    case LineError::too_deep:
      return "too_deep";
  }
  return "unknown";
}

// A path starting with '/' is an RFC 6901 pointer; anything else is one
// top-level member name, taken verbatim. A '~' in a pointer that is not
// followed by '0' or '1' is kept as written (config validation should reject
// such pointers; see valid_key_path).
RecordParser::RecordParser(KeySpec spec) : spec_(std::move(spec)) {
  const std::string_view path = spec_.path;
  if (path.empty() || path[0] != '/') {
    tokens_.emplace_back(path);
    return;
  }
  std::string token;
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      tokens_.push_back(std::move(token));
      token.clear();
    } else if (path[i] == '~' && i + 1 < path.size() && (path[i + 1] == '0' || path[i + 1] == '1')) {
      token.push_back(path[i + 1] == '0' ? '~' : '/');
      ++i;
    } else {
      token.push_back(path[i]);
    }
  }
}

bool RecordParser::valid_key_path(std::string_view path) {
  if (path.empty() || path[0] != '/') return true;
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '~' && (i + 1 == path.size() || (path[i + 1] != '0' && path[i + 1] != '1'))) {
      return false;
    }
  }
  return true;
}

std::optional<LineError> RecordParser::parse(std::string_view line, ParsedRecord& out) const {
  if (line.size() > std::numeric_limits<uint32_t>::max()) return LineError::too_long;
  Scanner scanner(line, tokens_, spec_.heartbeat_field);
  if (!scanner.run()) return scanner.error;
  if (!scanner.top_is_object) return LineError::not_object;
  const KeyValue& value = scanner.key;
  if (value.begin == nullptr) return LineError::missing_key;

  out.heartbeat = scanner.heartbeat;
  out.key_offset = static_cast<uint32_t>(value.begin - line.data());
  out.key_length = static_cast<uint32_t>(value.end - value.begin);
  out.key.text.clear();
  switch (spec_.type) {
    case KeyType::integer:
      if (value.kind != ValueKind::integer) return LineError::wrong_key_type;
      return read_integer_key(value.begin, value.end, out.key.ordinal);
    case KeyType::number: {
      if (value.kind != ValueKind::integer && value.kind != ValueKind::real) {
        return LineError::wrong_key_type;
      }
      double number = 0;
      if (auto error = read_number_key(value.begin, value.end, number)) return error;
      out.key.ordinal = Key::from_number(number).ordinal;
      return std::nullopt;
    }
    case KeyType::rfc3339:
      if (value.kind != ValueKind::string) return LineError::wrong_key_type;
      return read_rfc3339_key(value, out.key.ordinal);
    case KeyType::string:
      if (value.kind != ValueKind::string) return LineError::wrong_key_type;
      out.key.ordinal = 0;
      decode_string(value.begin + 1, value.end - 1, [&](const char* data, size_t n) {
        out.key.text.append(data, n);
        return true;
      });
      return std::nullopt;
  }
  return LineError::wrong_key_type;
}

}  // namespace chronomerge
