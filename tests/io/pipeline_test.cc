// The Pipeline on a real libuv loop: files in, a file out, reload and
// drain. Every case ends by proving the loop closes cleanly.
#include "daemon/pipeline.h"

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "daemon/one_shot.h"
#include "feeds/exec_feed.h"
#include "feeds/file_feed.h"
#include "io/loop_support.h"
#include "sinks/file_writer.h"
#include "sinks/stream_writer.h"

using namespace chronomerge;
using namespace chronomerge::testing;
namespace fs = std::filesystem;

TEST_CASE("Pipeline on a loop") {
  TempDir dir;
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);

  SUBCASE("merges two files into a file output and finishes") {
    Config config;
    config.feeds.push_back(file_feed("a", dir.file("a", "{\"time\":1}\n{\"time\":3}\nnot json\n")));
    config.feeds.push_back(file_feed("b", dir.file("b", "{\"time\":2}\n{\"time\":3,\"b\":1}")));
    std::string out = (dir.path / "out").string();
    config.outputs.push_back(file_output(out));
    {
      Pipeline pipeline(&loop, config, false);
      CHECK(run_to_end(&loop, pipeline));
      CHECK(pipeline.feeds()[0]->counters().malformed == 1);
    }
    CHECK(slurp(out) == "{\"time\":1}\n{\"time\":2}\n{\"time\":3}\n{\"time\":3,\"b\":1}\n");
  }

  SUBCASE("a missing input file fails that feed only and is reported") {
    Config config;
    config.feeds.push_back(file_feed("gone", (dir.path / "missing").string()));
    config.feeds.push_back(file_feed("b", dir.file("b", "{\"time\":2}\n")));
    std::string out = (dir.path / "out").string();
    config.outputs.push_back(file_output(out));
    {
      Pipeline pipeline(&loop, config, false);
      run_to_end(&loop, pipeline);
      CHECK(pipeline.feeds()[0]->counters().io_error);
    }
    CHECK(slurp(out) == "{\"time\":2}\n");
  }

  SUBCASE("drain writes everything that was read, then finishes") {
    Config config;
    config.feeds.push_back(simulate_feed("s1", 1));
    config.feeds.push_back(simulate_feed("s2", 2));
    std::string out = (dir.path / "out").string();
    config.outputs.push_back(file_output(out));
    uint64_t records_in = 0;
    {
      Pipeline pipeline(&loop, config, true);
      bool finished = false;
      pipeline.on_finished([&] {
        finished = true;
        pipeline.close();
      });
      REQUIRE(pipeline.start());
      after(&loop, 150, [&] { pipeline.drain(); });
      uv_run(&loop, UV_RUN_DEFAULT);
      CHECK(finished);
      for (const auto& feed : pipeline.feeds()) {
        records_in += pipeline.merger().stats(feed->id()).records_in;
      }
    }
    CHECK(records_in > 0);
    CHECK(count_lines(slurp(out)) == records_in);
  }

  SUBCASE("reload keeps unchanged parts, ends removed feeds and starts new ones") {
    Config config;
    config.idle_timeout_ms = 50;
    config.feeds.push_back(simulate_feed("keep", 1));
    config.feeds.push_back(simulate_feed("drop", 2));
    config.feeds.push_back(simulate_feed("change", 3));
    config.outputs.push_back(file_output((dir.path / "out").string()));
    Config next = config;
    next.feeds.erase(next.feeds.begin() + 1);  // drop "drop"
    next.feeds[1].rate = 1000;                 // change "change"
    next.feeds.push_back(simulate_feed("new", 4));
    {
      Pipeline pipeline(&loop, config, true);
      REQUIRE(pipeline.start());
      const Sink* sink_before = pipeline.sinks()[0].get();
      const Feed* keep_before = pipeline.feeds()[0].get();
      after(&loop, 50, [&] {
        std::string error;
        CHECK(pipeline.reload(next, error));
        CHECK(error.empty());
      });
      // Removed ("drop") and restarted ("change", new seed): ended,
      // drained and freed, their slots free for the next feeds.
      when(
          &loop,
          [&] {
            const auto& feeds = pipeline.feeds();
            return feeds.size() == 5 && !feeds[1] && !feeds[2] && feeds[4] &&
                   pipeline.merger().stats(feeds[4]->id()).records_in > 0;
          },
          [&] {
            const auto& feeds = pipeline.feeds();
            CHECK(feeds.size() == 5);
            if (feeds.size() != 5) return pipeline.close();
            CHECK(feeds[0].get() == keep_before);
            CHECK_FALSE(feeds[0]->removed());
            CHECK_FALSE(feeds[1]);
            CHECK_FALSE(feeds[2]);
            CHECK(pipeline.merger().feeds_in_use() == 3);
            CHECK(pipeline.retired_feeds().count("change") == 1);
            CHECK(pipeline.retired_feeds().count("drop") == 0);  // no longer configured
            CHECK(feeds[3]->name() == "change");
            CHECK(feeds[4]->name() == "new");
            CHECK(pipeline.merger().stats(feeds[4]->id()).records_in > 0);
            CHECK(pipeline.sinks()[0].get() == sink_before);
            pipeline.close();
          },
          "the removed and the restarted feed to retire");
      uv_run(&loop, UV_RUN_DEFAULT);
    }
  }

  SUBCASE("reload refuses changes that need a restart and changes nothing") {
    Config config;
    config.feeds.push_back(simulate_feed("s1", 1));
    config.outputs.push_back(file_output((dir.path / "out").string()));
    Config next = config;
    next.key = "ts";
    next.feeds.push_back(simulate_feed("s2", 2));
    {
      Pipeline pipeline(&loop, config, true);
      REQUIRE(pipeline.start());
      std::string error;
      CHECK_FALSE(pipeline.reload(next, error));
      CHECK(error.find("restart") != std::string::npos);
      CHECK(pipeline.feeds().size() == 1);
      CHECK(pipeline.config().key == "time");
      pipeline.close();
      uv_run(&loop, UV_RUN_DEFAULT);
    }
  }

  SUBCASE("follow keeps reading appended data and survives truncation and rotation") {
    std::string log_path = dir.file("live.ndjson", "{\"time\":1}\n");
    Config config;
    FeedConfig feed = file_feed("live", log_path);
    feed.follow = true;
    config.feeds.push_back(feed);
    std::string out = (dir.path / "out").string();
    config.outputs.push_back(file_output(out));
    auto append = [&](const std::string& text) { std::ofstream(log_path, std::ios::app) << text; };
    {
      Pipeline pipeline(&loop, config, true);
      REQUIRE(pipeline.start());
      // Each step comes once the output shows the one before it, and
      // after the 200 ms poll interval: a step taken before the feed saw
      // the last one would test something else (a truncation unseen).
      auto once_out_has = [&](size_t lines, std::function<void()> step) {
        after(&loop, 250, [&, lines, step] {
          when(
              &loop, [&, lines] { return count_lines(slurp(out)) == lines; }, step,
              "the output to catch up");
        });
      };
      once_out_has(1, [&] {
        append("{\"time\":2}\n{\"ti");
        once_out_has(2, [&] {
          append("me\":3}\n");
          once_out_has(3, [&] {
            // copytruncate-style rotation
            std::ofstream(log_path, std::ios::trunc) << "{\"time\":4}\n";
            once_out_has(4, [&] {
              // rename-style rotation: a new file appears at the path
              fs::rename(log_path, log_path + ".1");
              std::ofstream(log_path) << "{\"time\":5}\n";
              once_out_has(5, [&] { pipeline.drain(); });
            });
          });
        });
      });
      pipeline.on_finished([&] { pipeline.close(); });
      uv_run(&loop, UV_RUN_DEFAULT);
    }
    CHECK(slurp(out) == "{\"time\":1}\n{\"time\":2}\n{\"time\":3}\n{\"time\":4}\n{\"time\":5}\n");
  }

  SUBCASE("heartbeats release the merge without being forwarded") {
    Config config;
    config.idle_timeout_ms = 60000;
    FeedConfig a = file_feed("a", dir.file("a", ""));
    a.follow = true;  // live, never ends, never idles in this test
    a.heartbeat_field = "hb";
    config.feeds.push_back(a);
    FeedConfig b = file_feed("b", dir.file("b", "{\"time\":5}\n{\"time\":20}\n"));
    b.follow = true;
    config.feeds.push_back(b);
    std::string out = (dir.path / "out").string();
    config.outputs.push_back(file_output(out));
    {
      Pipeline pipeline(&loop, config, true);
      REQUIRE(pipeline.start());
      after(&loop, 300, [&] {
        CHECK(slurp(out).empty());  // a is waiting: nothing may pass
        std::ofstream(a.path, std::ios::app) << "{\"time\":10,\"hb\":true}\n";
      });
      after(&loop, 300, [&] {
        when(
            &loop, [&] { return !slurp(out).empty(); },
            [&] {
              CHECK(slurp(out) == "{\"time\":5}\n");
              pipeline.close();
            },
            "the record the heartbeat released");
      });
      uv_run(&loop, UV_RUN_DEFAULT);
    }
  }

  SUBCASE("the merge finishes only once the dead-letter file has everything") {
    // 5000 records going backwards: every one is late and dead-lettered.
    std::string input = "{\"time\":100000}\n";
    for (int t = 1; t <= 5000; ++t) input += "{\"time\":" + std::to_string(t) + "}\n";
    Config config;
    config.late = LatePolicy::deadletter;
    config.deadletter = DeadletterConfig{(dir.path / "dead").string()};
    config.feeds.push_back(file_feed("a", dir.file("a", input)));
    std::string out = (dir.path / "out").string();
    config.outputs.push_back(file_output(out));
    {
      Pipeline pipeline(&loop, config, false);
      pipeline.on_finished([&] {
        // What the daemon does at this point: close everything.
        CHECK(count_lines(slurp((dir.path / "dead").string())) == 5000);
        pipeline.close();
      });
      REQUIRE(pipeline.start());
      uv_run(&loop, UV_RUN_DEFAULT);
    }
    CHECK(slurp(out) == "{\"time\":100000}\n");
    CHECK(count_lines(slurp((dir.path / "dead").string())) == 5000);
  }

  SUBCASE("an exec feed merges its program's standard output") {
    Config config;
    FeedConfig run;
    run.name = "run";
    run.type = FeedType::exec;
    run.command = {"/bin/sh", "-c",
                   "echo '{\"time\":1}'; echo 'a warning' >&2; echo 'not json'; "
                   "printf '{\"time\":3}'"};
    config.feeds.push_back(run);
    config.feeds.push_back(file_feed("b", dir.file("b", "{\"time\":2}\n")));
    std::string out = (dir.path / "out").string();
    config.outputs.push_back(file_output(out));
    {
      Pipeline pipeline(&loop, config, false);
      run_to_end(&loop, pipeline);
      CHECK(pipeline.feeds()[0]->counters().malformed == 1);
    }
    // The cut last line of a program's output counts, as in a file.
    CHECK(slurp(out) == "{\"time\":1}\n{\"time\":2}\n{\"time\":3}\n");
  }

  SUBCASE("a reload stops the program of a changed exec feed and reaps it") {
    // The first program ignores SIGTERM: it must get SIGKILL, and then be
    // reaped rather than left a zombie.
    auto children = [] {
      std::ifstream in("/proc/self/task/" + std::to_string(::gettid()) + "/children");
      std::vector<std::string> pids;
      for (std::string pid; in >> pid;) pids.push_back(pid);
      return pids;
    };
    Config config;
    config.idle_timeout_ms = 100;
    FeedConfig run;
    run.name = "run";
    run.type = FeedType::exec;
    run.command = {"/bin/sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"};
    config.feeds.push_back(run);
    config.outputs.push_back(file_output((dir.path / "out").string()));
    Config next = config;
    next.feeds[0].command = {"/bin/sh", "-c", "exec sleep 30"};
    std::string first;
    {
      Pipeline pipeline(&loop, config, true);
      REQUIRE(pipeline.start());
      after(&loop, 200, [&] {
        auto pids = children();
        REQUIRE(pids.size() == 1);
        first = pids[0];
        std::string error;
        CHECK(pipeline.reload(next, error));
      });
      // Not before its grace period is over; then killed and reaped.
      after(&loop, 200 + ExecFeed::kill_grace_ms, [&] {
        when(
            &loop, [&] { return !fs::exists("/proc/" + first) && children().size() == 1; },
            [&] {
              CHECK_FALSE(fs::exists("/proc/" + first));
              auto pids = children();
              CHECK(pids.size() == 1);  // the new program
              CHECK(std::find(pids.begin(), pids.end(), first) == pids.end());
              pipeline.close();
            },
            "the first program to be killed and reaped");
      });
      uv_run(&loop, UV_RUN_DEFAULT);
    }
    CHECK(children().empty());  // the second program ended with the pipeline
  }

  SUBCASE("a feed that ends while starting ends only itself, not the merge") {
    // The program cannot run: that feed ends inside start(), before the
    // file feed is added. The daemon (this process) must not be signalled.
    Config config;
    FeedConfig missing;
    missing.name = "missing";
    missing.type = FeedType::exec;
    missing.command = {(dir.path / "no-such-program").string()};
    config.feeds.push_back(missing);
    config.feeds.push_back(file_feed("b", dir.file("b", "{\"time\":1}\n{\"time\":2}\n")));
    std::string out = (dir.path / "out").string();
    config.outputs.push_back(file_output(out));
    {
      Pipeline pipeline(&loop, config, false);
      CHECK(run_to_end(&loop, pipeline));
      CHECK(pipeline.feeds()[0]->counters().io_error);
    }
    CHECK(slurp(out) == "{\"time\":1}\n{\"time\":2}\n");
  }

  SUBCASE("a reload that restarts every feed keeps the output open") {
    // Two followed files with nothing queued: once both are removed, only
    // the reload's own feeds keep the merge (and the output) from ending.
    Config config;
    config.idle_timeout_ms = 60000;  // both records are merged in order
    for (std::string name : {"a", "b"}) {
      FeedConfig feed = file_feed(name, dir.file(name));
      feed.follow = true;
      config.feeds.push_back(feed);
    }
    std::string out = (dir.path / "out").string();
    config.outputs.push_back(file_output(out));
    Config next = config;
    next.idle_timeout_ms = 60001;  // a global: every feed changes
    {
      Pipeline pipeline(&loop, config, true);
      REQUIRE(pipeline.start());
      after(&loop, 50, [&] {
        std::string error;
        CHECK(pipeline.reload(next, error));
        CHECK_FALSE(pipeline.output().ended());
        std::ofstream(config.feeds[0].path, std::ios::app) << "{\"time\":1}\n";
        std::ofstream(config.feeds[1].path, std::ios::app) << "{\"time\":2}\n";
      });
      after(&loop, 700, [&] {
        CHECK_FALSE(pipeline.output().ended());
        pipeline.drain();
      });
      pipeline.on_finished([&] { pipeline.close(); });
      uv_run(&loop, UV_RUN_DEFAULT);
    }
    CHECK(slurp(out) == "{\"time\":1}\n{\"time\":2}\n");
  }

  SUBCASE("a feed that cannot start on reload is left out and retried by the next one") {
    // Its port is taken; the merge must not wait for it.
    int taken = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(taken >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t size = sizeof addr;
    REQUIRE(::bind(taken, reinterpret_cast<sockaddr*>(&addr), size) == 0);
    REQUIRE(::listen(taken, 1) == 0);
    REQUIRE(::getsockname(taken, reinterpret_cast<sockaddr*>(&addr), &size) == 0);
    const uint16_t port = ntohs(addr.sin_port);

    Config config;
    config.idle_timeout_ms = 60000;  // a waiting feed would hold the merge
    config.feeds.push_back(simulate_feed("s1", 1));
    std::string out = (dir.path / "out").string();
    config.outputs.push_back(file_output(out));
    Config next = config;
    FeedConfig tcp;
    tcp.name = "tcp";
    tcp.type = FeedType::tcp_listen;
    tcp.address = HostPort{"127.0.0.1", port};
    next.feeds.push_back(tcp);
    {
      Pipeline pipeline(&loop, config, true);
      REQUIRE(pipeline.start());
      uint64_t emitted_at_reload = 0;
      after(&loop, 50, [&] {
        std::string error;
        CHECK_FALSE(pipeline.reload(next, error));
        CHECK(error.find("tcp") != std::string::npos);
        REQUIRE(pipeline.feeds().size() == 2);
        CHECK(pipeline.feeds()[1]->removed());
        emitted_at_reload = pipeline.output().records();
        ::close(taken);
      });
      // The failed instance is freed, and the simulator's records still flow.
      when(
          &loop,
          [&] {
            return pipeline.feeds().size() == 2 && !pipeline.feeds()[1] &&
                   pipeline.output().records() > emitted_at_reload;
          },
          [&] {
            CHECK(pipeline.output().records() > emitted_at_reload);
            std::string error;
            CHECK(pipeline.reload(next, error));
            // The new instance took the freed slot.
            CHECK(pipeline.feeds().size() == 2);
            if (pipeline.feeds().size() == 2 && pipeline.feeds()[1]) {
              CHECK(pipeline.feeds()[1]->name() == "tcp");
              CHECK_FALSE(pipeline.feeds()[1]->removed());
            } else {
              FAIL_CHECK("no feed in the freed slot");
            }
            pipeline.close();
          },
          "the failed feed to be freed while records flow");
      uv_run(&loop, UV_RUN_DEFAULT);
    }
  }

  // Every handle was closed: the loop has nothing left.
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("one_shot_config shares its memory budget among the files in whole reads") {
  for (size_t files : {1, 2, 4, 8, 16, 100, 999, 1000, 1001, 5000}) {
    CAPTURE(files);
    OneShotOptions options;
    options.files.assign(files, "in.ndjson");
    const Config config = one_shot_config(options);
    REQUIRE(config.feeds.size() == files);
    const size_t high = config.feeds[0].high_water_mark.value();
    // A mark a little past two reads would let a third block in for each
    // of a thousand files.
    CHECK(high % FileFeed::min_read_bytes == 0);
    CHECK(high >= 2 * FileFeed::min_read_bytes);
    CHECK(high <= size_t{1} << 20);
    CHECK(config.feeds[0].low_water_mark.value() < high);
    // 4 MiB in all, unless each file's floor of two reads is more; up to
    // four files get the most one feed may have.
    CHECK(high * files <= std::max<size_t>(4 << 20, files * 2 * FileFeed::min_read_bytes));
    if (files <= 4) CHECK(high == size_t{1} << 20);
    // Standard output's writer has room for a second batch while one is
    // written: the merge does not stop for every write.
    CHECK(config.output_high_water_mark >= 2 * FileWriter::max_batch_bytes);
    CHECK(config.output_high_water_mark >= 2 * StreamWriter::max_batch_bytes);
  }
}
