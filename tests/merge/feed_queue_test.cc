#include "merge/feed_queue.h"

#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

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

TEST_CASE("FeedQueue storage") {
  FeedQueue queue(1 << 20, 1 << 10);
  auto parsed = [](int64_t k, std::string text = {}) {
    ParsedRecord p;
    p.key = text.empty() ? Key::from_integer(k) : Key::from_string(std::move(text));
    p.key_offset = 0;
    p.key_length = 1;
    return p;
  };
  SUBCASE("keeps string keys with their records across ring growth") {
    queue.push("i0", parsed(7));  // before any text: texts are not stored yet
    for (int i = 0; i < 100; ++i) {
      queue.push("s" + std::to_string(i), parsed(0, "k" + std::to_string(i)));
    }
    queue.push("i1", parsed(8));
    CHECK(queue.front().key == Key::from_integer(7));
    CHECK(queue.front_text().empty());
    queue.pop();
    for (int i = 0; i < 100; ++i) {
      REQUIRE(queue.front_bytes() == "s" + std::to_string(i));
      CHECK(queue.front().key == Key::from_string("k" + std::to_string(i)));
      CHECK(queue.front_text() == "k" + std::to_string(i));
      queue.pop();
    }
    CHECK(queue.front().key == Key::from_integer(8));
    CHECK(queue.front_text().empty());
  }
  SUBCASE("a zero-copy run points into its block and holds it until its last record is popped") {
    auto block = std::make_shared<std::string>("aa\nbbb\ncccc\n");
    std::vector<BlockRecord> run;
    run.push_back({std::string_view(*block).substr(0, 2), parsed(1)});
    run.push_back({std::string_view(*block).substr(3, 3), parsed(2)});
    run.push_back({std::string_view(*block).substr(7, 4), parsed(3)});
    queue.push(run, block);
    CHECK(block.use_count() == 2);  // ours and the queue's, one for the run
    CHECK(queue.size() == 3);
    CHECK(queue.bytes() == 9);
    CHECK(queue.front_bytes().data() == block->data());  // not a copy
    CHECK(queue.front_key_text() == "a");
    queue.pop();
    queue.pop();
    CHECK(block.use_count() == 2);
    CHECK(queue.front_bytes() == "cccc");
    queue.pop();
    CHECK(block.use_count() == 1);
    CHECK(queue.empty());
  }
  SUBCASE("copies and blocks interleave in arrival order") {
    auto first = std::make_shared<std::string>("one");
    auto second = std::make_shared<std::string>("three");
    std::vector<BlockRecord> a{{*first, parsed(1)}};
    std::vector<BlockRecord> b{{*second, parsed(3)}};
    queue.push(a, first);
    queue.push("two", parsed(2));
    queue.push(b, second);
    CHECK(queue.front_bytes() == "one");
    queue.pop();
    CHECK(first.use_count() == 1);
    CHECK(queue.front_bytes() == "two");
    queue.pop();
    CHECK(queue.front_bytes() == "three");
    CHECK(queue.front().key == Key::from_integer(3));
    queue.pop();
    CHECK(second.use_count() == 1);
  }
  SUBCASE("records longer than a copy block are kept whole") {
    std::string big(200 << 10, 'x');
    queue.push("small", parsed(1));
    queue.push(big, parsed(2));
    queue.push("after", parsed(3));
    queue.pop();
    CHECK(queue.front_bytes() == big);
    queue.pop();
    CHECK(queue.front_bytes() == "after");
    queue.pop();
    queue.push(big, parsed(4));  // an empty queue starts over
    CHECK(queue.front_bytes() == big);
  }
}
