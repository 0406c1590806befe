#include "kafka/kafka_wakeup.h"

#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace chronomerge {

namespace {
constexpr char kWake = 1;
}  // namespace

bool KafkaWakeup::open(uv_loop_t* loop, std::function<void()> on_wake, std::string& error) {
  on_wake_ = std::move(on_wake);
  if (pipe2(pipe_, O_NONBLOCK | O_CLOEXEC) != 0) {
    error = fmt::format("pipe: {}", std::strerror(errno));
    return false;
  }
  if (int rc = uv_poll_init(loop, poll_.get(), pipe_[0]); rc != 0) {
    error = fmt::format("uv_poll_init: {}", uv_strerror(rc));
    return false;
  }
  poll_.initialized(this);
  uv_poll_start(poll_.get(), UV_READABLE, [](uv_poll_t* poll, int /*status*/, int /*events*/) {
    if (auto* self = static_cast<KafkaWakeup*>(poll->data)) {
      self->drain();
      self->on_wake_();
    }
  });
  uv_unref(poll_.base());
  return true;
}

void KafkaWakeup::watch(rd_kafka_queue_t* queue) {
  rd_kafka_queue_io_event_enable(queue, pipe_[1], &kWake, 1);
}

void KafkaWakeup::unwatch(rd_kafka_queue_t* queue) {
  rd_kafka_queue_io_event_enable(queue, -1, nullptr, 0);
}

void KafkaWakeup::wake() {
  const ssize_t n = ::write(pipe_[1], &kWake, 1);
  (void)n;  // a full pipe already holds a wake-up
}

void KafkaWakeup::drain() {
  char bytes[64];
  while (::read(pipe_[0], bytes, sizeof bytes) > 0) {
  }
}

void KafkaWakeup::close() {
  poll_.close();  // stops watching the descriptor at once
  for (int& fd : pipe_) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
}

}  // namespace chronomerge
