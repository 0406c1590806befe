#include "io/loop_support.h"

#include <doctest/doctest.h>
#include <stdlib.h>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace chronomerge::testing {

namespace fs = std::filesystem;

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "chronomerge-test-XXXXXX").string();
  path = mkdtemp(tmpl.data());
}

TempDir::~TempDir() {
  fs::remove_all(path);
}

std::string TempDir::file(const std::string& name, const std::string& content) const {
  std::ofstream(path / name, std::ios::binary) << content;
  return (path / name).string();
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t count_lines(const std::string& text) {
  return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

bool run_to_end(uv_loop_t* loop, Pipeline& pipeline) {
  bool finished = false;
  pipeline.on_finished([&] {
    finished = true;
    pipeline.close();
  });
  REQUIRE(pipeline.start());
  uv_run(loop, UV_RUN_DEFAULT);
  return finished;
}

void after(uv_loop_t* loop, uint64_t ms, std::function<void()> body) {
  auto* timer = new uv_timer_t;
  uv_timer_init(loop, timer);
  timer->data = new std::function<void()>(std::move(body));
  uv_timer_start(
      timer,
      [](uv_timer_t* t) {
        auto* fn = static_cast<std::function<void()>*>(t->data);
        (*fn)();
        delete fn;
        uv_close(reinterpret_cast<uv_handle_t*>(t),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
      },
      ms, 0);
}

namespace {

void look_until(uv_loop_t* loop, const char* what, std::function<bool()> condition,
                std::function<void()> body, uint64_t deadline, uint64_t timeout_ms) {
  after(loop, 1, [=] {
    if (condition()) return body();
    if (uv_now(loop) >= deadline) {
      // As a std::string: doctest prints a const char* as a pointer.
      FAIL_CHECK("timed out after " << timeout_ms << " ms waiting for: " << std::string(what));
      return body();
    }
    look_until(loop, what, condition, body, deadline, timeout_ms);
  });
}

}  // namespace

void when(uv_loop_t* loop, std::function<bool()> condition, std::function<void()> body,
          const char* what, uint64_t timeout_ms) {
  look_until(loop, what, std::move(condition), std::move(body), uv_now(loop) + timeout_ms,
             timeout_ms);
}

FeedConfig file_feed(const std::string& name, const std::string& path) {
  FeedConfig feed;
  feed.name = name;
  feed.type = FeedType::file;
  feed.path = path;
  return feed;
}

FeedConfig simulate_feed(const std::string& name, uint64_t seed) {
  FeedConfig feed;
  feed.name = name;
  feed.type = FeedType::simulate;
  feed.rate = 2000;
  feed.seed = seed;
  return feed;
}

OutputConfig file_output(const std::string& path) {
  OutputConfig out;
  out.name = "archive";
  out.type = OutputType::file;
  out.path = path;
  return out;
}

}  // namespace chronomerge::testing
