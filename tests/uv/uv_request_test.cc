// UvRequest on a real loop: a completion reaches a live owner, runs into
// nothing once the owner is gone or detached, and the payload is freed
// either way (ASan checks the "freed" part); the loop closes cleanly.
#include "uv/uv_request.h"

#include <sys/socket.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <memory>
#include <string>

#include "uv/uv_handle.h"

using namespace chronomerge;

namespace {

// Counts its live instances, to see the payload freed.
struct Tracked {
  static inline int alive = 0;
  Tracked() { ++alive; }
  Tracked(const Tracked&) = delete;
  Tracked(Tracked&& other) noexcept : bytes(std::move(other.bytes)) { ++alive; }
  Tracked& operator=(Tracked&& other) noexcept {
    bytes = std::move(other.bytes);
    return *this;
  }
  ~Tracked() { --alive; }
  std::string bytes;
};

// A connected pair of Unix sockets, the first one as a libuv pipe.
struct Pair {
  explicit Pair(uv_loop_t* loop) {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    REQUIRE(uv_pipe_init(loop, pipe.get(), 0) == 0);
    pipe.initialized(nullptr);
    REQUIRE(uv_pipe_open(pipe.get(), fds[0]) == 0);
    peer = fds[1];
  }
  ~Pair() {
    pipe.close();
    ::close(peer);
  }
  UvHandle<uv_pipe_t> pipe;
  int peer = -1;
};

int write_bytes(UvRequest<uv_write_t, Tracked>& request, uv_pipe_t* pipe, std::string text) {
  Tracked payload;
  payload.bytes = std::move(text);
  return request.start(std::move(payload), [&](uv_write_t* req, uv_write_cb callback) {
    Tracked& p = request.payload();
    uv_buf_t buf = uv_buf_init(p.bytes.data(), static_cast<unsigned>(p.bytes.size()));
    return uv_write(req, reinterpret_cast<uv_stream_t*>(pipe), &buf, 1, callback);
  });
}

}  // namespace

TEST_CASE("UvRequest") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  Tracked::alive = 0;

  SUBCASE("a completion reaches its owner with the payload, which is then freed") {
    Pair pair(&loop);
    ssize_t status = 1;
    std::string seen;
    UvRequest<uv_write_t, Tracked> request([&](Tracked& p, ssize_t s) {
      status = s;
      seen = p.bytes;
    });
    REQUIRE(write_bytes(request, pair.pipe.get(), "hello\n") == 0);
    CHECK(request.pending());
    CHECK(Tracked::alive == 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(status == 0);
    CHECK(seen == "hello\n");
    CHECK_FALSE(request.pending());
    CHECK(Tracked::alive == 0);
    char buf[16] = {};
    CHECK(::recv(pair.peer, buf, sizeof(buf), MSG_DONTWAIT) == 6);
  }

  SUBCASE("an owner destroyed while its request is in flight is never called") {
    Pair pair(&loop);
    bool called = false;
    {
      UvRequest<uv_write_t, Tracked> request([&](Tracked&, ssize_t) { called = true; });
      REQUIRE(write_bytes(request, pair.pipe.get(), "bye\n") == 0);
    }
    pair.pipe.close();  // the write completes cancelled, into nothing
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_FALSE(called);
    CHECK(Tracked::alive == 0);
  }

  SUBCASE("a failed start hands the payload back and leaves nothing in flight") {
    UvRequest<uv_write_t, Tracked> request([](Tracked&, ssize_t) { FAIL("called"); });
    Tracked payload;
    payload.bytes = "kept";
    int rc = request.start(std::move(payload), [](uv_write_t*, uv_write_cb) { return UV_EBADF; });
    CHECK(rc == UV_EBADF);
    CHECK_FALSE(request.pending());
    CHECK(payload.bytes == "kept");
  }

  SUBCASE("a file-system request reports its result and can be submitted again from done") {
    char path[] = "/tmp/chronomerge-uvrequest-XXXXXX";
    int fd = ::mkstemp(path);
    REQUIRE(fd >= 0);
    int writes = 0;
    std::string text = "0123456789";
    UvRequest<uv_fs_t, Tracked>* self = nullptr;
    auto submit = [&](uv_fs_t* req, uv_fs_cb callback) {
      uv_buf_t buf = uv_buf_init(text.data(), static_cast<unsigned>(text.size()));
      return uv_fs_write(&loop, req, fd, &buf, 1, -1, callback);
    };
    UvRequest<uv_fs_t, Tracked> request([&](Tracked&, ssize_t result) {
      CHECK(result == 10);
      if (++writes < 3) CHECK(self->restart(submit) == 0);
    });
    self = &request;
    REQUIRE(request.start(Tracked{}, submit) == 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(writes == 3);
    CHECK(Tracked::alive == 0);
    CHECK(::lseek(fd, 0, SEEK_END) == 30);
    ::close(fd);
    ::unlink(path);
  }

  SUBCASE("a thread-pool job uses its payload on the worker; a detached one is freed") {
    using Work = UvRequest<uv_work_t, Tracked>;
    bool called = false;
    Work request([&](Tracked& p, ssize_t status) {
      called = true;
      CHECK(status == 0);
      CHECK(p.bytes == "worked");
    });
    auto submit = [&](uv_work_t* req, uv_after_work_cb callback) {
      return uv_queue_work(
          &loop, req, [](uv_work_t* r) { Work::payload_of(r).bytes = "worked"; }, callback);
    };
    REQUIRE(request.start(Tracked{}, submit) == 0);
    Work detached([](Tracked&, ssize_t) { FAIL("called"); });
    REQUIRE(detached.start(Tracked{}, submit) == 0);
    detached.detach();
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(called);
    CHECK(Tracked::alive == 0);
  }

  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}
