#include "record/key.h"

#include <bit>
#include <charconv>
#include <cmath>
#include <limits>

namespace chronomerge {

namespace {

constexpr int64_t nanos_per_second = 1'000'000'000;
constexpr int64_t seconds_per_day = 86'400;

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
// days_from_civil). Exact for any year a 4-digit field can hold; no timegm,
// no time zone database, no locale.
constexpr int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2 ? 1 : 0;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);                 // [0, 399]
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;  // [0, 365]
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;            // [0, 146096]
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

struct CivilDate {
  int64_t year;
  unsigned month;
  unsigned day;
};

// The inverse of days_from_civil.
constexpr CivilDate civil_from_days(int64_t z) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);                    // [0, 146096]
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;  // [0, 399]
  const int64_t y = static_cast<int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);  // [0, 365]
  const unsigned mp = (5 * doy + 2) / 153;                       // [0, 11]
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;               // [1, 31]
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;                  // [1, 12]
  return {y + (m <= 2 ? 1 : 0), m, d};
}

constexpr bool is_leap_year(int64_t y) {
  return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
}

constexpr unsigned days_in_month(int64_t y, unsigned m) {
  constexpr unsigned days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap_year(y) ? 29 : days[m - 1];
}

// Reads exactly `n` decimal digits at `pos`; false if any is not a digit.
bool read_digits(std::string_view text, size_t pos, size_t n, unsigned& value) {
  if (pos + n > text.size()) return false;
  value = 0;
  for (size_t i = 0; i < n; ++i) {
    const char c = text[pos + i];
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  return true;
}

// Floor division and modulo for the negative ordinals of pre-1970 times.
constexpr int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

void append_padded(std::string& out, uint64_t value, int width) {
  char buf[24];
  const auto res = std::to_chars(buf, buf + sizeof buf, value);
  for (auto len = static_cast<int>(res.ptr - buf); len < width; ++len) out.push_back('0');
  out.append(buf, res.ptr);
}

}  // namespace

std::optional<KeyType> parse_key_type(std::string_view name) {
  if (name == "integer") return KeyType::integer;
  if (name == "number") return KeyType::number;
  if (name == "rfc3339") return KeyType::rfc3339;
  if (name == "string") return KeyType::string;
  return std::nullopt;
}

std::string_view to_string(KeyType type) {
  switch (type) {
    case KeyType::integer:
      return "integer";
    case KeyType::number:
      return "number";
    case KeyType::rfc3339:
      return "rfc3339";
    case KeyType::string:
      return "string";
  }
  return "unknown";
}

// IEEE 754 doubles are sign-magnitude: for non-negative values the bit
// pattern read as a signed integer already grows with the value. Negative
// values have the sign bit set (so they read as negative integers) but their
// magnitude bits grow as the value falls; flipping those 63 bits reverses
// that. The transform is a bijection, so key_number_value can undo it.
Key Key::from_number(double value) {
  if (value == 0.0) value = 0.0;  // -0.0 == 0.0 must also hold for the keys
  auto bits = std::bit_cast<int64_t>(value);
  if (bits < 0) bits ^= std::numeric_limits<int64_t>::max();
  return Key{bits, {}};
}

double key_number_value(const Key& key) {
  int64_t bits = key.ordinal;
  if (bits < 0) bits ^= std::numeric_limits<int64_t>::max();
  return std::bit_cast<double>(bits);
}

double key_distance(KeyType type, const Key& earlier, const Key& later) {
  constexpr double max = std::numeric_limits<double>::max();
  switch (type) {
    case KeyType::integer:
    case KeyType::rfc3339: {
      // Subtract exactly when possible: epoch nanoseconds exceed 2^53, so
      // converting each side to double first would lose the small
      // differences reorder windows care about.
      int64_t diff = 0;
      if (!__builtin_sub_overflow(later.ordinal, earlier.ordinal, &diff)) {
        return static_cast<double>(diff);
      }
      return static_cast<double>(later.ordinal) - static_cast<double>(earlier.ordinal);
    }
    case KeyType::number: {
      const double diff = key_number_value(later) - key_number_value(earlier);
      if (std::isinf(diff)) return diff > 0 ? max : -max;
      return diff;
    }
    case KeyType::string:
      return 0;
  }
  return 0;
}

