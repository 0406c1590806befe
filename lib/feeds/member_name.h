// MemberName: how a fleet's producer connection names the member it speaks
// for — a hello line, a value in its first record, or its peer's address.
//
// Pure functions on bytes; no I/O.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace chronomerge {

// A member name: the part after "<fleet>/", 1 to max_member_name bytes of
// A-Z a-z 0-9 _ . - (the name rule of configured feeds).
constexpr size_t max_member_name = 64;
bool valid_member_name(std::string_view name);

// A name, or why there is none (a short text for the log).
struct MemberName {
  std::string name;   // valid when error is empty
  std::string error;  // empty on success
  std::string token;  // a hello's "token", if it is a string; else empty
  bool ok() const { return error.empty(); }
};

// The hello line `{"feed": "bus-0042"}`, optionally with a "token" (other
// fields are ignored).
MemberName member_name_from_hello(std::string_view line);
// The string, or non-negative integer, at the JSON pointer `pointer` in a
// record (a JSON object on one line).
MemberName member_name_from_record(std::string_view line, const std::string& pointer);
// The IP address of a peer written "ADDR:PORT" or "[ADDR]:PORT", without the
// port; an IPv6 address's ':' (and a zone's '%') become '_'.
MemberName member_name_from_peer(std::string_view peer);

}  // namespace chronomerge
