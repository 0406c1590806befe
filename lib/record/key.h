// Keys: the value a record is ordered by.
//
// Every key type except `string` maps to one signed 64-bit ordinal whose
// natural order is the key order: integers as they are, rfc3339 times as
// nanoseconds since the epoch (UTC), and doubles through an order-preserving
// bit transform. String keys compare bytewise on their decoded text. Keeping
// one representation lets the merger compare keys without knowing their type.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace chronomerge {

enum class KeyType { integer, number, rfc3339, string };

// "integer" -> KeyType::integer, ...; nullopt for anything else.
std::optional<KeyType> parse_key_type(std::string_view name);
std::string_view to_string(KeyType type);

struct Key {
  int64_t ordinal = 0;  // integer, number, rfc3339; 0 for string keys
  std::string text;     // decoded string keys; empty otherwise

  friend auto operator<=>(const Key&, const Key&) = default;
  friend bool operator==(const Key&, const Key&) = default;

  static Key from_integer(int64_t value) { return Key{value, {}}; }
  static Key from_number(double value);
  static Key from_string(std::string value) { return Key{0, std::move(value)}; }
};

// The double a number key was made from (exact inverse of from_number).
double key_number_value(const Key& key);

// How far `later` is past `earlier`, in key units (nanoseconds for rfc3339),
// saturating; 0 for string keys. Used by reorder windows.
double key_distance(KeyType type, const Key& earlier, const Key& later);

// Human-readable rendering for logs and metrics.
std::string key_to_string(KeyType type, const Key& key);

// Parses an RFC 3339 date-time ("2024-05-01T12:00:00.123Z", "...+02:00",
// 0-9 fraction digits, 'T' or 't' or ' ' separator, 'Z' or 'z') into
// nanoseconds since the Unix epoch, UTC. nullopt when malformed or outside
// the int64 nanosecond range (years 1678-2261).
std::optional<int64_t> parse_rfc3339_nanos(std::string_view text);

}  // namespace chronomerge
