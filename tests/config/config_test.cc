#include "config/config.h"

#include "record/json_depth.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>

namespace chronomerge {
namespace {

const std::string kStdinFeed = R"({"name": "in", "type": "stdin"})";
const std::string kStdoutOutput = R"({"name": "out", "type": "stdout"})";

// A config with the given top-level fields, feeds and outputs; the defaults
// make a valid minimal config, so each case changes only what it tests.
std::string config_text(const std::string& top, const std::string& feeds = kStdinFeed,
                        const std::string& outputs = kStdoutOutput) {
  std::string text = "{";
  if (!top.empty()) text += top + ", ";
  text += "\"feeds\": [" + feeds + "], \"outputs\": [" + outputs + "]}";
  return text;
}

std::string feeds_text(const std::string& feeds) {
  return config_text("", feeds);
}
std::string outputs_text(const std::string& outputs) {
  return config_text("", kStdinFeed, outputs);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

Config parse_valid(const std::string& text) {
  ConfigResult result = parse_config(text);
  INFO(format_problems(result.problems));
  REQUIRE(result.problems.empty());
  REQUIRE(result.config.has_value());
  return *result.config;
}

struct BadConfig {
  const char* sentence;
  std::string text;
  std::string where;
  std::string message_fragment;
};

const std::vector<BadConfig>& bad_configs() {
  static const std::vector<BadConfig> cases = {
      // Syntax.
      {"reports a syntax error by line and column", "{\n  \"key\": \"time\",\n  \"feeds\": [}\n",
       "3:13", "syntax error"},
      {"reports a trailing comma at the closing brace", "{\"key\": \"time\",}", "1:16",
       "syntax error"},
      {"reports empty text as a syntax error at 1:1", "", "1:1", "unexpected end of input"},
      {"reports input cut short at the end of the last line", "{\n\"feeds\": [\n", "3:1",
       "unexpected end of input"},
      {"reports a number too large for a double as a syntax error", "{\n  \"rate\": 1e400}", "2:15",
       "number overflow"},
      {"rejects a document that is not an object", "[1, 2]", "", "expected an object"},
      {"rejects a field written twice in one object",
       feeds_text(R"({"name": "a", "type": "stdin", "name": "b"})"), "/feeds/0/name",
       "duplicate field"},
      // Unknown fields.
      {"rejects an unknown top-level field", config_text(R"("keys": "time")"), "/keys",
       "unknown field"},
      {"rejects an unknown feed field",
       feeds_text(R"({"name": "a", "type": "stdin", "colour": 1})"), "/feeds/0/colour",
       "unknown field"},
      {"rejects a field that belongs to another feed type",
       feeds_text(R"({"name": "a", "type": "file", "path": "/x", "listen": "127.0.0.1:1"})"),
       "/feeds/0/listen", "unknown field for type \"file\""},
      {"rejects max_clients on an output that is not a server",
       outputs_text(R"({"name": "o", "type": "file", "path": "/x", "max_clients": 3})"),
       "/outputs/0/max_clients", "unknown field for type \"file\""},
      {"rejects slow_client on a file output, which always blocks",
       outputs_text(R"({"name": "o", "type": "file", "path": "/x", "slow_client": "disconnect"})"),
       "/outputs/0/slow_client", "unknown field for type \"file\""},
      {"rejects stall_timeout_ms on stdout",
       outputs_text(R"({"name": "o", "type": "stdout", "stall_timeout_ms": 1000})"),
       "/outputs/0/stall_timeout_ms", "unknown field for type \"stdout\""},
      {"rejects resume on an output that is not a tcp or unix server",
       outputs_text(
           R"({"name": "o", "type": "http-listen", "listen": "127.0.0.1:0", "resume": true})"),
       "/outputs/0/resume", "unknown field for type \"http-listen\""},
      {"rejects hello_timeout_ms without resume",
       outputs_text(
           R"({"name": "o", "type": "tcp-listen", "listen": "127.0.0.1:0", "hello_timeout_ms": 10})"),
       "/outputs/0/hello_timeout_ms", "only applies with \"resume\": true"},
      {"rejects stall_timeout_ms on a network output left at its default, disconnect",
       outputs_text(
           R"({"name": "o", "type": "tcp-listen", "listen": "127.0.0.1:0", "stall_timeout_ms": 10})"),
       "/outputs/0/stall_timeout_ms", "the default for network clients"},
      {"rejects a negative retention", config_text(R"("retention_bytes": -1)"), "/retention_bytes",
       ""},
      {"rejects allow_origin with a line break",
       outputs_text(
           R"({"name": "o", "type": "http-listen", "listen": "127.0.0.1:0", "allow_origin": "a\r\nb"})"),
       "/outputs/0/allow_origin", "expected an origin"},
      {"rejects an unknown field in the deadletter section",
       config_text(R"("deadletter": {"path": "/d", "mode": 1})"), "/deadletter/mode",
       "unknown field"},
      // Types.
      {"rejects an integer written as a string", config_text(R"("idle_timeout_ms": "5000")"),
       "/idle_timeout_ms", "expected an integer, got \"5000\""},
      {"rejects a fraction where an integer is expected", config_text(R"("max_line_bytes": 100.5)"),
       "/max_line_bytes", "expected an integer"},
      {"rejects a string where a boolean is expected",
       feeds_text(R"({"name": "a", "type": "file", "path": "/x", "follow": "yes"})"),
       "/feeds/0/follow", "expected a boolean"},
      {"rejects an unknown key type", config_text(R"("key_type": "int")"), "/key_type",
       "expected one of \"integer\", \"number\", \"rfc3339\", \"string\", got \"int\""},
      {"rejects an unknown feed type", feeds_text(R"({"name": "a", "type": "socket"})"),
       "/feeds/0/type", "expected one of"},
      {"rejects a feed that is not an object", feeds_text("\"stdin\""), "/feeds/0",
       "expected an object"},
      {"rejects feeds that are not an array",
       R"({"feeds": {}, "outputs": [{"name": "o", "type": "stdout"}]})", "/feeds",
       "expected an array, got an object"},
      {"rejects a command element that is not a string",
       feeds_text(R"({"name": "a", "type": "exec", "command": ["/bin/cat", 3]})"),
       "/feeds/0/command/1", "expected a string"},
      {"rejects an invalid JSON pointer as key", config_text(R"("key": "/meta/~2")"), "/key",
       "not a valid JSON pointer"},
      // Ranges.
      {"rejects a high water mark of zero", config_text(R"("feed_high_water_mark": 0)"),
       "/feed_high_water_mark", "must be between 1 and 1073741824"},
      {"rejects a max_line_bytes below 64", config_text(R"("max_line_bytes": 10)"),
       "/max_line_bytes", "must be between 64 and 1073741824"},
      {"rejects an idle timeout of zero", config_text(R"("idle_timeout_ms": 0)"),
       "/idle_timeout_ms", "must be between 1 and 86400000"},
      {"rejects a negative drain timeout", config_text(R"("drain_timeout_ms": -1)"),
       "/drain_timeout_ms", "must be between 0 and 3600000"},
      {"rejects a simulate rate of zero",
       feeds_text(R"({"name": "a", "type": "simulate", "rate": 0})"), "/feeds/0/rate",
       "must be greater than 0"},
      {"rejects zero simulated vehicles",
       feeds_text(R"({"name": "a", "type": "simulate", "vehicles": 0})"), "/feeds/0/vehicles",
       "must be between 1 and 100000"},
      {"rejects a negative reorder window",
       feeds_text(R"({"name": "a", "type": "stdin", "reorder_window": -5})"),
       "/feeds/0/reorder_window", "must be at least 0"},
      {"rejects a unix socket path longer than sun_path",
       feeds_text(R"({"name": "a", "type": "unix-listen", "path": "/)" + std::string(107, 's') +
                  "\"}"),
       "/feeds/0/path", "must be at most 107 bytes"},
      {"rejects an empty exec command",
       feeds_text(R"({"name": "a", "type": "exec", "command": []})"), "/feeds/0/command",
       "must not be empty"},
      // Names.
      {"rejects a duplicate feed name",
       feeds_text(R"({"name": "bus-a", "type": "stdin"}, {"name": "bus-a", "type": "simulate"})"),
       "/feeds/1/name", "duplicate feed name \"bus-a\" (first at /feeds/0)"},
      {"rejects a duplicate output name",
       outputs_text(
           R"({"name": "o", "type": "stdout"}, {"name": "o", "type": "file", "path": "/x"})"),
       "/outputs/1/name", "duplicate output name \"o\" (first at /outputs/0)"},
      {"rejects a feed name with a space", feeds_text(R"({"name": "bus a", "type": "stdin"})"),
       "/feeds/0/name", "may contain only"},
      // Addresses.
      {"rejects an address without a port",
       feeds_text(R"({"name": "a", "type": "tcp-listen", "listen": "foo"})"), "/feeds/0/listen",
       "expected \"host:port\", got \"foo\""},
      {"rejects a port above 65535",
       feeds_text(R"({"name": "a", "type": "tcp-listen", "listen": "127.0.0.1:70000"})"),
       "/feeds/0/listen", "expected \"host:port\""},
      {"rejects a host name other than localhost",
       feeds_text(R"({"name": "a", "type": "tcp-connect", "connect": "example.com:80"})"),
       "/feeds/0/connect", "expected \"host:port\""},
      {"rejects an IPv6 address without brackets",
       outputs_text(R"({"name": "o", "type": "tcp-listen", "listen": "::1:7070"})"),
       "/outputs/0/listen", "expected \"host:port\""},
      {"rejects port 0 for a connecting feed",
       feeds_text(R"({"name": "a", "type": "tcp-connect", "connect": "10.0.0.1:0"})"),
       "/feeds/0/connect", "port must not be 0"},
      {"rejects a metrics section without its address", config_text(R"("metrics": {})"),
       "/metrics/listen", "required"},
      // Water marks.
      {"rejects a global low water mark not below the high one",
       config_text(R"("feed_high_water_mark": 1000, "feed_low_water_mark": 1000)"),
       "/feed_low_water_mark", "must be less than feed_high_water_mark (1000)"},
      {"rejects a feed low water mark above the global high one",
       feeds_text(R"({"name": "a", "type": "stdin", "low_water_mark": 2000000})"),
       "/feeds/0/low_water_mark", "must be less than the feed's high water mark (1048576)"},
      {"rejects a feed high water mark at the global low one",
       feeds_text(R"({"name": "a", "type": "stdin", "high_water_mark": 262144})"),
       "/feeds/0/high_water_mark", "must be greater than feed_low_water_mark (262144)"},
      // Required fields.
      {"requires a path for a file feed", feeds_text(R"({"name": "a", "type": "file"})"),
       "/feeds/0/path", "required for type \"file\""},
      {"requires a feed name", feeds_text(R"({"type": "stdin"})"), "/feeds/0/name", "required"},
      {"requires an output type", outputs_text(R"({"name": "o"})"), "/outputs/0/type", "required"},
      {"requires a listen address for a tcp-listen output",
       outputs_text(R"({"name": "o", "type": "tcp-listen"})"), "/outputs/0/listen",
       "required for type \"tcp-listen\""},
      {"requires at least one feed", config_text("", ""), "/feeds", "must not be empty"},
      {"requires the outputs section", R"({"feeds": [{"name": "in", "type": "stdin"}]})",
       "/outputs", "required"},
      // Cross-field rules.
      {"rejects late deadletter without a deadletter section",
       config_text(R"("late": "deadletter")"), "/late", "requires a deadletter section"},
      {"rejects a reorder window with string keys",
       config_text(R"("key_type": "string")",
                   R"({"name": "a", "type": "stdin", "reorder_window": 10})"),
       "/feeds/0/reorder_window", "not allowed with key_type \"string\""},
      {"rejects a global max_lag with string keys, whatever the field order",
       config_text(R"("max_lag": 5, "key_type": "string")"), "/max_lag",
       "not allowed with key_type \"string\""},
      {"rejects a feed's max_lag with string keys",
       config_text(R"("key_type": "string")", R"({"name": "a", "type": "stdin", "max_lag": 5})"),
       "/feeds/0/max_lag", "not allowed with key_type \"string\""},
      {"rejects a max_lag of zero", feeds_text(R"({"name": "a", "type": "stdin", "max_lag": 0})"),
       "/feeds/0/max_lag", "must be greater than 0"},
      {"rejects a feed's late deadletter without a deadletter section",
       feeds_text(R"({"name": "a", "type": "stdin", "late": "deadletter"})"), "/feeds/0/late",
       "requires a deadletter section"},
      {"rejects on_error on a server output",
       outputs_text(
           R"({"name": "o", "type": "tcp-listen", "listen": "127.0.0.1:1", "on_error": "skip"})"),
       "/outputs/0/on_error", "unknown field for type \"tcp-listen\""},
      {"rejects an unknown on_error policy",
       outputs_text(R"({"name": "o", "type": "file", "path": "/tmp/o", "on_error": "retry"})"),
       "/outputs/0/on_error", "expected one of"},
      {"rejects a dead-letter max_buffer of zero",
       config_text(R"("deadletter": {"path": "/tmp/d", "max_buffer": 0})"),
       "/deadletter/max_buffer", "must be"},
      {"rejects a heartbeat field that is the key itself",
       feeds_text(R"({"name": "a", "type": "stdin", "heartbeat_field": "time"})"),
       "/feeds/0/heartbeat_field", "must differ from the key"},
      {"rejects a stall timeout with slow_client disconnect",
       outputs_text(
           R"({"name": "o", "type": "tcp-listen", "listen": "127.0.0.1:1", "slow_client": "disconnect", "stall_timeout_ms": 5})"),
       "/outputs/0/stall_timeout_ms", "only applies with slow_client \"block\""},
      {"rejects a second stdin feed",
       feeds_text(R"({"name": "a", "type": "stdin"}, {"name": "b", "type": "stdin"})"),
       "/feeds/1/type", "only one stdin feed is allowed (first at /feeds/0)"},
      {"rejects a second stdout output",
       outputs_text(R"({"name": "a", "type": "stdout"}, {"name": "b", "type": "stdout"})"),
       "/outputs/1/type", "only one stdout output is allowed (first at /outputs/0)"},
      {"rejects the same listen address on a feed and an output",
       config_text("", R"({"name": "a", "type": "tcp-listen", "listen": "127.0.0.1:7070"})",
                   R"({"name": "o", "type": "tcp-listen", "listen": "127.0.0.1:7070"})"),
       "/outputs/0/listen", "address 127.0.0.1:7070 is already used by /feeds/0/listen"},
      {"rejects a specific address on a port the wildcard address already takes",
       feeds_text(R"({"name": "a", "type": "tcp-listen", "listen": "0.0.0.0:7001"},
                     {"name": "b", "type": "tcp-listen", "listen": "localhost:7001"})"),
       "/feeds/1/listen", "already used by /feeds/0/listen"},
      {"rejects metrics on an address an output listens on",
       config_text(R"("metrics": {"listen": "127.0.0.1:9464"})", kStdinFeed,
                   R"({"name": "o", "type": "tcp-listen", "listen": "127.0.0.1:9464"})"),
       "/outputs/0/listen", "already used by /metrics/listen"},
      {"rejects the same unix socket path twice",
       config_text("", R"({"name": "a", "type": "unix-listen", "path": "/run/x.sock"})",
                   R"({"name": "o", "type": "unix-listen", "path": "/run/x.sock"})"),
       "/outputs/0/path", "socket path \"/run/x.sock\" is already used by /feeds/0/path"},
      // Fleets.
      {"rejects a fleet on a feed type that does not listen",
       feeds_text(R"({"name": "a", "type": "tcp-connect", "connect": "127.0.0.1:1", "fleet": {}})"),
       "/feeds/0/fleet", "unknown field for type \"tcp-connect\""},
      {"rejects an unknown fleet field",
       feeds_text(
           R"({"name": "a", "type": "tcp-listen", "listen": "127.0.0.1:0", "fleet": {"size": 3}})"),
       "/feeds/0/fleet/size", "unknown field"},
      {"rejects a name_from that is neither hello, peer nor a pointer",
       feeds_text(
           R"({"name": "a", "type": "tcp-listen", "listen": "127.0.0.1:0", "fleet": {"name_from": "vehicle"}})"),
       "/feeds/0/fleet/name_from",
       "expected \"hello\", \"peer\", \"cert_cn\", \"cert_san\" or a JSON pointer"},
      {"rejects name_from peer on a unix socket",
       feeds_text(
           R"({"name": "a", "type": "unix-listen", "path": "/run/a.sock", "fleet": {"name_from": "peer"}})"),
       "/feeds/0/fleet/name_from", "needs a tcp-listen feed"},
      {"rejects ack without a hello",
       feeds_text(
           R"({"name": "a", "type": "tcp-listen", "listen": "127.0.0.1:0", "fleet": {"name_from": "/vehicle", "ack": true}})"),
       "/feeds/0/fleet/ack", "needs \"name_from\": \"hello\""},
      {"rejects max_members of zero",
       feeds_text(
           R"({"name": "a", "type": "tcp-listen", "listen": "127.0.0.1:0", "fleet": {"max_members": 0}})"),
       "/feeds/0/fleet/max_members", "must be between 1 and"},
      {"rejects a fleet in combine mode",
       config_text(R"("mode": "combine")",
                   R"({"name": "a", "type": "tcp-listen", "listen": "127.0.0.1:0", "fleet": {}})"),
       "/feeds/0/fleet", "not allowed with mode \"combine\""},
      {"checks a fleet's high-water mark against the member default low mark",
       feeds_text(
           R"({"name": "a", "type": "tcp-listen", "listen": "127.0.0.1:0", "high_water_mark": 8192, "fleet": {}})"),
       "/feeds/0/high_water_mark", "a fleet member's low water mark (16384)"},
      // TLS.
      {"rejects tls on a file output",
       outputs_text(R"({"name": "o", "type": "file", "path": "/tmp/o", "tls": {}})"),
       "/outputs/0/tls", "unknown field for type \"file\""},
      {"requires a certificate on a listener's tls",
       feeds_text(R"({"name": "a", "type": "tcp-listen", "listen": "127.0.0.1:0", "tls": {}})"),
       "/feeds/0/tls/cert", "required for a listener"},
      {"requires the key with the certificate",
       outputs_text(
           R"({"name": "o", "type": "tcp-listen", "listen": "127.0.0.1:0", "tls": {"cert": "/c.pem"}})"),
       "/outputs/0/tls/key", "\"cert\" and \"key\" go together"},
      {"requires a CA to check client certificates",
       feeds_text(
           R"({"name": "a", "type": "tcp-listen", "listen": "127.0.0.1:0", "tls": {"cert": "/c", "key": "/k", "client_auth": "require"}})"),
       "/feeds/0/tls/ca", "required with client_auth"},
      {"rejects server_name on a listener",
       feeds_text(
           R"({"name": "a", "type": "tcp-listen", "listen": "127.0.0.1:0", "tls": {"cert": "/c", "key": "/k", "server_name": "x"}})"),
       "/feeds/0/tls/server_name", "only for a tcp-connect feed"},
      {"rejects client_auth on a tcp-connect feed",
       feeds_text(
           R"({"name": "a", "type": "tcp-connect", "connect": "127.0.0.1:1", "tls": {"client_auth": "require"}})"),
       "/feeds/0/tls/client_auth", "only for a listener's TLS"},
      {"rejects a revocation list without its CA",
       feeds_text(
           R"({"name": "a", "type": "tcp-listen", "listen": "127.0.0.1:0", "tls": {"cert": "/c", "key": "/k", "crl": "/r"}})"),
       "/feeds/0/tls/crl", "needs \"ca\""},
      {"rejects tokens on an output without TLS",
       outputs_text(
           R"({"name": "o", "type": "tcp-listen", "listen": "127.0.0.1:0", "tokens_sha256": ["ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"]})"),
       "/outputs/0/tokens_sha256", "needs \"tls\""},
      {"rejects a token written in place of its hash",
       outputs_text(
           R"({"name": "o", "type": "tcp-listen", "listen": "127.0.0.1:0", "tls": {"cert": "/c", "key": "/k"}, "tokens_sha256": ["s3cret"]})"),
       "/outputs/0/tokens_sha256/0", "expected a SHA-256 hash of 64 hex digits"},
      {"rejects fleet tokens without hello naming",
       feeds_text(
           R"({"name": "a", "type": "tcp-listen", "listen": "127.0.0.1:0", "tls": {"cert": "/c", "key": "/k"}, "fleet": {"name_from": "peer", "tokens_sha256": ["ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"]}})"),
       "/feeds/0/fleet/tokens_sha256", "needs \"name_from\": \"hello\""},
      {"rejects TLS below 1.2",
       feeds_text(
           R"({"name": "a", "type": "tcp-connect", "connect": "127.0.0.1:1", "tls": {"min_version": "1.1"}})"),
       "/feeds/0/tls/min_version", "expected \"1.2\" or \"1.3\""},
      {"rejects cert_cn naming without required client certificates",
       feeds_text(
           R"({"name": "a", "type": "tcp-listen", "listen": "127.0.0.1:0", "tls": {"cert": "/c", "key": "/k"}, "fleet": {"name_from": "cert_cn"}})"),
       "/feeds/0/fleet/name_from", "needs \"tls\" with \"client_auth\": \"require\""},
      {"rejects cert_san naming without required client certificates",
       feeds_text(
           R"({"name": "a", "type": "tcp-listen", "listen": "127.0.0.1:0", "tls": {"cert": "/c", "key": "/k", "ca": "/a", "client_auth": "request"}, "fleet": {"name_from": "cert_san"}})"),
       "/feeds/0/fleet/name_from", "\"cert_san\" needs \"tls\" with \"client_auth\": \"require\""},
      {"rejects a kafka feed without partitions",
       feeds_text(R"({"name": "t", "type": "kafka", "brokers": "127.0.0.1:9092", "topic": "in"})"),
       "/feeds/0/partitions", "required for type \"kafka\""},
      {"rejects a partition listed twice",
       feeds_text(
           R"({"name": "t", "type": "kafka", "brokers": "b:9092", "topic": "in", "partitions": [0, 1, 0]})"),
       "/feeds/0/partitions/2", "partition 0 is listed twice"},
      {"rejects a property chronomerge sets itself",
       feeds_text(
           R"({"name": "t", "type": "kafka", "brokers": "b:9092", "topic": "in", "partitions": [0], "properties": {"enable.auto.offset.store": true}})"),
       "/feeds/0/properties/enable.auto.offset.store", "once every block output wrote"},
      {"rejects a property librdkafka does not know",
       feeds_text(
           R"({"name": "t", "type": "kafka", "brokers": "b:9092", "topic": "in", "partitions": [0], "properties": {"fetch.wait.max.mss": 5}})"),
       "/feeds/0/properties/fetch.wait.max.mss", "No such configuration property"},
      {"rejects acks on a kafka output",
       config_text(
           "", R"({"name": "a", "type": "stdin"})",
           R"({"name": "o", "type": "kafka", "brokers": "b:9092", "topic": "out", "properties": {"acks": "1"}})"),
       "/outputs/0/properties/acks", "always \"all\""},
      {"rejects key_unit for rfc3339 keys, which are times already",
       config_text(R"("key_type": "rfc3339", "key_unit": "ms")",
                   R"({"name": "a", "type": "stdin"})", R"({"name": "o", "type": "stdout"})"),
       "/key_unit", "rfc3339 keys are times already"},
      {"rejects sync on an output that is not a file",
       config_text("", R"({"name": "a", "type": "stdin"})",
                   R"({"name": "o", "type": "tcp-listen", "listen": "127.0.0.1:0", "sync": true})"),
       "/outputs/0/sync", "unknown field for type \"tcp-listen\""},
      {"rejects a kafka output key that is not a pointer",
       config_text(
           "", R"({"name": "a", "type": "stdin"})",
           R"({"name": "o", "type": "kafka", "brokers": "b:9092", "topic": "out", "key": "vehicle"})"),
       "/outputs/0/key", "expected a JSON pointer"},
      {"rejects a file feed that reads an output file",
       config_text("", R"({"name": "a", "type": "file", "path": "/var/out.ndjson"})",
                   R"({"name": "o", "type": "file", "path": "/var/out.ndjson"})"),
       "/feeds/0/path", "reads the file written by /outputs/0/path"},
  };
  return cases;
}

TEST_CASE("parse_config rejects a bad config at the place to fix") {
  for (const BadConfig& bad : bad_configs()) {
    SUBCASE(bad.sentence) {
      INFO("config: ", bad.text);
      const ConfigResult result = parse_config(bad.text);
      CHECK_FALSE(result.config.has_value());
      INFO("problems:\n", format_problems(result.problems));
      REQUIRE(result.problems.size() == 1);
      CHECK(result.problems[0].where == bad.where);
      CHECK(result.problems[0].message.find(bad.message_fragment) != std::string::npos);
    }
  }
}

TEST_CASE("a fleet feed") {
  SUBCASE("takes its defaults when the object is empty") {
    const ConfigResult result = parse_config(feeds_text(
        R"({"name": "buses", "type": "tcp-listen", "listen": "127.0.0.1:7001", "fleet": {}})"));
    INFO(format_problems(result.problems));
    REQUIRE(result.config);
    const FeedConfig& feed = result.config->feeds[0];
    REQUIRE(feed.fleet);
    CHECK(feed.fleet->name_from == FleetConfig::NameFrom::hello);
    CHECK_FALSE(feed.fleet->ack);
    CHECK(feed.fleet->max_members == 10000);
    CHECK(feed.fleet->max_bytes == 256u << 20);
    CHECK(feed.fleet->hello_timeout_ms == 5000);
    CHECK(feed.fleet->linger_ms == 60000);
    CHECK_FALSE(feed.fleet->member_metrics);
  }
  SUBCASE("reads every option") {
    const ConfigResult result = parse_config(feeds_text(
        R"({"name": "buses", "type": "tcp-listen", "listen": "127.0.0.1:7001", "fleet": {"name_from": "/meta/vehicle", "max_members": 20, "max_bytes": 65536, "hello_timeout_ms": 100, "linger_ms": 0, "member_metrics": true}})"));
    INFO(format_problems(result.problems));
    REQUIRE(result.config);
    const FleetConfig& fleet = *result.config->feeds[0].fleet;
    CHECK(fleet.name_from == FleetConfig::NameFrom::pointer);
    CHECK(fleet.name_pointer == "/meta/vehicle");
    CHECK(fleet.max_members == 20);
    CHECK(fleet.max_bytes == 65536);
    CHECK(fleet.hello_timeout_ms == 100);
    CHECK(fleet.linger_ms == 0);
    CHECK(fleet.member_metrics);
  }
  SUBCASE("takes peer naming and acknowledgements") {
    const ConfigResult peer = parse_config(feeds_text(
        R"({"name": "buses", "type": "tcp-listen", "listen": "127.0.0.1:7001", "fleet": {"name_from": "peer"}})"));
    REQUIRE(peer.config);
    CHECK(peer.config->feeds[0].fleet->name_from == FleetConfig::NameFrom::peer);
    const ConfigResult ack = parse_config(feeds_text(
        R"({"name": "buses", "type": "unix-listen", "path": "/run/b.sock", "fleet": {"ack": true}})"));
    REQUIRE(ack.config);
    CHECK(ack.config->feeds[0].fleet->ack);
  }
}

TEST_CASE("a kafka feed") {
  SUBCASE("is one feed per partition, in the order listed, sharing its settings") {
    const ConfigResult result = parse_config(feeds_text(
        R"({"name": "tele", "type": "kafka", "brokers": "127.0.0.1:9092", "topic": "telemetry", "partitions": [2, 0, 11], "start": "earliest", "properties": {"fetch.wait.max.ms": 5}})"));
    INFO(format_problems(result.problems));
    REQUIRE(result.config);
    const auto& feeds = result.config->feeds;
    REQUIRE(feeds.size() == 3);
    CHECK(feeds[0].name == "tele/2");
    CHECK(feeds[1].name == "tele/0");
    CHECK(feeds[2].name == "tele/11");
    for (const FeedConfig& feed : feeds) {
      CHECK(feed.type == FeedType::kafka);
      CHECK(feed.kafka_source == "tele");
      REQUIRE(feed.kafka);
      CHECK(feed.kafka->topic == "telemetry");
      CHECK(feed.kafka->start == KafkaConfig::Start::earliest);
      CHECK(feed.kafka->group == "tele");  // the default group: the feed's name
      CHECK(feed.kafka->partitions.empty());
      CHECK(feed.kafka->properties ==
            std::vector<std::pair<std::string, std::string>>{{"fetch.wait.max.ms", "5"}});
    }
    CHECK(feeds[2].kafka->partition == 11);
  }
  SUBCASE("reading \"all\" partitions stays one entry until they are listed") {
    const ConfigResult result = parse_config(feeds_text(
        R"({"name": "tele", "type": "kafka", "brokers": "b:9092", "topic": "t", "partitions": "all"})"));
    INFO(format_problems(result.problems));
    REQUIRE(result.config);
    REQUIRE(result.config->feeds.size() == 1);
    const FeedConfig& feed = result.config->feeds[0];
    CHECK(feed.name == "tele");
    CHECK(feed.kafka->all_partitions);
    const std::vector<FeedConfig> listed = expand_kafka_feed(feed, {0, 1, 2});
    REQUIRE(listed.size() == 3);
    CHECK(listed[2].name == "tele/2");
    CHECK(listed[2].kafka->partition == 2);
    CHECK_FALSE(listed[2].kafka->all_partitions);
  }
  SUBCASE("an output writes partition 0 unless told otherwise") {
    const ConfigResult result = parse_config(config_text(
        "", R"({"name": "a", "type": "stdin"})",
        R"({"name": "o", "type": "kafka", "brokers": "b:9092", "topic": "merged", "key": "/vehicle"})"));
    INFO(format_problems(result.problems));
    REQUIRE(result.config);
    const OutputConfig& output = result.config->outputs[0];
    REQUIRE(output.kafka);
    CHECK(output.kafka->partition == 0);
    CHECK(output.kafka->key_pointer == "/vehicle");
  }
}

TEST_CASE("the bad config table is large enough to cover the schema") {
  CHECK(bad_configs().size() >= 25);
}

// Regression: 200,000 nested arrays (a 400 KB file) crashed --check-config
// and, on SIGHUP, the running daemon: nlohmann/json copies and destroys
// values recursively and ran out of stack.
TEST_CASE("parse_config refuses nesting deeper than 64 levels") {
  const auto nested = [](size_t levels) {
    return std::string(levels, '[') + std::string(levels, ']');
  };

  SUBCASE("reports 200,000 levels at the bracket that opens level 65") {
    // The object is level 1, so the 64th '[' opens level 65: offset 5 + 63.
    const ConfigResult result = parse_config("{\"x\":" + nested(200'000) + "}");
    CHECK_FALSE(result.config.has_value());
    INFO("problems:\n", format_problems(result.problems));
    REQUIRE(result.problems.size() == 1);
    CHECK(result.problems[0].where == "1:69");
    CHECK(result.problems[0].message == "arrays and objects nested deeper than 64 levels");
  }

  SUBCASE("names the line and column of a deep value inside a valid config") {
    const std::string text =
        "{\n  \"feeds\": [{\"name\": \"a\", \"type\": \"file\",\n    \"path\": " + nested(200'000) +
        "}],\n  \"outputs\": [" + kStdoutOutput + "]}";
    const ConfigResult result = parse_config(text);
    INFO("problems:\n", format_problems(result.problems));
    REQUIRE(result.problems.size() == 1);
    // Levels 1 to 3 are the document, /feeds and the feed; column 13 is the
    // first '[' of the path, level 4, so level 65 is 61 columns on.
    CHECK(result.problems[0].where == "3:74");
    CHECK(result.problems[0].message.find("nested deeper than 64") != std::string::npos);
  }

  SUBCASE("accepts 64 levels and judges the document as usual") {
    const ConfigResult result = parse_config(config_text("\"x\": " + nested(63)));
    INFO("problems:\n", format_problems(result.problems));
    REQUIRE(result.problems.size() == 1);
    CHECK(result.problems[0].where == "/x");
    CHECK(result.problems[0].message == "unknown field");
  }

  SUBCASE("objects count as levels too") {
    std::string text = "{\"x\":";
    for (int i = 0; i < 100; ++i) text += "{\"a\":";
    text += "1" + std::string(101, '}');
    const ConfigResult result = parse_config(text);
    REQUIRE(result.problems.size() == 1);
    CHECK(result.problems[0].where == "1:" + std::to_string(6 + 63 * 5));
  }

  SUBCASE("a syntax error before the deep part is the problem reported") {
    const ConfigResult result = parse_config("{\"a\": 1,, \"x\": " + nested(200'000) + "}");
    REQUIRE(result.problems.size() == 1);
    CHECK(result.problems[0].where == "1:9");
    CHECK(result.problems[0].message.find("syntax error") != std::string::npos);
  }

  SUBCASE("brackets inside strings do not count") {
    const std::string deep_string = std::string(100, '[') + "\\\\\\\"" + std::string(100, '{');
    const ConfigResult result = parse_config(
        feeds_text(R"({"name": "a", "type": "file", "path": "/x/)" + deep_string + "\"}"));
    INFO("problems:\n", format_problems(result.problems));
    CHECK(result.problems.empty());
  }
}

TEST_CASE("find_excess_nesting") {
  SUBCASE("finds the first bracket past the limit") {
    CHECK(find_excess_nesting("[[[]]]", 3) == std::nullopt);
    CHECK(find_excess_nesting("[[[]]]", 2) == std::optional<size_t>(2));
    CHECK(find_excess_nesting("[[], [[]]]", 2) == std::optional<size_t>(6));
  }
  SUBCASE("skips strings, with escaped quotes and backslashes") {
    CHECK(find_excess_nesting(R"(["[[\"[[", "\\", "\\\"[["])", 1) == std::nullopt);
    CHECK(find_excess_nesting(R"(["\\"[])", 1) == std::optional<size_t>(5));
  }
  SUBCASE("takes unbalanced closers as depth 0") {
    CHECK(find_excess_nesting("]]]][[", 2) == std::nullopt);
    CHECK(find_excess_nesting("]]]][[[", 2) == std::optional<size_t>(6));
  }
}

TEST_CASE("parse_config reports every problem in document order") {
  SUBCASE("reports all three problems of one config") {
    const std::string text = R"({
  "colour": "blue",
  "feeds": [
    {"name": "a", "type": "file"},
    {"name": "b", "type": "tcp-listen", "listen": "foo"}
  ],
  "outputs": [{"name": "o", "type": "stdout"}]
})";
    const ConfigResult result = parse_config(text);
    CHECK_FALSE(result.config.has_value());
    REQUIRE(result.problems.size() == 3);
    CHECK(result.problems[0].where == "/colour");
    CHECK(result.problems[1].where == "/feeds/0/path");
    CHECK(result.problems[2].where == "/feeds/1/listen");
  }

  SUBCASE("orders problems by where they appear, not by when they were found") {
    // Cross-field problems are found last but belong at their value.
    const std::string text = R"({
  "late": "deadletter",
  "feeds": [{"name": "a", "type": "stdin"}, {"name": "a", "type": "simulate", "rate": -1}],
  "outputs": [{"name": "o", "type": "stdout"}],
  "bogus": true
})";
    const ConfigResult result = parse_config(text);
    REQUIRE(result.problems.size() == 4);
    CHECK(result.problems[0].where == "/late");
    CHECK(result.problems[1].where == "/feeds/1/name");
    CHECK(result.problems[2].where == "/feeds/1/rate");
    CHECK(result.problems[3].where == "/bogus");
  }

  SUBCASE("puts a missing field after the fields of its object") {
    const ConfigResult result =
        parse_config(feeds_text(R"({"name": "a b", "type": "exec", "colour": 1})"));
    REQUIRE(result.problems.size() == 3);
    CHECK(result.problems[0].where == "/feeds/0/name");
    CHECK(result.problems[1].where == "/feeds/0/colour");
    CHECK(result.problems[2].where == "/feeds/0/command");
  }

  SUBCASE("does not judge type-specific fields of a feed whose type is invalid") {
    const ConfigResult result =
        parse_config(feeds_text(R"({"name": "a", "type": "sockit", "listen": "127.0.0.1:1"})"));
    REQUIRE(result.problems.size() == 1);
    CHECK(result.problems[0].where == "/feeds/0/type");
  }

  SUBCASE("does not compare water marks that are invalid themselves") {
    const ConfigResult result = parse_config(config_text(R"("feed_high_water_mark": "big")"));
    REQUIRE(result.problems.size() == 1);
    CHECK(result.problems[0].where == "/feed_high_water_mark");
  }
}

TEST_CASE("parse_config accepts good configs") {
  SUBCASE("applies every default to a minimal config") {
    const Config config = parse_valid(config_text(""));
    CHECK(config.key == "time");
    CHECK(config.key_type == KeyType::integer);
    CHECK(config.mode == MergeMode::interleave);
    CHECK(config.late == LatePolicy::emit);
    CHECK(config.idle_timeout_ms == 5000);
    CHECK(config.max_line_bytes == 1 << 20);
    CHECK(config.feed_high_water_mark == 1 << 20);
    CHECK(config.feed_low_water_mark == 256 << 10);
    CHECK(config.output_high_water_mark == 1 << 20);
    CHECK(config.drain_timeout_ms == 10000);
    CHECK(config.log_level == LogLevel::info);
    CHECK_FALSE(config.deadletter.has_value());
    CHECK_FALSE(config.metrics.has_value());
    REQUIRE(config.feeds.size() == 1);
    CHECK(config.feeds[0].name == "in");
    CHECK(config.feeds[0].type == FeedType::stdin_);
    CHECK_FALSE(config.feeds[0].high_water_mark.has_value());
    CHECK_FALSE(config.feeds[0].idle_timeout_ms.has_value());
    CHECK(config.feeds[0].heartbeat_field.empty());
    CHECK(config.feeds[0].reorder_window == 0);
    CHECK_FALSE(config.max_lag.has_value());
    CHECK_FALSE(config.feeds[0].max_lag.has_value());
    CHECK_FALSE(config.feeds[0].late.has_value());
    REQUIRE(config.outputs.size() == 1);
    CHECK(config.outputs[0].type == OutputType::stdout_);
    CHECK_FALSE(config.outputs[0].max_buffer.has_value());
    CHECK(config.outputs[0].slow_client == SlowClientPolicy::block);
    CHECK(config.retention_bytes == 64 << 20);
    CHECK_FALSE(config.retention_ms.has_value());
    CHECK(config.outputs[0].stall_timeout_ms == 0);
    CHECK(config.outputs[0].max_clients == 64);
  }

  SUBCASE("reads every feed type with its fields") {
    const Config config = parse_valid(config_text(
        R"("key": "/meta/ts", "key_type": "rfc3339", "mode": "combine", "late": "drop")",
        R"({"name": "f", "type": "file", "path": "/data/a.ndjson", "follow": true},
           {"name": "tl", "type": "tcp-listen", "listen": "[::1]:7001"},
           {"name": "tc", "type": "tcp-connect", "connect": "localhost:7100"},
           {"name": "ul", "type": "unix-listen", "path": "/run/a.sock"},
           {"name": "uc", "type": "unix-connect", "path": "/run/b.sock"},
           {"name": "x", "type": "exec", "command": ["/usr/bin/feed", "--fast", ""]},
           {"name": "s", "type": "simulate", "rate": 2.5, "jitter_ms": 50, "seed": 7,
            "count": 100, "vehicles": 12, "heartbeat_field": "hb", "reorder_window": 1e9,
            "high_water_mark": 1e6, "low_water_mark": 1000, "idle_timeout_ms": 100,
            "max_line_bytes": 4096, "max_lag": 60000, "late": "emit"})"));
    CHECK(config.key == "/meta/ts");
    CHECK(config.key_type == KeyType::rfc3339);
    CHECK(config.mode == MergeMode::combine);
    CHECK(config.late == LatePolicy::drop);
    REQUIRE(config.feeds.size() == 7);
    CHECK(config.feeds[0].path == "/data/a.ndjson");
    CHECK(config.feeds[0].follow);
    CHECK(config.feeds[1].type == FeedType::tcp_listen);
    CHECK(config.feeds[1].address == HostPort{"::1", 7001});
    CHECK(config.feeds[2].address == HostPort{"127.0.0.1", 7100});
    CHECK(config.feeds[3].type == FeedType::unix_listen);
    CHECK(config.feeds[4].path == "/run/b.sock");
    CHECK(config.feeds[5].command == std::vector<std::string>{"/usr/bin/feed", "--fast", ""});
    const FeedConfig& sim = config.feeds[6];
    CHECK(sim.rate == 2.5);
    CHECK(sim.jitter_ms == 50);
    CHECK(sim.seed == 7);
    CHECK(sim.count == 100u);
    CHECK(sim.vehicles == 12);
    CHECK(sim.heartbeat_field == "hb");
    CHECK(sim.reorder_window == 1e9);
    CHECK(sim.high_water_mark == 1000000u);
    CHECK(sim.low_water_mark == 1000u);
    CHECK(sim.idle_timeout_ms == 100u);
    CHECK(sim.max_line_bytes == 4096u);
    CHECK(sim.max_lag == 60000.0);
    CHECK(sim.late == LatePolicy::emit);
  }

  SUBCASE("reads every output type with its fields") {
    const Config config =
        parse_valid(config_text(R"("deadletter": {"path": "/var/dead.ndjson", "max_buffer": 4096},
                                   "max_lag": 2.5)",
                                kStdinFeed,
                                R"({"name": "console", "type": "stdout", "max_buffer": 1024},
           {"name": "archive", "type": "file", "path": "/var/out.ndjson", "on_error": "skip"},
           {"name": "tcp", "type": "tcp-listen", "listen": "0.0.0.0:0", "max_clients": 2,
            "slow_client": "disconnect"},
           {"name": "sock", "type": "unix-listen", "path": "/run/out.sock", "max_clients": 100000,
            "slow_client": "block", "stall_timeout_ms": 9},
           {"name": "web", "type": "http-listen", "listen": "127.0.0.1:0",
            "allow_origin": "https://dash.example"},
           {"name": "again", "type": "tcp-listen", "listen": "127.0.0.1:0", "resume": true,
            "hello_timeout_ms": 500})"));
    REQUIRE(config.outputs.size() == 6);
    CHECK(config.outputs[4].type == OutputType::http_listen);
    CHECK(config.outputs[4].allow_origin == "https://dash.example");
    CHECK(config.outputs[4].slow_client == SlowClientPolicy::disconnect);  // the network default
    CHECK(config.outputs[5].resume);
    CHECK(config.outputs[5].hello_timeout_ms == 500);
    CHECK(config.outputs[5].slow_client == SlowClientPolicy::disconnect);
    CHECK(config.outputs[3].slow_client == SlowClientPolicy::block);
    CHECK(config.outputs[0].max_buffer == 1024);
    CHECK(config.outputs[1].type == OutputType::file);
    CHECK(config.outputs[1].path == "/var/out.ndjson");
    CHECK(config.outputs[1].on_error == WriteErrorPolicy::skip);
    CHECK(config.outputs[0].on_error == WriteErrorPolicy::block);
    CHECK(config.max_lag == 2.5);
    CHECK(config.outputs[2].address == HostPort{"0.0.0.0", 0});
    CHECK(config.outputs[2].max_clients == 2);
    CHECK(config.outputs[2].slow_client == SlowClientPolicy::disconnect);
    CHECK(config.outputs[3].max_clients == 100000);
    CHECK(config.outputs[3].stall_timeout_ms == 9);
    REQUIRE(config.deadletter.has_value());
    CHECK(config.deadletter->path == "/var/dead.ndjson");
    CHECK(config.deadletter->max_buffer == 4096);
  }

  SUBCASE("lets several listeners ask for port 0") {
    const Config config =
        parse_valid(config_text(R"("metrics": {"listen": "127.0.0.1:0"})",
                                R"({"name": "a", "type": "tcp-listen", "listen": "127.0.0.1:0"})",
                                R"({"name": "o", "type": "tcp-listen", "listen": "127.0.0.1:0"})"));
    CHECK(config.metrics->address == HostPort{"127.0.0.1", 0});
  }

  SUBCASE("lets a stdin feed sit next to any other feed") {
    const Config config = parse_valid(
        feeds_text(R"({"name": "a", "type": "stdin"}, {"name": "b", "type": "file", "path": "-"},
                      {"name": "c", "type": "tcp-listen", "listen": "127.0.0.1:7001"})"));
    CHECK(config.feeds.size() == 3);
  }

  SUBCASE("accepts a feed and an output with the same name") {
    // Names are unique per kind: metrics label feeds and sinks separately.
    const Config config = parse_valid(
        config_text("", R"({"name": "x", "type": "stdin"})", R"({"name": "x", "type": "stdout"})"));
    CHECK(config.feeds[0].name == config.outputs[0].name);
  }
}

#ifdef CHRONOMERGE_SOURCE_DIR
TEST_CASE("the shipped fleet config") {
  const ConfigResult result = load_config(CHRONOMERGE_SOURCE_DIR "/config/fleet.json");
  INFO(format_problems(result.problems));
  REQUIRE(result.problems.empty());
  const Config& config = *result.config;
  REQUIRE(config.feeds.size() == 2);
  REQUIRE(config.feeds[0].fleet);
  CHECK(config.feeds[0].fleet->ack);
  CHECK(config.feeds[0].fleet->linger_ms == 300000);
  REQUIRE(config.feeds[1].fleet);
  CHECK(config.feeds[1].fleet->name_from == FleetConfig::NameFrom::pointer);
  CHECK(config.feeds[1].fleet->name_pointer == "/vehicle");
}

TEST_CASE("the merge tree examples are valid, and the roots read the shards in order") {
  for (const char* name : {"shard-north", "shard-south", "root", "kafka-shard-north",
                           "kafka-shard-south", "kafka-root"}) {
    SUBCASE(name) {
      const ConfigResult result =
          load_config(std::string(CHRONOMERGE_SOURCE_DIR "/config/tree/") + name + ".json");
      INFO(format_problems(result.problems));
      REQUIRE(result.config);
      const Config& config = *result.config;
      if (std::string_view(name).find("shard") != std::string_view::npos) {
        REQUIRE(config.outputs[0].heartbeats);
        CHECK(config.outputs[0].heartbeats->field == "heartbeat");
      } else {
        REQUIRE(config.feeds.size() == 2);
        CHECK(config.feeds[0].heartbeat_field == "heartbeat");
        const bool kafka = config.feeds[0].type == FeedType::kafka;
        CHECK(config.feeds[0].name == (kafka ? "tier/0" : "north"));
        CHECK(config.feeds[1].name == (kafka ? "tier/1" : "south"));
      }
    }
  }
}

TEST_CASE("the shipped example config") {
  SUBCASE("loads without problems and says what the file says") {
    const ConfigResult result = load_config(CHRONOMERGE_SOURCE_DIR "/config/example.json");
    INFO(format_problems(result.problems));
    REQUIRE(result.problems.empty());
    const Config& config = *result.config;
    CHECK(config.late == LatePolicy::deadletter);
    CHECK(config.max_line_bytes == 65536);
    REQUIRE(config.feeds.size() == 5);
    CHECK(config.feeds[0].type == FeedType::tcp_listen);
    CHECK(config.feeds[0].address == HostPort{"0.0.0.0", 7001});
    CHECK(config.feeds[3].type == FeedType::unix_listen);
    const FeedConfig& upstream = config.feeds[4];
    CHECK(upstream.type == FeedType::tcp_connect);
    CHECK(upstream.heartbeat_field == "heartbeat");
    CHECK(upstream.reorder_window == 2000);
    REQUIRE(config.outputs.size() == 3);
    CHECK(config.outputs[0].address == HostPort{"0.0.0.0", 7070});
    CHECK(config.outputs[0].max_clients == 256);
    CHECK(config.outputs[0].resume);
    CHECK(config.outputs[1].type == OutputType::http_listen);
    CHECK(config.outputs[2].type == OutputType::file);
    CHECK(config.outputs[2].path.starts_with("/var/lib/chronomerge/"));
    REQUIRE(config.deadletter.has_value());
    CHECK(config.deadletter->path.starts_with("/var/lib/chronomerge/"));
    REQUIRE(config.metrics.has_value());
    CHECK(config.metrics->address == HostPort{"127.0.0.1", 9464});
  }
}
#endif

TEST_CASE("the demo config") {
  SUBCASE("is valid and needs nothing but the binary") {
    const Config config = parse_valid(std::string(demo_config_text()));
    REQUIRE(config.feeds.size() == 3);
    for (const FeedConfig& feed : config.feeds) {
      CHECK(feed.type == FeedType::simulate);
      CHECK_FALSE(feed.count.has_value());
    }
    CHECK(config.feeds[0].seed != config.feeds[1].seed);
    CHECK(config.key == "time");
    CHECK(config.key_type == KeyType::integer);
    CHECK(config.log_level == LogLevel::info);
    REQUIRE(config.outputs.size() == 3);
    CHECK(config.outputs[0].name == "clients");
    CHECK(config.outputs[0].address == HostPort{"127.0.0.1", 7070});
    CHECK(config.outputs[1].type == OutputType::http_listen);
    CHECK(config.outputs[1].address == HostPort{"127.0.0.1", 7090});
    CHECK(config.outputs[2].name == "console");
    CHECK(config.outputs[2].type == OutputType::stdout_);
    REQUIRE(config.metrics.has_value());
    CHECK(config.metrics->address == HostPort{"127.0.0.1", 9464});
  }
}

#ifdef CHRONOMERGE_SOURCE_DIR
TEST_CASE("the demo config matches config/demo.json byte for byte") {
  CHECK(read_file(CHRONOMERGE_SOURCE_DIR "/config/demo.json") == demo_config_text());
}
#endif

TEST_CASE("load_config") {
  SUBCASE("reports a missing file at its path with the system's reason") {
    const std::string path = "/nonexistent/chronomerge.json";
    const ConfigResult result = load_config(path);
    REQUIRE(result.problems.size() == 1);
    CHECK(result.problems[0].where == path);
    CHECK(result.problems[0].message == std::strerror(ENOENT));
  }

  SUBCASE("reports a directory as unreadable") {
    const ConfigResult result = load_config("/");
    REQUIRE(result.problems.size() == 1);
    CHECK(result.problems[0].where == "/");
    CHECK(result.problems[0].message == std::strerror(EISDIR));
  }
}

TEST_CASE("parse_host_port") {
  SUBCASE("reads an IPv4 address and port") {
    CHECK(parse_host_port("10.0.0.1:80") == HostPort{"10.0.0.1", 80});
    CHECK(parse_host_port("0.0.0.0:65535") == HostPort{"0.0.0.0", 65535});
  }
  SUBCASE("turns localhost into the IPv4 loopback") {
    CHECK(parse_host_port("localhost:7070") == HostPort{"127.0.0.1", 7070});
  }
  SUBCASE("reads a bracketed IPv6 address without its brackets") {
    CHECK(parse_host_port("[::1]:7070") == HostPort{"::1", 7070});
    CHECK(parse_host_port("[::]:0") == HostPort{"::", 0});
  }
  SUBCASE("rejects anything else") {
    for (const char* text :
         {"", "foo", "127.0.0.1", "127.0.0.1:", ":80", "127.0.0.1:65536", "127.0.0.1:-1",
          "127.0.0.1:+80", "127.0.0.1:8o", "1.2.3:80", "256.0.0.1:80", "example.com:80", "::1:80",
          "[::1]80", "[::1]:", "[127.0.0.1]:80", "[::1:80", "127.0.0.1:123456"}) {
      INFO(text);
      CHECK_FALSE(parse_host_port(text).has_value());
    }
  }
  SUBCASE("renders IPv6 hosts in brackets") {
    CHECK(to_string(HostPort{"::1", 80}) == "[::1]:80");
    CHECK(to_string(HostPort{"127.0.0.1", 80}) == "127.0.0.1:80");
  }
}

TEST_CASE("enum names") {
  SUBCASE("round-trip through parse and to_string") {
    for (auto mode : {MergeMode::interleave, MergeMode::combine}) {
      CHECK(parse_merge_mode(to_string(mode)) == mode);
    }
    for (auto late : {LatePolicy::emit, LatePolicy::drop, LatePolicy::deadletter}) {
      CHECK(parse_late_policy(to_string(late)) == late);
    }
    for (auto slow : {SlowClientPolicy::block, SlowClientPolicy::disconnect}) {
      CHECK(parse_slow_client_policy(to_string(slow)) == slow);
    }
    for (auto level : {LogLevel::error, LogLevel::warn, LogLevel::info, LogLevel::debug}) {
      CHECK(parse_log_level(to_string(level)) == level);
    }
  }
  SUBCASE("use the spelling of the config file") {
    CHECK(to_string(FeedType::stdin_) == "stdin");
    CHECK(to_string(FeedType::tcp_connect) == "tcp-connect");
    CHECK(to_string(FeedType::unix_listen) == "unix-listen");
    CHECK(to_string(OutputType::stdout_) == "stdout");
    CHECK(to_string(OutputType::tcp_listen) == "tcp-listen");
  }
  SUBCASE("reject unknown and differently cased names") {
    CHECK_FALSE(parse_merge_mode("Interleave").has_value());
    CHECK_FALSE(parse_log_level("warning").has_value());
  }
}

TEST_CASE("format_problems") {
  SUBCASE("writes one where: message line per problem") {
    CHECK(format_problems({{"/feeds/2/listen", "expected \"host:port\", got \"foo\""},
                           {"3:7", "syntax error"}}) ==
          "/feeds/2/listen: expected \"host:port\", got \"foo\"\n3:7: syntax error\n");
  }
  SUBCASE("names the whole document when the pointer is empty") {
    CHECK(format_problems({{"", "expected an object, got 3"}}) ==
          "(top level): expected an object, got 3\n");
  }
  SUBCASE("writes nothing for no problems") {
    CHECK(format_problems({}).empty());
  }
}

TEST_CASE("${NAME} in string values comes from the environment") {
  ::setenv("CM_TEST_PATH", "/var/lib/in.ndjson", 1);
  ::setenv("CM_TEST_SECRET", "hunter2", 1);
  SUBCASE("is replaced, anywhere in a string") {
    const ConfigResult result =
        parse_config(feeds_text(R"({"name": "a", "type": "file", "path": "${CM_TEST_PATH}.1"})"));
    INFO(format_problems(result.problems));
    REQUIRE(result.config);
    CHECK(result.config->feeds[0].path == "/var/lib/in.ndjson.1");
  }
  SUBCASE("$${ stands for a literal ${") {
    const ConfigResult result =
        parse_config(feeds_text(R"({"name": "a", "type": "file", "path": "/x/$${CM_TEST_PATH}"})"));
    REQUIRE(result.config);
    CHECK(result.config->feeds[0].path == "/x/${CM_TEST_PATH}");
  }
  SUBCASE("an unset variable is an error naming its place and the variable") {
    ::unsetenv("CM_TEST_UNSET");
    const ConfigResult result =
        parse_config(feeds_text(R"({"name": "a", "type": "file", "path": "${CM_TEST_UNSET}"})"));
    REQUIRE(result.problems.size() == 1);
    CHECK(result.problems[0].where == "/feeds/0/path");
    CHECK(result.problems[0].message == "environment variable CM_TEST_UNSET is not set");
  }
  SUBCASE("a substituted value is validated, and never shown") {
    const ConfigResult result =
        parse_config(feeds_text(R"({"name": "${CM_TEST_SECRET}!", "type": "stdin"})"));
    REQUIRE(result.problems.size() == 1);
    CHECK(result.problems[0].where == "/feeds/0/name");
    CHECK(result.problems[0].message.find("hunter2") == std::string::npos);
  }
  SUBCASE("a malformed reference is an error") {
    const ConfigResult result =
        parse_config(feeds_text(R"({"name": "a", "type": "file", "path": "${1X}"})"));
    REQUIRE(result.problems.size() == 1);
    CHECK(result.problems[0].message.find("$${") != std::string::npos);
  }
}

}  // namespace
}  // namespace chronomerge
