// The heartbeat record an output writes when the merge moved forward with
// no record to carry it: `{"<key>": K, "<field>": true}`, where the key is
// written at the key's path (a field name, or nested objects for a JSON
// pointer such as "/meta/ts") in its type's JSON form (an integer, a
// number, an RFC 3339 string in UTC, a string). A downstream chronomerge
// with `heartbeat_field` set to `field` reads it as a promise that nothing
// older follows.
//
// Pure.
#pragma once

#include <string>
#include <string_view>

#include "record/key.h"

namespace chronomerge {

// `key_path`: the configured key ("time" or "/meta/ts").
std::string heartbeat_record(std::string_view key_path, KeyType type, const Key& key,
                             std::string_view field);

}  // namespace chronomerge
