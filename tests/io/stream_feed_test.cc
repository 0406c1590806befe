// StreamFeed on a real loop. A socket read is framed and validated on
// libuv's thread pool; these cases hold the pool's threads busy so that a
// feed's batch stays in flight while the queue fills, a reload removes the
// feed or its drain deadline passes, and check that nothing is dropped,
// reordered, read past a pause or freed under the batch.
#include "feeds/stream_feed.h"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/pipeline.h"
#include "io/loop_support.h"
#include "record/record_parser.h"

using namespace chronomerge;
using namespace chronomerge::testing;

namespace {

// Occupies every thread of libuv's pool until release(): work queued after
// it (a feed's batch) waits in the pool's queue, in flight, meanwhile.
class PoolBlocker {
 public:
  explicit PoolBlocker(uv_loop_t* loop) {
    const char* size = std::getenv("UV_THREADPOOL_SIZE");
    requests_.resize(size ? static_cast<size_t>(std::atoi(size)) : 4);
    for (uv_work_t& req : requests_) {
      req.data = this;
      uv_queue_work(
          loop, &req,
          [](uv_work_t* r) {
            auto* self = static_cast<PoolBlocker*>(r->data);
            std::unique_lock lock(self->mutex_);
            self->cv_.wait(lock, [self] { return self->released_; });
          },
          [](uv_work_t*, int) {});
    }
  }
  ~PoolBlocker() { release(); }
  void release() {
    std::lock_guard lock(mutex_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  std::vector<uv_work_t> requests_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool released_ = false;
};

FeedConfig unix_listen(const std::string& name, const std::string& path) {
  FeedConfig feed;
  feed.name = name;
  feed.type = FeedType::unix_listen;
  feed.path = path;
  return feed;
}

// A connected producer: the daemon accepts it once its loop runs; what it
// writes before waits in the kernel.
int connect_to(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  REQUIRE(path.size() < sizeof addr.sun_path);
  std::copy(path.begin(), path.end(), addr.sun_path);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  return fd;
}

void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    REQUIRE(n > 0);
    data.remove_prefix(static_cast<size_t>(n));
  }
}

// The cases below are about batches on the thread pool: their key lies
// inside a member, which the vector scanner does not read, so that every
// batch takes the pool at every level (StreamFeed::frames_here()).
constexpr const char* pool_key = "/meta/time";

// A record with key `time`, in pool_key, padded to `pad` bytes of 'x'.
std::string record(int64_t time, size_t pad = 0) {
  return "{\"meta\":{\"time\":" + std::to_string(time) + "},\"pad\":\"" + std::string(pad, 'x') +
         "\"}\n";
}

// Records with keys from `first`, `count` of them, about 200 bytes each.
std::string records(int64_t first, int count) {
  std::string out;
  for (int64_t time = first; time < first + count; ++time) {
    out += record(time, 180 + static_cast<size_t>(time % 7));
  }
  return out;
}

const StreamFeed& stream(const Pipeline& pipeline, size_t i) {
  return dynamic_cast<const StreamFeed&>(*pipeline.feeds()[i]);
}

}  // namespace

