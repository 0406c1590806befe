// Checks of the librdkafka settings a kafka feed or output may carry in
// "properties", made when the configuration is loaded.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace chronomerge {

// Why `name` may not be set in "properties" (chronomerge sets it itself,
// from a field of its own or because the delivery guarantee rests on it),
// or nullopt if it may. `feed`: for a kafka feed (a consumer); else for a
// kafka output (a producer).
std::optional<std::string_view> kafka_property_refused(std::string_view name, bool feed);

// librdkafka's own complaint about `name` = `value` (an unknown property,
// a value out of range), or nullopt if it takes it.
std::optional<std::string> kafka_property_error(const std::string& name, const std::string& value,
                                                bool feed);

}  // namespace chronomerge
