#include "record/record_parser.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cassert>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <system_error>

#include "record/vector_scanner.h"

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
//
// Nesting deeper than max_depth stops the scan at once with too_deep, which
// also bounds the recursion; the rest of such a line is not examined.

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

inline bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// A string body up to its closing quote, eight bytes at a time. Returns the
// position just past the closing quote when the body is plain (see
// plain_byte); otherwise sets `*stop` to the first byte that is not plain (or
// to `end`) and returns nullptr. Each term of the mask flags the bytes of one
// class; the subtraction tricks may also flag bytes above a genuinely flagged
// one (borrows run upwards), but the lowest flag is always genuine, which is
// all countr_zero looks at. Telling the quote from the other stops by the
// mask, not by reading the byte again, keeps a load off the critical path.
inline const char* skip_plain_string(const char* p, const char* end, const char** stop) {
  if constexpr (std::endian::native == std::endian::little) {
    while (end - p >= 8) {
      uint64_t x;
      std::memcpy(&x, p, 8);
      const uint64_t quote = x ^ (ones * '"');
      const uint64_t backslash = x ^ (ones * '\\');
      const uint64_t quotes = (quote - ones) & ~quote & highs;
      const uint64_t others =
          (x | ((backslash - ones) & ~backslash) | ((x - ones * 0x20) & ~x)) & highs;
      const uint64_t mask = quotes | others;
      if (mask != 0) {
        const uint64_t lowest = mask & (0 - mask);
        const char* at = p + (std::countr_zero(mask) >> 3);
        if ((lowest & quotes) != 0) return at + 1;
        *stop = at;
        return nullptr;
      }
      p += 8;
    }
  }
  while (p < end && plain_byte[static_cast<unsigned char>(*p)]) ++p;
  if (p < end && *p == '"') return p + 1;
  *stop = p;
  return nullptr;
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

// One pass over one line. Every scanning function takes the cursor and
// returns where it stopped, or nullptr after recording the error: keeping the
// cursor in a register rather than in the object is worth a good third of
// the parse time. `level` arguments say how many pointer tokens the path to
// the current value has matched, or -1 when it is off the path.
class Scanner {
 public:
  Scanner(std::string_view line, const std::vector<std::string>& tokens,
          std::string_view heartbeat_field)
      : begin_(line.data()),
        end_(line.data() + line.size()),
        tokens_(tokens.data()),
        token_count_(static_cast<int>(tokens.size())),
        heartbeat_field_(heartbeat_field) {}

  // Validates the line; on success `result` describes it.
  bool run() {
    const char* p = skip_whitespace(begin_);
    if (p == end_) return fail() != nullptr;
    result.top_is_object = *p == '{';
    p = parse_value(p, 0, 0);
    if (p == nullptr) return false;
    return skip_whitespace(p) == end_ || fail() != nullptr;
  }

  LineError error = LineError::not_json;
  LineScan result;

 private:
  // Returns nullptr for the callers' convenience.
  [[gnu::cold]] std::nullptr_t fail(LineError why = LineError::not_json) {
    error = why;
    return nullptr;
  }

  [[gnu::always_inline]] const char* skip_whitespace(const char* p) const {
    // Compact records have no whitespace at all: one compare decides.
    while (p < end_ && static_cast<unsigned char>(*p) <= ' ' &&
           whitespace_byte[static_cast<unsigned char>(*p)]) {
      ++p;
    }
    return p;
  }

  // A plain loop: numbers in records are short, and an eight-byte variant
  // measured slower.
  [[gnu::always_inline]] const char* skip_digits(const char* p) const {
    while (p < end_ && is_digit(*p)) ++p;
    return p;
  }

  // The value at p (whitespace already skipped); sets kind_ (and escaped_).
  [[gnu::always_inline]] const char* parse_value(const char* p, int depth, int level) {
    if (p == end_) return fail();
    switch (*p) {
      case '"':
        kind_ = ValueKind::string;
        return scan_string(p, escaped_);
      case '{':
        kind_ = ValueKind::other;
        return parse_object(p, depth + 1, level);
      case '[':
        kind_ = ValueKind::other;
        return parse_array(p, depth + 1, level);
      case 't':
        kind_ = ValueKind::true_literal;
        return scan_literal(p, "true", 4);
      case 'f':
        kind_ = ValueKind::other;
        return scan_literal(p, "false", 5);
      case 'n':
        kind_ = ValueKind::other;
        return scan_literal(p, "null", 4);
      default:
        return scan_number(p);
    }
  }

  const char* scan_literal(const char* p, const char* word, size_t size) {
    if (static_cast<size_t>(end_ - p) < size || std::memcmp(p, word, size) != 0) return fail();
    return p + size;
  }

  // '-'? ('0' | [1-9][0-9]*) ('.' [0-9]+)? ([eE] [+-]? [0-9]+)?
  // What may follow (',', '}', ']', whitespace, end) is the caller's check,
  // which is also what rejects "01".
  [[gnu::always_inline]] const char* scan_number(const char* p) {
    kind_ = ValueKind::integer;
    if (*p == '-' && ++p == end_) return fail();
    if (*p == '0') {
      ++p;
    } else if (is_digit(*p)) {
      p = skip_digits(p + 1);
    } else {
      return fail();
    }
    if (p < end_ && (*p == '.' || *p == 'e' || *p == 'E')) return scan_number_tail(p);
    return p;
  }

  // The fraction and exponent, if any.
  const char* scan_number_tail(const char* p) {
    kind_ = ValueKind::real;
    if (*p == '.') {
      if (++p == end_ || !is_digit(*p)) return fail();
      p = skip_digits(p + 1);
    }
    if (p < end_ && (*p == 'e' || *p == 'E')) {
      if (++p < end_ && (*p == '+' || *p == '-')) ++p;
      if (p == end_ || !is_digit(*p)) return fail();
      p = skip_digits(p + 1);
    }
    return p;
  }

  // At the opening quote; returns the position after the closing one. The
  // common string (plain ASCII) never leaves this inline loop.
  [[gnu::always_inline]] const char* scan_string(const char* p, bool& escaped) {
    escaped = false;
    const char* stop = nullptr;
    if (const char* after = skip_plain_string(p + 1, end_, &stop)) return after;
    return scan_string_slow(stop, escaped);
  }

  // The rest of a string from its first escape, control byte or non-ASCII
  // byte (or the end of the line).
  const char* scan_string_slow(const char* p, bool& escaped) {
    for (;;) {
      if (p == end_) return fail();
      const auto c = static_cast<unsigned char>(*p);
      if (c == '\\') {
        escaped = true;
        p = scan_escape(p);
      } else if (c < 0x20) {
        return fail();
      } else {
        p = scan_utf8(p);
      }
      if (p == nullptr) return nullptr;
      if (const char* after = skip_plain_string(p, end_, &p)) return after;
    }
  }

  const char* scan_escape(const char* p) {
    if (end_ - p < 2) return fail();
    switch (p[1]) {
      case '"':
      case '\\':
      case '/':
      case 'b':
      case 'f':
      case 'n':
      case 'r':
      case 't':
        return p + 2;
      case 'u':
        break;
      default:
        return fail();
    }
    if (end_ - p < 6) return fail();
    const int32_t cp = read_hex4(p + 2);
    if (cp < 0 || (cp >= 0xDC00 && cp <= 0xDFFF)) return fail();  // lone low surrogate
    p += 6;
    if (cp >= 0xD800 && cp <= 0xDBFF) {  // a high surrogate needs its low half
      if (end_ - p < 6 || p[0] != '\\' || p[1] != 'u') return fail();
      const int32_t low = read_hex4(p + 2);
      if (low < 0xDC00 || low > 0xDFFF) return fail();
      p += 6;
    }
    return p;
  }

  // One multi-byte UTF-8 sequence (RFC 3629 table 2): no overlong forms, no
  // UTF-16 surrogates, nothing above U+10FFFF.
  const char* scan_utf8(const char* p) {
    const auto* s = reinterpret_cast<const unsigned char*>(p);
    const auto left = end_ - p;
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
    return p + size;
  }

  const char* parse_object(const char* p, int depth, int level) {
    if (depth > RecordParser::max_depth) return fail(LineError::too_deep);
    p = skip_whitespace(p + 1);
    if (p < end_ && *p == '}') return p + 1;
    const bool top = depth == 1 && !heartbeat_field_.empty();
    const std::string_view token = level >= 0 ? std::string_view(tokens_[level]) : "";
    for (;;) {
      if (p == end_ || *p != '"') return fail();
      const char* name = p + 1;
      bool name_escaped;
      p = scan_string(p, name_escaped);
      if (p == nullptr) return nullptr;
      const char* name_end = p - 1;
      p = skip_whitespace(p);
      if (p == end_ || *p != ':') return fail();
      p = skip_whitespace(p + 1);

      int child_level = -1;
      bool is_key = false;
      if (level >= 0 && name_equals(name, name_end, name_escaped, token)) {
        result.key = KeyValue{};  // last wins: forget what an earlier duplicate held
        if (level + 1 == token_count_) {
          is_key = true;
        } else {
          child_level = level + 1;
        }
      }
      const bool is_heartbeat = top && name_equals(name, name_end, name_escaped, heartbeat_field_);
      const char* value = p;
      p = parse_value(p, depth, child_level);
      if (p == nullptr) return nullptr;
      if (is_key) result.key = KeyValue{value, p, kind_, escaped_};
      if (is_heartbeat) result.heartbeat = kind_ == ValueKind::true_literal;

      p = skip_whitespace(p);
      if (p == end_) return fail();
      if (*p == ',') {
        p = skip_whitespace(p + 1);
        continue;
      }
      if (*p != '}') return fail();
      kind_ = ValueKind::other;
      return p + 1;
    }
  }

  const char* parse_array(const char* p, int depth, int level) {
    if (depth > RecordParser::max_depth) return fail(LineError::too_deep);
    p = skip_whitespace(p + 1);
    if (p < end_ && *p == ']') return p + 1;
    const int64_t wanted = level >= 0 ? array_index(tokens_[level]) : -1;
    for (int64_t index = 0;; ++index) {
      int child_level = -1;
      bool is_key = false;
      if (index == wanted) {
        result.key = KeyValue{};
        if (level + 1 == token_count_) {
          is_key = true;
        } else {
          child_level = level + 1;
        }
      }
      const char* value = p;
      p = parse_value(p, depth, child_level);
      if (p == nullptr) return nullptr;
      if (is_key) result.key = KeyValue{value, p, kind_, escaped_};

      p = skip_whitespace(p);
      if (p == end_) return fail();
      if (*p == ',') {
        p = skip_whitespace(p + 1);
        continue;
      }
      if (*p != ']') return fail();
      kind_ = ValueKind::other;
      return p + 1;
    }
  }

  const char* const begin_;
  const char* const end_;
  const std::string* const tokens_;
  const int token_count_;
  const std::string_view heartbeat_field_;
  // What the last parse_value saw.
  ValueKind kind_ = ValueKind::other;
  bool escaped_ = false;
};

// Eight ASCII digits, the bytes of x (loaded little-endian: the first
// digit is the lowest byte), as a number, in three multiplications rather
// than a chain of eight.
inline uint64_t eight_digits(uint64_t x) {
  x -= 0x3030303030303030ULL;
  x = x * 10 + (x >> 8);  // each byte pair: 10 * first + second, in its low byte
  constexpr uint64_t pairs = 0x000000FF000000FFULL;
  constexpr uint64_t high = 100 + (1000000ULL << 32);
  constexpr uint64_t low = 1 + (10000ULL << 32);
  return ((x & pairs) * high + (x >> 16 & pairs) * low) >> 32;
}
// The eight digits at p.
inline uint64_t eight_digits(const char* p) {
  uint64_t x;
  std::memcpy(&x, p, 8);
  return eight_digits(x);
}
// The last `count` (1-7) digits before `end`, which has at least eight
// digits before it: the eight bytes up to `end`, those before the last
// `count` made '0'.
inline uint64_t last_digits(const char* end, ptrdiff_t count) {
  uint64_t x;
  std::memcpy(&x, end - 8, 8);
  const uint64_t before = (uint64_t{1} << (8 * (8 - count))) - 1;  // low bytes come first
  return eight_digits((x & ~before) | (0x3030303030303030ULL & before));
}

// A JSON integer (already validated) into int64.
std::optional<LineError> read_integer_key(const char* p, const char* end, int64_t& out) {
  const bool negative = *p == '-';
  if (negative) ++p;
  uint64_t value = 0;
  if (end - p <= 18) {  // cannot overflow: the usual case, without checks
    if (std::endian::native == std::endian::little && end - p >= 8) {
      value = eight_digits(p);
      p += 8;
      if (end - p >= 8) {
        value = value * 100000000 + eight_digits(p);
        p += 8;
      }
      if (p < end) {
        static constexpr uint64_t scale[8] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000};
        value = value * scale[end - p] + last_digits(end, end - p);
        p = end;
      }
    }
    for (; p < end; ++p) value = value * 10 + static_cast<uint64_t>(*p - '0');
    out = static_cast<int64_t>(negative ? 0 - value : value);
    return std::nullopt;
  }
  const uint64_t limit = negative ? uint64_t{1} << 63 : (uint64_t{1} << 63) - 1;
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
RecordParser::RecordParser(KeySpec spec, SimdLevel level) : spec_(std::move(spec)), level_(level) {
  const std::string_view path = spec_.path;
  if (path.empty() || path[0] != '/') {
    tokens_.emplace_back(path);
  } else {
    split_pointer(path);
  }
  // The vector scanner compares names byte for byte with lines that hold
  // no escapes: a name it is to find must be one such a line can hold, and
  // no longer than it looks for.
  auto plain = [](std::string_view name) {
    return name.size() <= VectorScanner::max_name_bytes &&
           std::none_of(name.begin(), name.end(), [](char c) {
             return c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20;
           });
  };
  vector_ = level_ != SimdLevel::scalar && tokens_.size() == 1 && plain(tokens_[0]) &&
            plain(spec_.heartbeat_field);
}

void RecordParser::split_pointer(std::string_view path) {
  std::string token;
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      tokens_.push_back(std::move(token));
      token.clear();
    } else if (path[i] == '~' && i + 1 < path.size() &&
               (path[i + 1] == '0' || path[i + 1] == '1')) {
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

bool RecordParser::scans_runs() const {
  return vector_;
}

void RecordParser::scan_lines(std::string_view lines, std::vector<ScannedLine>& out) const {
  if (!scans_runs()) return;
  VectorScanner::scan_lines(level_, lines, tokens_[0], spec_.heartbeat_field, out);
}

std::optional<LineError> RecordParser::parse(std::string_view line, ParsedRecord& out) const {
  if (line.size() > std::numeric_limits<uint32_t>::max()) return LineError::too_long;
  Scanner scanner(line, tokens_, spec_.heartbeat_field);
  if (!scanner.run()) return scanner.error;
  return finish(line, scanner.result, out);
}

BlockRecord::BlockRecord(std::string_view bytes, const ParsedRecord& parsed)
    : ordinal(parsed.key.ordinal),
      data(bytes.data()),
      length(static_cast<uint32_t>(bytes.size())),
      key_offset(parsed.key_offset),
      key_length(parsed.key_length),
      heartbeat(parsed.heartbeat) {
  assert(parsed.key.text.empty() && parsed.origin == 0);
}

std::optional<LineError> RecordParser::finish(std::string_view line, const LineScan& scan,
                                              ParsedRecord& out) const {
  BlockRecord record;
  out.key.text.clear();
  std::optional<LineError> error = finish(line, scan, record, &out.key.text);
  out.key.ordinal = record.ordinal;
  out.key_offset = record.key_offset;
  out.key_length = record.key_length;
  out.heartbeat = record.heartbeat;
  return error;
}

namespace {

// finish_code()'s codes.
int code_of(LineError error) {
  return static_cast<int>(error) + 1;
}
int code_of(std::optional<LineError> error) {
  return error ? code_of(*error) : 0;
}

}  // namespace

int RecordParser::finish_code(std::string_view line, const LineScan& scan, BlockRecord& out,
                              std::string* text) const {
  if (!scan.top_is_object) return code_of(LineError::not_object);
  const KeyValue& value = scan.key;
  if (value.begin == nullptr) return code_of(LineError::missing_key);

  out.data = line.data();
  out.length = static_cast<uint32_t>(line.size());
  out.heartbeat = scan.heartbeat;
  out.key_offset = static_cast<uint32_t>(value.begin - line.data());
  out.key_length = static_cast<uint32_t>(value.end - value.begin);
  switch (spec_.type) {
    case KeyType::integer:
      if (value.kind != ValueKind::integer) return code_of(LineError::wrong_key_type);
      return code_of(read_integer_key(value.begin, value.end, out.ordinal));
    case KeyType::number: {
      if (value.kind != ValueKind::integer && value.kind != ValueKind::real) {
        return code_of(LineError::wrong_key_type);
      }
      double number = 0;
      if (auto error = read_number_key(value.begin, value.end, number)) return code_of(*error);
      out.ordinal = Key::from_number(number).ordinal;
      return 0;
    }
    case KeyType::rfc3339:
      if (value.kind != ValueKind::string) return code_of(LineError::wrong_key_type);
      return code_of(read_rfc3339_key(value, out.ordinal));
    case KeyType::string:
      if (value.kind != ValueKind::string) return code_of(LineError::wrong_key_type);
      assert(text != nullptr);
      out.ordinal = 0;
      text->clear();
      decode_string(value.begin + 1, value.end - 1, [&](const char* data, size_t n) {
        text->append(data, n);
        return true;
      });
      return 0;
  }
  return code_of(LineError::wrong_key_type);
}

}  // namespace chronomerge
