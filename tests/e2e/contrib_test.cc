// End to end: what contrib/ ships for operators. The alert rules pass
// `promtool check rules`, and every chronomerge_* and process_* name the
// rules and the Grafana dashboard use appears in a live scrape of a daemon
// that uses every kind of part (a fleet, TLS, Kafka, a dead-letter file,
// time keys), so a renamed metric cannot silently empty a panel or an
// alert.
#include <doctest/doctest.h>

#include <cstdlib>
#include <regex>
#include <set>
#include <string>

#include "harness.h"
#include "kafka_mock.h"

using namespace chronomerge::e2e;
using nlohmann::json;

namespace {

const std::string contrib = std::string(CHRONOMERGE_SOURCE_DIR) + "/contrib";

std::set<std::string> metric_names(const std::string& text) {
  static const std::regex name(R"(\b(?:chronomerge|process)_[a-z_]+[a-z])");
  std::set<std::string> names;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), name); it != std::sregex_iterator();
       ++it) {
    names.insert(it->str());
  }
  return names;
}

}  // namespace

TEST_CASE("contrib: alert rules check out, and every metric they and the dashboard use exists") {
  const std::string rules = contrib + "/prometheus/alerts.yml";
  const std::string dashboard = contrib + "/grafana/chronomerge.json";
  if (std::system("command -v promtool > /dev/null") == 0) {
    CHECK(std::system(("promtool check rules " + rules + " > /dev/null").c_str()) == 0);
  } else {
    MESSAGE("promtool missing (Debian's prometheus package): rules not checked");
  }
  const json board = json::parse(read_file(dashboard));  // throws if it is not JSON
  CHECK(board["panels"].size() >= 8);

  TempDir dir;
  const std::string cert = dir / "cert.pem";
  const std::string key = dir / "key.pem";
  REQUIRE(std::system(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                       "-keyout " +
                       key + " -out " + cert + " -subj /CN=localhost -days 30 2> /dev/null")
                          .c_str()) == 0);
  KafkaMock kafka({"in:1", "out:1"});
  json fleet = tcp_feed("buses");
  fleet["fleet"] = json::object();
  json tls_output = tcp_output("clients");
  tls_output["tls"] = {{"cert", cert}, {"key", key}};
  json config = {{"key_unit", "ms"},
                 {"feeds",
                  {{{"name", "sim"}, {"type", "simulate"}, {"rate", 100}},
                   fleet,
                   {{"name", "k"},
                    {"type", "kafka"},
                    {"brokers", kafka.bootstraps()},
                    {"topic", "in"},
                    {"partitions", {0}},
                    {"idle_timeout_ms", 100}}}},
                 {"outputs",
                  {tls_output,
                   {{"name", "archive"}, {"type", "file"}, {"path", dir / "out"}},
                   {{"name", "merged"},
                    {"type", "kafka"},
                    {"brokers", kafka.bootstraps()},
                    {"topic", "out"}}}},
                 {"deadletter", {{"path", dir / "dead"}}}};
  with_metrics(config);
  Daemon daemon(dir, config);
  const uint16_t port = daemon.metrics_port();
  REQUIRE(wait_sample(port, "chronomerge_records_out_total", [](double v) { return v > 10; }) > 10);
  const std::string scrape = http_get(port, "/metrics");

  const std::set<std::string> exported = metric_names(scrape);
  std::set<std::string> used = metric_names(read_file(rules));
  for (const std::string& name : metric_names(read_file(dashboard))) used.insert(name);
  CHECK(used.size() > 20);
  for (const std::string& name : used) {
    INFO("used by contrib/ but not exported: ", name);
    CHECK(exported.count(name) == 1);
  }
  CHECK(daemon.stop().code == 0);
}