TEST_CASE("StreamFeed batches on the thread pool") {
  TempDir dir;
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  const std::string sock = (dir.path / "sock").string();
  const std::string other = (dir.path / "other").string();
  const std::string out = (dir.path / "out").string();

  SUBCASE("a batch in flight when the queue fills is queued, and the paused feed reads no more") {
    Config config;
    config.key = pool_key;
    config.idle_timeout_ms = 60000;  // "other" holds the merge until it speaks
    FeedConfig feed = unix_listen("sock", sock);
    feed.high_water_mark = 16 << 10;
    feed.low_water_mark = 4 << 10;
    config.feeds.push_back(feed);
    config.feeds.push_back(unix_listen("other", other));
    config.outputs.push_back(file_output(out));
    const std::string data = records(0, 500);  // about 95 KiB
    {
      Pipeline pipeline(&loop, config, true);
      REQUIRE(pipeline.start());
      PoolBlocker blocker(&loop);
      int producer = connect_to(sock);
      write_all(producer, data);
      int other_producer = -1;
      uint64_t read_in_flight = 0;
      bool finished = false;
      pipeline.on_finished([&] {
        finished = true;
        pipeline.close();
      });
      when(
          &loop, [&] { return stream(pipeline, 0).busy(); },
          [&] {
            // One read, on the pool: it counts toward the water marks at
            // once, so the feed is paused before anything is queued.
            const StreamFeed& f = stream(pipeline, 0);
            read_in_flight = f.counters().bytes_read;
            CHECK(read_in_flight == StreamFeed::read_bytes);
            CHECK(f.paused());
            CHECK(pipeline.merger().queue_bytes(f.id()) == 0);
            after(&loop, 50, [&] {
              CHECK(stream(pipeline, 0).counters().bytes_read == read_in_flight);
              blocker.release();
              when(
                  &loop, [&] { return !stream(pipeline, 0).busy(); },
                  [&] {
                    // Queued, not dropped; still paused, not reading.
                    const StreamFeed& f = stream(pipeline, 0);
                    CHECK(pipeline.merger().queue_bytes(f.id()) > 0);
                    CHECK(f.paused());
                    after(&loop, 50, [&] {
                      CHECK(stream(pipeline, 0).paused());
                      CHECK(stream(pipeline, 0).counters().bytes_read == read_in_flight);
                      CHECK(pipeline.output().records() == 0);
                      // "other" speaks: the merge runs, the queue drains,
                      // the feed resumes and reads the rest.
                      other_producer = connect_to(other);
                      write_all(other_producer, record(1000000000));
                      when(
                          &loop, [&] { return pipeline.output().records() >= 500; },
                          [&] { pipeline.drain(); });
                    });
                  });
            });
          });
      uv_run(&loop, UV_RUN_DEFAULT);
      CHECK(finished);
      ::close(producer);
      if (other_producer >= 0) ::close(other_producer);
    }
    CHECK(slurp(out) == data + record(1000000000));
  }
  SUBCASE("reads and a disconnect behind a batch on the pool are taken in order") {
    Config config;
    config.key = pool_key;
    config.idle_timeout_ms = 50;  // "other" never connects
    config.feeds.push_back(unix_listen("sock", sock));
    config.feeds.push_back(unix_listen("other", other));
    config.outputs.push_back(file_output(out));
    const std::string first = records(0, 200);
    const std::string second = records(200, 100);
    const std::string cut = "{\"meta\":{\"time\":300},\"pad\":\"xx";  // the producer goes mid-line
    {
      Pipeline pipeline(&loop, config, true);
      REQUIRE(pipeline.start());
      PoolBlocker blocker(&loop);
      int producer = connect_to(sock);
      write_all(producer, first);
      bool finished = false;
      pipeline.on_finished([&] {
        finished = true;
        pipeline.close();
      });
      when(
          &loop, [&] { return stream(pipeline, 0).busy(); },
          [&] {
            write_all(producer, second + cut);
            ::close(producer);
            after(&loop, 50, [&] {
              // Read, waiting behind the batch; the disconnect waits too.
              const StreamFeed& f = stream(pipeline, 0);
              CHECK(f.busy());
              CHECK(f.counters().bytes_read == first.size() + second.size() + cut.size());
              CHECK(f.attached());
              CHECK(f.counters().partial_discarded == 0);
              blocker.release();
              when(
                  &loop, [&] { return !stream(pipeline, 0).attached(); },
                  [&] {
                    const StreamFeed& f = stream(pipeline, 0);
                    CHECK(f.counters().partial_discarded == 1);
                    CHECK(f.counters().malformed == 1);
                    CHECK(pipeline.merger().stats(f.id()).records_in == 300);
                    pipeline.drain();
                  });
            });
          });
      uv_run(&loop, UV_RUN_DEFAULT);
      CHECK(finished);
    }
    CHECK(slurp(out) == first + second);
  }

  SUBCASE("a feed removed by a reload while its batch is on the pool merges it before it ends") {
    Config config;
    config.key = pool_key;
    config.idle_timeout_ms = 50;
    config.feeds.push_back(unix_listen("sock", sock));
    config.feeds.push_back(unix_listen("other", other));
    config.outputs.push_back(file_output(out));
    Config next = config;
    next.feeds.erase(next.feeds.begin());
    const std::string data = records(0, 100);  // a short read: a block of its own
    {
      Pipeline pipeline(&loop, config, true);
      REQUIRE(pipeline.start());
      PoolBlocker blocker(&loop);
      int producer = connect_to(sock);
      write_all(producer, data);
      bool finished = false;
      pipeline.on_finished([&] {
        finished = true;
        pipeline.close();
      });
      when(
          &loop, [&] { return stream(pipeline, 0).busy(); },
          [&] {
            std::string error;
            CHECK(pipeline.reload(next, error));
            after(&loop, 150, [&] {
              // Draining waits for the batch: the feed has not ended, and
              // its object is still there.
              REQUIRE(pipeline.feeds()[0]);
              CHECK(stream(pipeline, 0).busy());
              CHECK_FALSE(stream(pipeline, 0).ended());
              blocker.release();
              when(
                  &loop, [&] { return !pipeline.feeds()[0]; }, [&] { pipeline.drain(); });
            });
          });
      uv_run(&loop, UV_RUN_DEFAULT);
      CHECK(finished);
      ::close(producer);
    }
    CHECK(slurp(out) == data);
  }

  SUBCASE("a feed stopped with its batch on the pool counts it discarded and outlives it") {
    Config config;
    config.key = pool_key;
    config.idle_timeout_ms = 50;
    config.drain_timeout_ms = 30;
    config.feeds.push_back(unix_listen("sock", sock));
    config.feeds.push_back(unix_listen("other", other));
    config.outputs.push_back(file_output(out));
    Config next = config;
    next.feeds.erase(next.feeds.begin());
    const std::string data = records(0, 400);
    {
      Pipeline pipeline(&loop, config, true);
      REQUIRE(pipeline.start());
      PoolBlocker blocker(&loop);
      int producer = connect_to(sock);
      write_all(producer, data);
      bool finished = false;
      pipeline.on_finished([&] {
        finished = true;
        pipeline.close();
      });
      when(
          &loop, [&] { return stream(pipeline, 0).busy(); },
          [&] {
            std::string error;
            CHECK(pipeline.reload(next, error));
            after(&loop, 200, [&] {
              // Past its drain deadline: stopped, its batch and what the
              // kernel still held counted as discarded, and kept (busy)
              // until the batch is back.
              REQUIRE(pipeline.feeds()[0]);
              const StreamFeed& f = stream(pipeline, 0);
              CHECK(f.ended());
              CHECK(f.busy());
              CHECK(f.counters().discarded_bytes == data.size());
              blocker.release();
              when(
                  &loop, [&] { return !pipeline.feeds()[0]; }, [&] { pipeline.drain(); });
            });
          });
      uv_run(&loop, UV_RUN_DEFAULT);
      CHECK(finished);
      ::close(producer);
    }
    CHECK(slurp(out).empty());
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("StreamFeed frames on the loop thread where the vector scanner reads its lines") {
  if (!RecordParser(KeySpec{}).scans_runs()) {
    MESSAGE("skipped: this CPU has no vector level, so every batch takes the pool");
    return;
  }
  TempDir dir;
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  const std::string sock = (dir.path / "sock").string();
  const std::string out = (dir.path / "out").string();
  Config config;  // key "time": a top-level member
  config.feeds.push_back(unix_listen("sock", sock));
  config.outputs.push_back(file_output(out));
  std::string data;
  // About 90 KiB (full reads, a batch of several): written before the
  // loop runs, it must fit in the socket's buffer.
  for (int64_t time = 0; time < 450; ++time) {
    data += "{\"time\":" + std::to_string(time) + ",\"pad\":\"" + std::string(180, 'x') + "\"}\n";
  }
  {
    Pipeline pipeline(&loop, config, true);
    REQUIRE(pipeline.start());
    // Every pool thread held: a batch sent there would wait, and the feed
    // would be busy(). Framed on the loop thread, the records go through.
    PoolBlocker blocker(&loop);
    int producer = connect_to(sock);
    write_all(producer, data);
    ::shutdown(producer, SHUT_WR);
    bool ever_busy = false;
    bool finished = false;
    pipeline.on_finished([&] {
      finished = true;
      pipeline.close();
    });
    const uint64_t deadline = uv_now(&loop) + 10000;
    std::function<void()> watch = [&] {
      ever_busy |= !pipeline.feeds().empty() && pipeline.feeds()[0] && stream(pipeline, 0).busy();
      const bool through = pipeline.output().records() >= 450;
      if (through || uv_now(&loop) > deadline) {
        CHECK_MESSAGE(through, "the records waited for the blocked pool");
        blocker.release();
        pipeline.drain();
        return;
      }
      after(&loop, 1, watch);
    };
    after(&loop, 1, watch);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(finished);
    CHECK_FALSE(ever_busy);
    ::close(producer);
  }
  CHECK(slurp(out) == data);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}
