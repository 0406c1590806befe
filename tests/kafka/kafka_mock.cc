// chronomerge_kafka_mock: a Kafka cluster for tests and benchmarks, from
// librdkafka's mock cluster (brokers on 127.0.0.1, in this process).
//
//   chronomerge_kafka_mock [--brokers N] [--topic NAME:PARTITIONS]...
//
// Prints the bootstrap list as its first line, then reads commands from
// standard input, one per line, and answers each with one line ("ok", a
// result, or "error: ..."); exits at end of input.
//
//   topic NAME PARTITIONS          create a topic
//   down BROKER | up BROKER        take a broker away / bring it back
//   leader TOPIC PARTITION BROKER  move a partition's leader
//   errors API_KEY COUNT ERROR...  fail the next COUNT requests of an API
//                                  (Kafka API key, e.g. 1 Fetch, 0 Produce)
//                                  with the given error codes in turn
//   rtt BROKER MS                  delay a broker's responses
//   committed GROUP TOPIC P...     committed offsets, "-1" for none
//   watermarks TOPIC P             "LOW HIGH" of a partition
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

rd_kafka_t* new_client(rd_kafka_type_t type,
                       const std::vector<std::pair<std::string, std::string>>& settings) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char error[512];
  for (const auto& [name, value] : settings) {
    if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), error, sizeof error) !=
        RD_KAFKA_CONF_OK) {
      std::fprintf(stderr, "kafka_mock: %s\n", error);
      std::exit(2);
    }
  }
  rd_kafka_t* rk = rd_kafka_new(type, conf, error, sizeof error);
  if (rk == nullptr) {
    std::fprintf(stderr, "kafka_mock: %s\n", error);
    std::exit(2);
  }
  return rk;
}

std::string committed(const std::string& bootstraps, const std::string& group,
                      const std::string& topic, const std::vector<int32_t>& partitions) {
  rd_kafka_t* rk =
      new_client(RD_KAFKA_CONSUMER,
                 {{"bootstrap.servers", bootstraps}, {"group.id", group}, {"log_level", "3"}});
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(4);
  for (int32_t p : partitions) rd_kafka_topic_partition_list_add(list, topic.c_str(), p);
  std::string answer;
  if (rd_kafka_resp_err_t err = rd_kafka_committed(rk, list, 10000); err) {
    answer = std::string("error: ") + rd_kafka_err2str(err);
  } else {
    for (int i = 0; i < list->cnt; ++i) {
      if (i) answer += ' ';
      answer += std::to_string(list->elems[i].offset < 0 ? -1 : list->elems[i].offset);
    }
  }
  rd_kafka_topic_partition_list_destroy(list);
  rd_kafka_destroy(rk);
  return answer;
}

}  // namespace

int main(int argc, char** argv) {
  int brokers = 3;
  std::vector<std::pair<std::string, int>> topics;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--brokers" && i + 1 < argc) {
      brokers = std::atoi(argv[++i]);
    } else if (arg == "--topic" && i + 1 < argc) {
      std::string spec = argv[++i];
      const size_t colon = spec.rfind(':');
      topics.emplace_back(spec.substr(0, colon),
                          colon == std::string::npos ? 1 : std::atoi(spec.c_str() + colon + 1));
    } else {
      std::fprintf(stderr, "usage: %s [--brokers N] [--topic NAME:PARTITIONS]...\n", argv[0]);
      return 2;
    }
  }
  // The cluster lives in the threads of this (otherwise unused) client.
  rd_kafka_t* host = new_client(RD_KAFKA_PRODUCER, {{"log_level", "3"}});
  rd_kafka_mock_cluster_t* cluster = rd_kafka_mock_cluster_new(host, brokers);
  if (cluster == nullptr) {
    std::fprintf(stderr, "kafka_mock: cannot start a mock cluster\n");
    return 2;
  }
  for (const auto& [name, partitions] : topics) {
    rd_kafka_mock_topic_create(cluster, name.c_str(), partitions, std::min(brokers, 3));
  }
  const std::string bootstraps = rd_kafka_mock_cluster_bootstraps(cluster);
  std::cout << bootstraps << std::endl;

  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string command;
    in >> command;
    std::string answer = "ok";
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (command == "topic") {
      std::string name;
      int partitions = 1;
      in >> name >> partitions;
      err = rd_kafka_mock_topic_create(cluster, name.c_str(), partitions, std::min(brokers, 3));
    } else if (command == "down" || command == "up") {
      int32_t broker = 0;
      in >> broker;
      err = command == "down" ? rd_kafka_mock_broker_set_down(cluster, broker)
                              : rd_kafka_mock_broker_set_up(cluster, broker);
    } else if (command == "leader") {
      std::string topic;
      int32_t partition = 0, broker = 0;
      in >> topic >> partition >> broker;
      err = rd_kafka_mock_partition_set_leader(cluster, topic.c_str(), partition, broker);
    } else if (command == "errors") {
      int16_t api = 0;
      size_t count = 0;
      in >> api >> count;
      std::vector<rd_kafka_resp_err_t> errors;
      int code = 0;
      while (in >> code) errors.push_back(static_cast<rd_kafka_resp_err_t>(code));
      if (errors.empty()) errors.push_back(RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);
      std::vector<rd_kafka_resp_err_t> all;
      for (size_t i = 0; i < count; ++i) all.push_back(errors[i % errors.size()]);
      rd_kafka_mock_push_request_errors_array(cluster, api, all.size(), all.data());
    } else if (command == "rtt") {
      int32_t broker = 0;
      int ms = 0;
      in >> broker >> ms;
      err = rd_kafka_mock_broker_set_rtt(cluster, broker, ms);
    } else if (command == "committed") {
      std::string group, topic;
      in >> group >> topic;
      std::vector<int32_t> partitions;
      int32_t p = 0;
      while (in >> p) partitions.push_back(p);
      answer = committed(bootstraps, group, topic, partitions);
    } else if (command == "watermarks") {
      std::string topic;
      int32_t partition = 0;
      in >> topic >> partition;
      rd_kafka_t* rk =
          new_client(RD_KAFKA_CONSUMER, {{"bootstrap.servers", bootstraps}, {"log_level", "3"}});
      int64_t low = -1, high = -1;
      err = rd_kafka_query_watermark_offsets(rk, topic.c_str(), partition, &low, &high, 10000);
      if (!err) answer = std::to_string(low) + " " + std::to_string(high);
      rd_kafka_destroy(rk);
    } else if (!command.empty()) {
      answer = "error: unknown command " + command;
    }
    if (err) answer = std::string("error: ") + rd_kafka_err2str(err);
    std::cout << answer << std::endl;
  }
  rd_kafka_mock_cluster_destroy(cluster);
  rd_kafka_destroy(host);
  return 0;
}
