#include "merge/feed_queue.h"

#include <doctest/doctest.h>

#include <string>

using namespace chronomerge;

TEST_CASE("FeedQueue") {
  FeedQueue queue(100, 20);
  auto parsed = [](int64_t k) {
    ParsedRecord p;
    p.key = Key::from_integer(k);
    p.key_offset = 1;
    p.key_length = 2;
    return p;
  };
  SUBCASE("keeps records in arrival order with their bytes and key text") {
    queue.push("a12b", parsed(1));
    queue.push("c34d", parsed(2));
    CHECK(queue.size() == 2);
    CHECK(queue.bytes() == 8);
    CHECK(queue.front_bytes() == "a12b");
    CHECK(queue.front_key_text() == "12");
    queue.pop();
    CHECK(queue.front_bytes() == "c34d");
    CHECK(queue.front().key == Key::from_integer(2));
    queue.pop();
    CHECK(queue.empty());
    CHECK(queue.bytes() == 0);
  }
  SUBCASE("reports the water marks") {
    CHECK(queue.at_or_below_low());
    queue.push(std::string(99, 'x'), parsed(1));
    CHECK_FALSE(queue.at_or_above_high());
    queue.push("y", parsed(2));
    CHECK(queue.at_or_above_high());
    queue.pop();
    CHECK(queue.at_or_below_low());
  }
  SUBCASE("compaction keeps long-running queues intact") {
    for (int i = 0; i < 10000; ++i) {
      queue.push(std::to_string(i), parsed(i));
      if (i % 3 != 0) {
        queue.pop();
      }
    }
    // 10000 pushes, 6666 pops: the remaining fronts are consecutive.
    std::string first(queue.front_bytes());
    size_t n = queue.size();
    CHECK(n == 3334);
    int expected = std::stoi(first);
    while (!queue.empty()) {
      CHECK(queue.front_bytes() == std::to_string(expected));
      CHECK(queue.front().key == Key::from_integer(expected));
      ++expected;
      queue.pop();
    }
  }
}
