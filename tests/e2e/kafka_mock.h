// chronomerge_kafka_mock (tests/kafka/kafka_mock.cc) as a child process: a
// Kafka cluster on 127.0.0.1 for the end-to-end tests, driven by commands
// on its standard input, one answer line each on its standard output.
// Test thread only.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace chronomerge::e2e {

class KafkaMock {
 public:
  // `topics`: "NAME:PARTITIONS" each.
  explicit KafkaMock(const std::vector<std::string>& topics);
  ~KafkaMock();
  KafkaMock(const KafkaMock&) = delete;
  KafkaMock& operator=(const KafkaMock&) = delete;

  const std::string& bootstraps() const { return bootstraps_; }
  // Sends one command and returns its answer.
  std::string command(const std::string& line);
  // Committed offsets of `group` for partitions 0..n-1 of `topic`.
  std::vector<int64_t> committed(const std::string& group, const std::string& topic, int n);

 private:
  std::string read_line();

  pid_t pid_ = -1;
  int to_ = -1;
  int from_ = -1;
  std::string bootstraps_;
  std::string buffer_;
};

}  // namespace chronomerge::e2e
