// How a fleet's producer names its member, on arbitrary bytes: the hello
// line, the first record (with a few JSON pointers), the peer's address.
//
// Checked: every call gives a name or an error, never both; a name
// follows the name rule; an error is one line without control characters
// (log excerpts escape them; other bytes pass as they are). Round
// trip: a name accepted from a hello is accepted again, unchanged, from
// the hello written back, and from a record that carries it at a pointer.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "feeds/member_name.h"

namespace {

using chronomerge::MemberName;

void fail(const char* what, std::string_view input, const MemberName& result) {
  std::fprintf(stderr, "%s\ninput: %.*s\nname: %s\nerror: %s\n", what,
               static_cast<int>(input.size()), input.data(), result.name.c_str(),
               result.error.c_str());
  std::abort();
}

void check(std::string_view input, const MemberName& result) {
  if (result.ok()) {
    if (!chronomerge::valid_member_name(result.name)) fail("invalid name accepted", input, result);
    return;
  }
  if (!result.name.empty()) fail("an error with a name", input, result);
  for (unsigned char c : result.error) {
    if (c < 0x20 || c == 0x7f) fail("control character in an error", input, result);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  const MemberName hello = chronomerge::member_name_from_hello(input);
  check(input, hello);
  if (hello.ok()) {
    const std::string again = "{\"feed\":\"" + hello.name + "\"}";
    const MemberName round = chronomerge::member_name_from_hello(again);
    if (!round.ok() || round.name != hello.name) fail("hello round trip", input, round);
    const std::string record = "{\"time\":1,\"v\":{\"id\":\"" + hello.name + "\"}}";
    const MemberName from_record = chronomerge::member_name_from_record(record, "/v/id");
    if (!from_record.ok() || from_record.name != hello.name) {
      fail("record round trip", input, from_record);
    }
  }
  for (const char* pointer : {"/vehicle", "/meta/id", "/a~1b/0", ""}) {
    check(input, chronomerge::member_name_from_record(input, pointer));
  }
  check(input, chronomerge::member_name_from_peer(input));
  return 0;
}
