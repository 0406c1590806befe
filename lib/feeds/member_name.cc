#include "feeds/member_name.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "log/log.h"
#include "record/json_depth.h"

namespace chronomerge {

namespace {

using Json = nlohmann::json;

constexpr size_t max_depth = 64;

bool is_name_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

MemberName failure(std::string error) {
  return MemberName{{}, std::move(error), {}};
}

MemberName checked(std::string name) {
  if (!valid_member_name(name)) {
    return failure(
        fmt::format("member name {} is not 1 to {} characters of letters, digits, '_', '.' and '-'",
                    log::excerpt(name), max_member_name));
  }
  return MemberName{std::move(name), {}, {}};
}

// Parses one line of JSON: nullopt-like discarded value when it is not
// JSON or nests too deep (nlohmann recurses when it destroys values).
Json parse_line(std::string_view line) {
  if (find_excess_nesting(line, max_depth)) return Json(Json::value_t::discarded);
  return Json::parse(line, nullptr, false);
}

}  // namespace

bool valid_member_name(std::string_view name) {
  return !name.empty() && name.size() <= max_member_name &&
         std::all_of(name.begin(), name.end(), is_name_char);
}

MemberName member_name_from_hello(std::string_view line) {
  const Json hello = parse_line(line);
  if (hello.is_discarded() || !hello.is_object()) {
    return failure(fmt::format("the hello is not a JSON object: {}", log::excerpt(line)));
  }
  auto feed = hello.find("feed");
  if (feed == hello.end() || !feed->is_string()) {
    return failure(fmt::format("the hello has no \"feed\" string: {}", log::excerpt(line)));
  }
  MemberName name = checked(feed->get<std::string>());
  auto token = hello.find("token");
  if (name.ok() && token != hello.end() && token->is_string())
    name.token = token->get<std::string>();
  return name;
}

MemberName member_name_from_record(std::string_view line, const std::string& pointer) {
  const Json record = parse_line(line);
  if (record.is_discarded() || !record.is_object()) {
    return failure(fmt::format("the first record is not a JSON object: {}", log::excerpt(line)));
  }
  Json::json_pointer where;
  try {
    where = Json::json_pointer(pointer);
  } catch (const Json::exception&) {
    return failure(fmt::format("invalid JSON pointer {}", pointer));
  }
  if (!record.contains(where)) {
    return failure(fmt::format("the first record has no {}: {}", pointer, log::excerpt(line)));
  }
  const Json& value = record.at(where);
  if (value.is_string()) return checked(value.get<std::string>());
  if (value.is_number_unsigned()) return checked(std::to_string(value.get<uint64_t>()));
  return failure(fmt::format("{} in the first record is not a string or a non-negative integer: {}",
                             pointer, log::excerpt(line)));
}

MemberName member_name_from_peer(std::string_view peer) {
  std::string_view address = peer;
  if (!address.empty() && address.front() == '[') {
    const size_t close = address.find(']');
    if (close == std::string_view::npos) return failure("unknown peer address");
    address = address.substr(1, close - 1);
  } else if (const size_t colon = address.rfind(':'); colon != std::string_view::npos) {
    address = address.substr(0, colon);
  }
  std::string name(address);
  std::replace(name.begin(), name.end(), ':', '_');
  std::replace(name.begin(), name.end(), '%', '_');
  if (name.empty()) return failure("unknown peer address");
  return checked(std::move(name));
}

}  // namespace chronomerge
