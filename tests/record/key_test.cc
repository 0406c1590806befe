#include "record/key.h"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>

namespace chronomerge {
namespace {

constexpr int64_t second = 1'000'000'000;

int64_t nanos(std::string_view text) {
  const auto parsed = parse_rfc3339_nanos(text);
  REQUIRE_MESSAGE(parsed.has_value(), text);
  return *parsed;
}

TEST_CASE("key types have names") {
  SUBCASE("every type round-trips through its name") {
    for (const auto type : {KeyType::integer, KeyType::number, KeyType::rfc3339, KeyType::string}) {
      CHECK(parse_key_type(to_string(type)) == type);
    }
  }
  SUBCASE("the names are the config spellings") {
    CHECK(to_string(KeyType::integer) == "integer");
    CHECK(to_string(KeyType::number) == "number");
    CHECK(to_string(KeyType::rfc3339) == "rfc3339");
    CHECK(to_string(KeyType::string) == "string");
  }
  SUBCASE("unknown or differently cased names are rejected") {
    CHECK_FALSE(parse_key_type("Integer").has_value());
    CHECK_FALSE(parse_key_type("int").has_value());
    CHECK_FALSE(parse_key_type("").has_value());
  }
}

TEST_CASE("number keys preserve numeric order") {
  SUBCASE("ordinals compare like the doubles they came from") {
    const double values[] = {-std::numeric_limits<double>::infinity(),
                             -std::numeric_limits<double>::max(),
                             -1e300,
                             -2.5,
                             -1.0,
                             -std::numeric_limits<double>::denorm_min(),
                             0.0,
                             std::numeric_limits<double>::denorm_min(),
                             std::numeric_limits<double>::min(),
                             1e-300,
                             1.0,
                             1.5,
                             1e300,
                             std::numeric_limits<double>::max(),
                             std::numeric_limits<double>::infinity()};
    for (size_t i = 0; i + 1 < std::size(values); ++i) {
      CAPTURE(values[i]);
      CHECK(Key::from_number(values[i]) < Key::from_number(values[i + 1]));
    }
  }
  SUBCASE("negative zero is the same key as zero") {
    CHECK(Key::from_number(-0.0) == Key::from_number(0.0));
    CHECK(Key::from_number(0.0).ordinal == 0);
    CHECK_FALSE(std::signbit(key_number_value(Key::from_number(-0.0))));
  }
  SUBCASE("key_number_value is the exact inverse") {
    for (const double v : {0.0, 1.0, -1.0, 0.1, -0.1, 1e-300, -1e300, 52.37321, -4.89012,
                           std::numeric_limits<double>::denorm_min()}) {
      CHECK(key_number_value(Key::from_number(v)) == v);
    }
  }
  SUBCASE("random pairs order like their doubles") {
    std::mt19937_64 rng(42);
    std::uniform_real_distribution<double> mantissa(-1.0, 1.0);
    std::uniform_int_distribution<int> exponent(-300, 300);
    for (int i = 0; i < 10000; ++i) {
      const double a = std::ldexp(mantissa(rng), exponent(rng));
      const double b = std::ldexp(mantissa(rng), exponent(rng));
      CAPTURE(a);
      CAPTURE(b);
      CHECK((a < b) == (Key::from_number(a) < Key::from_number(b)));
      CHECK(key_number_value(Key::from_number(a)) == a);
    }
  }
}

TEST_CASE("key distance") {
  SUBCASE("integer keys subtract exactly even beyond 2^53") {
    const Key a = Key::from_integer(1'700'000'000'000'000'001);
    const Key b = Key::from_integer(1'700'000'000'000'000'002);
    CHECK(key_distance(KeyType::integer, a, b) == 1.0);
    CHECK(key_distance(KeyType::integer, b, a) == -1.0);
  }
  SUBCASE("integer keys at opposite extremes do not overflow") {
    const Key lo = Key::from_integer(std::numeric_limits<int64_t>::min());
    const Key hi = Key::from_integer(std::numeric_limits<int64_t>::max());
    CHECK(key_distance(KeyType::integer, lo, hi) == doctest::Approx(18446744073709551615.0));
  }
  SUBCASE("rfc3339 keys measure nanoseconds") {
    CHECK(key_distance(KeyType::rfc3339, Key::from_integer(nanos("2024-05-01T12:00:00Z")),
                       Key::from_integer(nanos("2024-05-01T12:00:01.5Z"))) == 1.5e9);
  }
  SUBCASE("number keys use the real doubles") {
    CHECK(key_distance(KeyType::number, Key::from_number(-1.5), Key::from_number(2.0)) == 3.5);
    CHECK(key_distance(KeyType::number, Key::from_number(0.25), Key::from_number(0.5)) == 0.25);
  }
  SUBCASE("number keys saturate instead of reaching infinity") {
    const double max = std::numeric_limits<double>::max();
    CHECK(key_distance(KeyType::number, Key::from_number(-max), Key::from_number(max)) == max);
  }
  SUBCASE("string keys have no distance") {
    CHECK(key_distance(KeyType::string, Key::from_string("a"), Key::from_string("z")) == 0.0);
  }
}

TEST_CASE("keys render for logs") {
  SUBCASE("integers in decimal") {
    CHECK(key_to_string(KeyType::integer, Key::from_integer(-42)) == "-42");
    CHECK(key_to_string(KeyType::integer, Key::from_integer(std::numeric_limits<int64_t>::min())) ==
          "-9223372036854775808");
  }
  SUBCASE("numbers in their shortest round-trip form") {
    CHECK(key_to_string(KeyType::number, Key::from_number(0.1)) == "0.1");
    CHECK(key_to_string(KeyType::number, Key::from_number(-2.5)) == "-2.5");
    CHECK(key_to_string(KeyType::number, Key::from_number(1e300)) == "1e+300");
    CHECK(key_to_string(KeyType::number, Key::from_number(-0.0)) == "0");
  }
  SUBCASE("rfc3339 times in UTC with the fraction trimmed") {
    CHECK(key_to_string(KeyType::rfc3339, Key::from_integer(0)) == "1970-01-01T00:00:00Z");
    CHECK(key_to_string(KeyType::rfc3339, Key::from_integer(nanos("2024-05-01T12:00:00.120Z"))) ==
          "2024-05-01T12:00:00.12Z");
    CHECK(key_to_string(KeyType::rfc3339,
                        Key::from_integer(nanos("2024-05-01T14:00:00.000000001+02:00"))) ==
          "2024-05-01T12:00:00.000000001Z");
  }
  SUBCASE("rfc3339 times before the epoch") {
    CHECK(key_to_string(KeyType::rfc3339, Key::from_integer(-1)) ==
          "1969-12-31T23:59:59.999999999Z");
    CHECK(key_to_string(KeyType::rfc3339, Key::from_integer(std::numeric_limits<int64_t>::min())) ==
          "1677-09-21T00:12:43.145224192Z");
    CHECK(key_to_string(KeyType::rfc3339, Key::from_integer(std::numeric_limits<int64_t>::max())) ==
          "2262-04-11T23:47:16.854775807Z");
  }
  SUBCASE("rendering and parsing round-trip") {
    std::mt19937_64 rng(7);
    for (int i = 0; i < 10000; ++i) {
      const auto ordinal = static_cast<int64_t>(rng());
      CHECK(nanos(key_to_string(KeyType::rfc3339, Key::from_integer(ordinal))) == ordinal);
    }
  }
  SUBCASE("strings as their text") {
    CHECK(key_to_string(KeyType::string, Key::from_string("bus-42")) == "bus-42");
  }
}

TEST_CASE("rfc3339 parsing") {
  SUBCASE("the epoch is zero") {
    CHECK(nanos("1970-01-01T00:00:00Z") == 0);
  }
  SUBCASE("a known instant matches its Unix time") {
    CHECK(nanos("2024-05-01T12:00:00Z") == 1'714'564'800 * second);
    CHECK(nanos("2000-03-01T00:00:00Z") == 951'868'800 * second);
  }
  SUBCASE("an offset is subtracted to reach UTC") {
    CHECK(nanos("2024-05-01T12:00:00+02:00") == nanos("2024-05-01T12:00:00Z") - 2 * 3600 * second);
    CHECK(nanos("2024-05-01T12:00:00-05:30") ==
          nanos("2024-05-01T12:00:00Z") + (5 * 3600 + 30 * 60) * second);
    CHECK(nanos("2024-05-01T00:30:00+01:00") == nanos("2024-04-30T23:30:00Z"));
    CHECK(nanos("2024-05-01T12:00:00-00:00") == nanos("2024-05-01T12:00:00Z"));
  }
  SUBCASE("lowercase t and z and a space separator are accepted") {
    CHECK(nanos("2024-05-01t12:00:00z") == nanos("2024-05-01T12:00:00Z"));
    CHECK(nanos("2024-05-01 12:00:00Z") == nanos("2024-05-01T12:00:00Z"));
  }
  SUBCASE("one to nine fraction digits scale to nanoseconds") {
    const int64_t base = nanos("2024-05-01T12:00:00Z");
    CHECK(nanos("2024-05-01T12:00:00.1Z") == base + 100'000'000);
    CHECK(nanos("2024-05-01T12:00:00.12Z") == base + 120'000'000);
    CHECK(nanos("2024-05-01T12:00:00.123Z") == base + 123'000'000);
    CHECK(nanos("2024-05-01T12:00:00.1234Z") == base + 123'400'000);
    CHECK(nanos("2024-05-01T12:00:00.12345Z") == base + 123'450'000);
    CHECK(nanos("2024-05-01T12:00:00.123456Z") == base + 123'456'000);
    CHECK(nanos("2024-05-01T12:00:00.1234567Z") == base + 123'456'700);
    CHECK(nanos("2024-05-01T12:00:00.12345678Z") == base + 123'456'780);
    CHECK(nanos("2024-05-01T12:00:00.123456789Z") == base + 123'456'789);
    CHECK(nanos("2024-05-01T12:00:00.000000000Z") == base);
  }
  SUBCASE("a dot without digits or more than nine digits is rejected") {
    CHECK_FALSE(parse_rfc3339_nanos("2024-05-01T12:00:00.Z"));
    CHECK_FALSE(parse_rfc3339_nanos("2024-05-01T12:00:00.1234567890Z"));
  }
  SUBCASE("February 29 exists only in leap years") {
    CHECK(nanos("2024-02-29T00:00:00Z") == nanos("2024-03-01T00:00:00Z") - 86400 * second);
    CHECK(parse_rfc3339_nanos("2000-02-29T00:00:00Z"));
    CHECK_FALSE(parse_rfc3339_nanos("2023-02-29T00:00:00Z"));
    CHECK_FALSE(parse_rfc3339_nanos("2100-02-29T00:00:00Z"));
    CHECK_FALSE(parse_rfc3339_nanos("2024-02-30T00:00:00Z"));
  }
  SUBCASE("months and days out of range are rejected") {
    CHECK_FALSE(parse_rfc3339_nanos("2024-00-10T00:00:00Z"));
    CHECK_FALSE(parse_rfc3339_nanos("2024-13-10T00:00:00Z"));
    CHECK_FALSE(parse_rfc3339_nanos("2024-04-31T00:00:00Z"));
    CHECK_FALSE(parse_rfc3339_nanos("2024-01-00T00:00:00Z"));
    CHECK_FALSE(parse_rfc3339_nanos("2024-01-32T00:00:00Z"));
    CHECK(parse_rfc3339_nanos("2024-12-31T00:00:00Z"));
  }
  SUBCASE("times out of range are rejected") {
    CHECK_FALSE(parse_rfc3339_nanos("2024-05-01T24:00:00Z"));
    CHECK_FALSE(parse_rfc3339_nanos("2024-05-01T12:60:00Z"));
    CHECK_FALSE(parse_rfc3339_nanos("2024-05-01T12:00:61Z"));
    CHECK_FALSE(parse_rfc3339_nanos("2024-05-01T12:00:00+24:00"));
    CHECK_FALSE(parse_rfc3339_nanos("2024-05-01T12:00:00+01:60"));
  }
  SUBCASE("a leap second counts as the next second") {
    CHECK(nanos("2016-12-31T23:59:60Z") == nanos("2017-01-01T00:00:00Z"));
  }
  SUBCASE("malformed layouts are rejected") {
    for (const char* text :
         {"", "2024-05-01", "2024-05-01T12:00:00", "2024-05-01T12:00Z", "2024-5-01T12:00:00Z",
          "2024-05-01X12:00:00Z", "2024/05/01T12:00:00Z", "2024-05-01T12:00:00+0200",
          "2024-05-01T12:00:00+02", "2024-05-01T12:00:00Zjunk", "2024-05-01T12:00:00 Z",
          "+2024-05-01T12:00:00Z", "2O24-05-01T12:00:00Z", "2024-05-01T1a:00:00Z",
          "2024-05-01T12:00:00.1a2Z"}) {
      CAPTURE(text);
      CHECK_FALSE(parse_rfc3339_nanos(text));
    }
  }
  SUBCASE("the int64 nanosecond range ends in 1677 and 2262") {
    CHECK(nanos("2262-04-11T23:47:16.854775807Z") == std::numeric_limits<int64_t>::max());
    CHECK_FALSE(parse_rfc3339_nanos("2262-04-11T23:47:16.854775808Z"));
    CHECK(nanos("1677-09-21T00:12:43.145224192Z") == std::numeric_limits<int64_t>::min());
    CHECK_FALSE(parse_rfc3339_nanos("1677-09-21T00:12:43.145224191Z"));
    CHECK_FALSE(parse_rfc3339_nanos("9999-12-31T23:59:59Z"));
    CHECK_FALSE(parse_rfc3339_nanos("0000-01-01T00:00:00Z"));
  }
  SUBCASE("an offset can bring a time back into range") {
    CHECK(nanos("2262-04-12T00:47:16.854775807+01:00") == std::numeric_limits<int64_t>::max());
  }
}

}  // namespace
}  // namespace chronomerge
