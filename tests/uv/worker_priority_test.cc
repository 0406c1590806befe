// Pool workers run below the loop thread's priority: lower_worker_priority()
// on a thread of its own, and jobs queued with run_on_pool() on a real loop.
// (tests/e2e/hardening_test.cc checks a running one-shot merge's threads.)
#include "uv/worker_priority.h"

#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include <doctest/doctest.h>

#include <memory>
#include <thread>

#include "uv/uv_request.h"

using namespace chronomerge;

namespace {

int nice_of(pid_t tid) {
  return getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
}

// Records the nice value of the pool thread it runs on.
struct PriorityProbe {
  int* seen;
  void run() { *seen = nice_of(gettid()); }
};

}  // namespace

TEST_CASE("lower_worker_priority lowers the calling thread once, and only it") {
  const int base = nice_of(gettid());
  if (base > 19 - worker_nice_offset) {
    MESSAGE("already at nice ", base, ": nothing to lower");
    return;
  }
  int first = 0;
  int second = 0;
  std::thread worker([&] {
    lower_worker_priority();
    first = nice_of(gettid());
    lower_worker_priority();
    second = nice_of(gettid());
  });
  worker.join();
  CHECK(first == base + worker_nice_offset);
  CHECK(second == base + worker_nice_offset);
  CHECK(nice_of(gettid()) == base);
}

TEST_CASE("a job on libuv's pool runs below the loop thread") {
  const int base = nice_of(gettid());
  if (base > 19 - worker_nice_offset) {
    MESSAGE("already at nice ", base, ": nothing to lower");
    return;
  }
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  int seen = -100;
  run_on_pool(&loop, std::make_unique<PriorityProbe>(PriorityProbe{&seen}));
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(seen == base + worker_nice_offset);
  CHECK(nice_of(gettid()) == base);
  CHECK(uv_loop_close(&loop) == 0);
}