std::string key_to_string(KeyType type, const Key& key) {
  switch (type) {
    case KeyType::integer:
      return std::to_string(key.ordinal);
    case KeyType::number: {
      char buf[64];
      const auto res = std::to_chars(buf, buf + sizeof buf, key_number_value(key));
      return std::string(buf, res.ptr);
    }
    case KeyType::rfc3339: {
      // Floor division without forming seconds * 1e9, which overflows for
      // the earliest representable times.
      int64_t seconds = key.ordinal / nanos_per_second;
      int64_t remainder = key.ordinal % nanos_per_second;
      if (remainder < 0) {
        remainder += nanos_per_second;
        seconds -= 1;
      }
      const auto nanos = static_cast<uint64_t>(remainder);
      const int64_t days = floor_div(seconds, seconds_per_day);
      const auto second_of_day = static_cast<uint64_t>(seconds - days * seconds_per_day);
      const CivilDate date = civil_from_days(days);
      std::string out;
      out.reserve(32);
      if (date.year < 0) out.push_back('-');  // unreachable within int64 nanos
      append_padded(out, static_cast<uint64_t>(date.year < 0 ? -date.year : date.year), 4);
      out.push_back('-');
      append_padded(out, date.month, 2);
      out.push_back('-');
      append_padded(out, date.day, 2);
      out.push_back('T');
      append_padded(out, second_of_day / 3600, 2);
      out.push_back(':');
      append_padded(out, second_of_day / 60 % 60, 2);
      out.push_back(':');
      append_padded(out, second_of_day % 60, 2);
      if (nanos != 0) {
        out.push_back('.');
        append_padded(out, nanos, 9);
        while (out.back() == '0') out.pop_back();
      }
      out.push_back('Z');
      return out;
    }
    case KeyType::string:
      return key.text;
  }
  return {};
}

// Layout: YYYY-MM-DD (T|t| ) HH:MM:SS [.f{1,9}] (Z|z|(+|-)HH:MM)
std::optional<int64_t> parse_rfc3339_nanos(std::string_view text) {
  unsigned year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (!read_digits(text, 0, 4, year) || text.size() < 19 || text[4] != '-' ||
      !read_digits(text, 5, 2, month) || text[7] != '-' || !read_digits(text, 8, 2, day)) {
    return std::nullopt;
  }
  if (text[10] != 'T' && text[10] != 't' && text[10] != ' ') return std::nullopt;
  if (!read_digits(text, 11, 2, hour) || text[13] != ':' || !read_digits(text, 14, 2, minute) ||
      text[16] != ':' || !read_digits(text, 17, 2, second)) {
    return std::nullopt;
  }
  if (month < 1 || month > 12 || day < 1 || day > days_in_month(year, month)) return std::nullopt;
  // A leap second (:60) is accepted and simply counted, so it lands on the
  // first second of the next minute.
  if (hour > 23 || minute > 59 || second > 60) return std::nullopt;

  size_t pos = 19;
  int64_t fraction = 0;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    int digits = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      if (++digits > 9) return std::nullopt;
      fraction = fraction * 10 + (text[pos] - '0');
      ++pos;
    }
    if (digits == 0) return std::nullopt;
    for (; digits < 9; ++digits) fraction *= 10;
  }

  if (pos >= text.size()) return std::nullopt;  // the offset is mandatory
  int64_t offset_seconds = 0;
  const char zone = text[pos];
  if (zone == 'Z' || zone == 'z') {
    ++pos;
  } else if (zone == '+' || zone == '-') {
    unsigned offset_hour = 0, offset_minute = 0;
    if (!read_digits(text, pos + 1, 2, offset_hour) || pos + 3 >= text.size() ||
        text[pos + 3] != ':' || !read_digits(text, pos + 4, 2, offset_minute)) {
      return std::nullopt;
    }
    if (offset_hour > 23 || offset_minute > 59) return std::nullopt;
    offset_seconds = static_cast<int64_t>(offset_hour * 3600 + offset_minute * 60);
    if (zone == '-') offset_seconds = -offset_seconds;
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != text.size()) return std::nullopt;

  // Local time minus its offset is UTC. Seconds cannot overflow for 4-digit
  // years; nanoseconds can, which is the range check.
  int64_t seconds = days_from_civil(year, month, day) * seconds_per_day + hour * 3600 +
                    minute * 60 + second - offset_seconds;
  // Keep the multiplication in range near INT64_MIN, where seconds * 1e9
  // alone would overflow although adding the fraction brings it back.
  if (seconds < 0 && fraction > 0) {
    seconds += 1;
    fraction -= nanos_per_second;
  }
  int64_t nanos = 0;
  if (__builtin_mul_overflow(seconds, nanos_per_second, &nanos) ||
      __builtin_add_overflow(nanos, fraction, &nanos)) {
    return std::nullopt;
  }
  return nanos;
}

}  // namespace chronomerge
