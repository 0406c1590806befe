#include "output/output.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace chronomerge;

namespace {
std::string read_all(Output& output, Output::SubscriberId sub, size_t max = SIZE_MAX) {
  std::vector<Output::Slice> slices;
  size_t n = output.peek(sub, slices, max);
  std::string out;
  for (auto& s : slices) out += s.bytes;
  CHECK(out.size() == n);
  return out;
}
}  // namespace

TEST_CASE("Output high-water mark") {
  Output output(20, 8);  // small chunks: records span several
  auto sub = output.subscribe(SIZE_MAX, true, nullptr);
  int demands = 0;
  output.set_demand_callback([&] { ++demands; });

  SUBCASE("push() turns false exactly when the buffer reaches the mark") {
    CHECK(output.push("123456789"));  // 10 bytes with '\n'
    CHECK(output.push("12345678"));   // 19
    CHECK_FALSE(output.push(""));     // 20: at the mark
    CHECK(output.full());
  }
  SUBCASE("the demand callback runs once the subscriber drains under the mark") {
    output.push("123456789");
    output.push("123456789");
    CHECK(output.full());
    output.consume(sub, 0);
    CHECK(demands == 0);
    output.consume(sub, 1);
    CHECK_FALSE(output.full());
    CHECK(demands == 1);
    output.consume(sub, 5);
    CHECK(demands == 1);  // only on the full -> not full edge
  }
  SUBCASE("a subscriber sees every byte in order across chunks") {
    std::string expected;
    for (int i = 0; i < 10; ++i) {
      std::string r = "record-" + std::to_string(i);
      output.push(r);
      expected += r + "\n";
      std::string got = read_all(output, sub);
      output.consume(sub, got.size());
      CHECK(expected.ends_with(got));
    }
    CHECK(output.records() == 10);
  }
  SUBCASE("peek honours max_bytes but always returns something") {
    output.push("abcdefghijklmnop");
    std::vector<Output::Slice> slices;
    CHECK(output.peek(sub, slices, 1) == 8);
  }
}

TEST_CASE("Output fan-out") {
  Output output(1000, 16);
  auto fast = output.subscribe(SIZE_MAX, true, nullptr);
  auto slow = output.subscribe(50, true, nullptr);

  SUBCASE("the slowest blocking subscriber governs") {
    for (int i = 0; i < 4; ++i) output.push("0123456789");  // 44 bytes
    CHECK_FALSE(output.full());
    output.consume(fast, output.lag(fast));
    output.push("0123456789");  // slow lags 55 >= 50
    CHECK(output.full());
    output.consume(slow, 10);
    CHECK_FALSE(output.full());
  }
  SUBCASE("a late subscriber starts at the current head, on a record boundary") {
    output.push("first");
    auto late = output.subscribe(SIZE_MAX, true, nullptr);
    output.push("second");
    CHECK(read_all(output, late) == "second\n");
    CHECK(read_all(output, fast) == "first\nsecond\n");
  }
  SUBCASE("memory is released once every subscriber has taken it") {
    for (int i = 0; i < 10; ++i) output.push("0123456789");
    CHECK(output.buffered_bytes() >= 110);
    output.consume(fast, output.lag(fast));
    CHECK(output.buffered_bytes() >= 110);
    output.consume(slow, output.lag(slow));
    CHECK(output.buffered_bytes() < 16);
  }
  SUBCASE("unsubscribing the slow one restarts the belt") {
    int demands = 0;
    output.set_demand_callback([&] { ++demands; });
    for (int i = 0; i < 5; ++i) output.push("0123456789");
    output.consume(fast, output.lag(fast));
    CHECK(output.full());
    output.unsubscribe(slow);
    CHECK(demands == 1);
    CHECK_FALSE(output.full());
  }
  SUBCASE("in-flight slices outlive trimming") {
    output.push("keep me");
    std::vector<Output::Slice> slices;
    output.peek(fast, slices, SIZE_MAX);
    output.unsubscribe(fast);
    output.unsubscribe(slow);
    for (int i = 0; i < 10; ++i) output.push("0123456789");
    CHECK(slices[0].bytes.substr(0, 7) == "keep me");
  }
}

TEST_CASE("Output non-blocking subscribers") {
  Output output(30, 16);
  auto blocking = output.subscribe(SIZE_MAX, true, nullptr);
  auto dropper = output.subscribe(25, false, nullptr);
  SUBCASE("do not hold the others back and are marked overflowed past max_buffer") {
    output.push("0123456789");
    output.push("0123456789");
    CHECK_FALSE(output.overflowed(dropper));
    output.consume(blocking, output.lag(blocking));
    output.push("0123456789");  // dropper lags 33 > 25
    CHECK(output.overflowed(dropper));
    CHECK_FALSE(output.full());
    std::vector<Output::Slice> slices;
    CHECK(output.peek(dropper, slices, SIZE_MAX) == 0);
  }
}

TEST_CASE("Output paced by the fastest non-blocking subscriber") {
  Output output(1000, 16);
  auto fast = output.subscribe(40, false, nullptr);
  auto slow = output.subscribe(40, false, nullptr);
  SUBCASE("stops the merge when even the fastest is half its max_buffer behind") {
    CHECK(output.push("0123456789"));       // 11 behind
    CHECK_FALSE(output.push("012345678"));  // 21 >= 20
    output.consume(fast, 21);
    CHECK_FALSE(output.full());
  }
  SUBCASE("drops the slow one while the fast one keeps up, never the fast one") {
    for (int i = 0; i < 20; ++i) {
      output.push("0123456789");
      output.consume(fast, output.lag(fast));
    }
    CHECK(output.overflowed(slow));
    CHECK_FALSE(output.overflowed(fast));
    CHECK_FALSE(output.full());
  }
}

TEST_CASE("Output without subscribers discards") {
  Output output(10, 16);
  for (int i = 0; i < 100; ++i) CHECK(output.push("0123456789"));
  CHECK(output.buffered_bytes() <= 16);
  int notified = 0;
  auto sub = output.subscribe(SIZE_MAX, true, [&] { ++notified; });
  output.flush();
  CHECK(notified == 0);
  output.push("x");
  output.flush();
  CHECK(notified == 1);
  CHECK(output.lag(sub) == 2);
}
