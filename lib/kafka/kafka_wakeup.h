// KafkaWakeup: librdkafka queues waking the event loop.
//
// A queue with an IO event writes a byte to a non-blocking pipe when it
// goes from empty to non-empty (rd_kafka_queue_io_event_enable); one
// uv_poll_t on the pipe's read end runs `on_wake` on the loop thread.
// Since a queue signals only that transition, whoever stops draining a
// queue with messages left must wake() it later itself.
//
// Loop thread only. The handle does not keep the loop alive.
#pragma once

#include <uv.h>

#include <functional>
#include <string>

#include "uv/uv_handle.h"

struct rd_kafka_queue_s;

namespace chronomerge {

class KafkaWakeup {
 public:
  KafkaWakeup() = default;
  ~KafkaWakeup() { close(); }
  KafkaWakeup(const KafkaWakeup&) = delete;
  KafkaWakeup& operator=(const KafkaWakeup&) = delete;

  // False with `error` set if the pipe or the poll handle fails.
  bool open(uv_loop_t* loop, std::function<void()> on_wake, std::string& error);
  // `queue` signals through this wakeup from now on / no longer.
  void watch(rd_kafka_queue_s* queue);
  static void unwatch(rd_kafka_queue_s* queue);
  // Runs on_wake from the next loop turn.
  void wake();
  // Empties the pipe (on_wake does it first).
  void drain();
  // Stops the poll handle and closes the pipe. Queues must be unwatched
  // first. Idempotent.
  void close();

 private:
  int pipe_[2] = {-1, -1};
  UvHandle<uv_poll_t> poll_;
  std::function<void()> on_wake_;
};

}  // namespace chronomerge
