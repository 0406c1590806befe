#include "kafka_mock.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <sstream>

#include "harness.h"

extern char** environ;

namespace chronomerge::e2e {

KafkaMock::KafkaMock(const std::vector<std::string>& topics) {
  int in[2], out[2];
  REQUIRE(pipe2(in, O_CLOEXEC) == 0);
  REQUIRE(pipe2(out, O_CLOEXEC) == 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  std::vector<std::string> args = {CHRONOMERGE_KAFKA_MOCK};
  for (const std::string& topic : topics) {
    args.push_back("--topic");
    args.push_back(topic);
  }
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  REQUIRE(posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) == 0);
  posix_spawn_file_actions_destroy(&actions);
  ::close(in[0]);
  ::close(out[1]);
  to_ = in[1];
  from_ = out[0];
  bootstraps_ = read_line();
  REQUIRE_FALSE(bootstraps_.empty());
}
KafkaMock::~KafkaMock() {
  ::close(to_);
  ::close(from_);
  int status = 0;
  waitpid(pid_, &status, 0);
}
std::string KafkaMock::command(const std::string& line) {
  const std::string text = line + "\n";
  REQUIRE(::write(to_, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  return read_line();
}

std::vector<int64_t> KafkaMock::committed(const std::string& group, const std::string& topic,
                                          int n) {
  std::string line = "committed " + group + " " + topic;
  for (int p = 0; p < n; ++p) line += " " + std::to_string(p);
  std::istringstream answer(command(line));
  std::vector<int64_t> offsets;
  int64_t offset = 0;
  while (answer >> offset) offsets.push_back(offset);
  return offsets;
}

std::string KafkaMock::read_line() {
  const auto deadline = Clock::now() + 30s;
  while (true) {
    const size_t newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      return line;
    }
    pollfd p{from_, POLLIN, 0};
    const auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
    if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0) FAIL("kafka mock: no answer");
    char chunk[4096];
    const ssize_t n = ::read(from_, chunk, sizeof chunk);
    if (n <= 0) FAIL("kafka mock: exited");
    buffer_.append(chunk, static_cast<size_t>(n));
  }
}

}  // namespace chronomerge::e2e
