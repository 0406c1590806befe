#include "output/heartbeat_record.h"

#include <vector>

#include "record/json_string.h"

namespace chronomerge {

namespace {

// The names along the key's path: one for a field, the unescaped tokens
// of a JSON pointer.
std::vector<std::string> path_names(std::string_view key_path) {
  if (key_path.empty() || key_path[0] != '/') return {std::string(key_path)};
  std::vector<std::string> names;
  std::string name;
  for (size_t i = 1; i <= key_path.size(); ++i) {
    if (i == key_path.size() || key_path[i] == '/') {
      names.push_back(std::move(name));
      name.clear();
    } else if (key_path[i] == '~' && i + 1 < key_path.size()) {
      name += key_path[++i] == '1' ? '/' : '~';
    } else {
      name += key_path[i];
    }
  }
  return names;
}

}  // namespace

std::string heartbeat_record(std::string_view key_path, KeyType type, const Key& key,
                             std::string_view field) {
  const std::vector<std::string> names = path_names(key_path);
  std::string out;
  for (const std::string& name : names) {
    out += '{';
    append_json_string(out, name);
    out += ':';
  }
  if (type == KeyType::integer || type == KeyType::number) {
    out += key_to_string(type, key);
  } else {
    append_json_string(out, key_to_string(type, key));
  }
  for (size_t i = 1; i < names.size(); ++i) out += '}';
  out += ',';
  append_json_string(out, field);
  out += ":true}";
  return out;
}

}  // namespace chronomerge
