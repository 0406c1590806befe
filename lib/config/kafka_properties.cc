#include "config/kafka_properties.h"

#include <librdkafka/rdkafka.h>

#include <array>
#include <memory>
#include <utility>

namespace chronomerge {

std::optional<std::string_view> kafka_property_refused(std::string_view name, bool feed) {
  if (name == "bootstrap.servers" || name == "metadata.broker.list") {
    return "set by \"brokers\"";
  }
  constexpr std::array<std::pair<std::string_view, std::string_view>, 4> consumer = {{
      {"group.id", "set by \"group\""},
      {"enable.auto.offset.store",
       "chronomerge stores an offset only once every block output wrote its record"},
      {"enable.auto.commit", "chronomerge commits what it stored itself, at least once a second"},
      {"enable.partition.eof", "chronomerge needs it to tell an idle partition from a busy one"},
  }};
  constexpr std::array<std::pair<std::string_view, std::string_view>, 3> producer = {{
      {"enable.idempotence", "always true: retries must not reorder or duplicate the stream"},
      {"acks", "always \"all\": a record counts as written once every replica has it"},
      {"request.required.acks", "always \"all\" (see acks)"},
  }};
  if (feed) {
    for (const auto& [refused, why] : consumer) {
      if (name == refused) return why;
    }
  } else {
    for (const auto& [refused, why] : producer) {
      if (name == refused) return why;
    }
  }
  return std::nullopt;
}

std::optional<std::string> kafka_property_error(const std::string& name, const std::string& value,
                                                bool feed) {
  (void)feed;  // librdkafka knows one set of properties for both roles
  std::unique_ptr<rd_kafka_conf_t, decltype(&rd_kafka_conf_destroy)> conf(rd_kafka_conf_new(),
                                                                          rd_kafka_conf_destroy);
  char error[512] = "";
  if (rd_kafka_conf_set(conf.get(), name.c_str(), value.c_str(), error, sizeof error) !=
      RD_KAFKA_CONF_OK) {
    return std::string(error);
  }
  return std::nullopt;
}

}  // namespace chronomerge
