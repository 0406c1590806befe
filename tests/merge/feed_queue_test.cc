#include "merge/feed_queue.h"

#include <doctest/doctest.h>

#include <cstring>
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
    // Memory is the records' bytes and a ring slot for each (copies).
    const size_t slot = FeedQueue::slot_bytes;
    CHECK(queue.at_or_below_low());
    queue.push(std::string(99 - slot, 'x'), parsed(1));
    CHECK(queue.memory() == 99);
    CHECK_FALSE(queue.at_or_above_high());
    queue.push("y", parsed(2));
    CHECK(queue.at_or_above_high());
    queue.pop();
    CHECK(queue.memory() == 1 + slot);
    CHECK_FALSE(queue.at_or_below_low());
    queue.pop();
    CHECK(queue.at_or_below_low());
  }
  SUBCASE("a ring slot counts for every queued record, however short") {
    // 10,000 records of one byte pin 10,000 slots: the marks see them.
    FeedQueue many(64 << 10, 16 << 10);
    size_t n = 0;
    while (!many.at_or_above_high()) many.push("x", parsed(static_cast<int64_t>(n++)));
    CHECK(n == (64 << 10) / (1 + FeedQueue::slot_bytes) + 1);
    CHECK(many.bytes() == n);
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
  SUBCASE("a ring grown for a burst is given back once later spells are far smaller") {
    // A backlog of 600 records (a producer catching up), then a record at
    // a time, with string keys so that the key texts shrink with the ring.
    for (int i = 0; i < 600; ++i) queue.push("b", parsed(0, "k" + std::to_string(i)));
    CHECK(queue.ring_slots() == 1024);
    while (!queue.empty()) queue.pop();
    CHECK(queue.ring_slots() == 1024);  // it may be the feed's usual burst
    std::vector<size_t> slots;
    for (int i = 0; i < 12; ++i) {
      queue.push("r", parsed(0, "t" + std::to_string(i)));
      CHECK(queue.front_text() == "t" + std::to_string(i));
      queue.pop();
      slots.push_back(queue.ring_slots());
    }
    CHECK(slots.front() == 1024);  // not at the first quiet record
    CHECK(slots.back() == FeedQueue::min_ring_slots);
    // What comes after a shrink is stored and read as before.
    for (int i = 0; i < 40; ++i) queue.push("x" + std::to_string(i), parsed(0, std::to_string(i)));
    for (int i = 0; i < 40; ++i) {
      REQUIRE(queue.front_bytes() == "x" + std::to_string(i));
      CHECK(queue.front_text() == std::to_string(i));
      queue.pop();
    }
  }
  SUBCASE("a queue that drains between bursts of one size keeps its ring") {
    for (int burst = 0; burst < 20; ++burst) {
      for (int i = 0; i < 600; ++i) queue.push("b", parsed(i));
      while (!queue.empty()) queue.pop();
      CHECK(queue.ring_slots() == 1024);
    }
  }
  SUBCASE("a zero-copy run points into its block and holds it until its last record is popped") {
    auto block = std::make_shared<std::string>("aa\nbbb\ncccc\n");
    std::vector<BlockRecord> run;
    run.push_back({std::string_view(*block).substr(0, 2), parsed(1)});
    run.push_back({std::string_view(*block).substr(3, 3), parsed(2)});
    run.push_back({std::string_view(*block).substr(7, 4), parsed(3)});
    queue.push({run, block});
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
  SUBCASE("a run that wraps around the ring keeps its order") {
    for (int i = 0; i < 10; ++i) queue.push("x", parsed(i));
    for (int i = 0; i < 10; ++i) queue.pop();
    REQUIRE(queue.ring_slots() == FeedQueue::min_ring_slots);  // the next record goes to slot 10
    auto block = std::make_shared<std::string>("abcdefghijkl");
    std::vector<BlockRecord> run;
    for (size_t i = 0; i < 12; ++i) {
      run.emplace_back(std::string_view(*block).substr(i, 1), parsed(static_cast<int64_t>(i)));
    }
    queue.push({run, block});
    for (size_t i = 0; i < 12; ++i) {
      REQUIRE_FALSE(queue.empty());
      CHECK(queue.front_bytes() == block->substr(i, 1));
      CHECK(queue.front().key == Key::from_integer(static_cast<int64_t>(i)));
      queue.pop();
    }
    CHECK(queue.empty());
  }
  SUBCASE("a run's key texts go with its records, and a run without texts has none") {
    auto block = std::make_shared<std::string>("ab");
    std::vector<BlockRecord> keyed{{std::string_view(*block).substr(0, 1), parsed(0)},
                                   {std::string_view(*block).substr(1, 1), parsed(0)}};
    std::vector<std::string> texts{"k1", "k2"};
    queue.push({keyed, block, texts});
    std::vector<BlockRecord> plain{{std::string_view(*block).substr(0, 1), parsed(0)}};
    queue.push({plain, block});
    CHECK(queue.front().key == Key::from_string("k1"));
    queue.pop();
    CHECK(queue.front_text() == "k2");
    queue.pop();
    CHECK(queue.front_text().empty());
    queue.pop();
    // The ring's slots are reused, those that held "k1" and "k2" too: a
    // text left in one must not show.
    for (size_t i = 0; i < 2 * FeedQueue::min_ring_slots; ++i) {
      queue.push({plain, block});
      CHECK(queue.front_text().empty());
      queue.pop();
    }
  }
  SUBCASE("copies and blocks interleave in arrival order") {
    auto first = std::make_shared<std::string>("one");
    auto second = std::make_shared<std::string>("three");
    std::vector<BlockRecord> a{{*first, parsed(1)}};
    std::vector<BlockRecord> b{{*second, parsed(3)}};
    queue.push({a, first});
    queue.push("two", parsed(2));
    queue.push({b, second});
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

TEST_CASE("FeedQueue memory") {
  FeedQueue queue(256 << 10, 64 << 10);
  auto parsed = [](int64_t k) {
    ParsedRecord p;
    p.key = Key::from_integer(k);
    p.key_offset = 0;
    p.key_length = 1;
    return p;
  };
  // A block of `capacity` bytes holding `count` records of `length` bytes.
  struct Block {
    std::shared_ptr<RecordBlock> block;
    std::vector<BlockRecord> records;
  };
  auto make_block = [&](size_t capacity, size_t count, size_t length, int64_t first_key) {
    Block b{std::make_shared<RecordBlock>(capacity), {}};
    std::memset(b.block->data.get(), 'x', capacity);
    for (size_t i = 0; i < count; ++i) {
      char* at = b.block->data.get() + i * length;
      at[0] = static_cast<char>('a' + i % 26);
      b.records.push_back(
          {std::string_view(at, length), parsed(first_key + static_cast<int64_t>(i))});
    }
    return b;
  };
  // What each queued record's ring slot adds to memory().
  const size_t slot = FeedQueue::slot_bytes;

  SUBCASE("a block of known size counts with all its bytes until its last record is popped") {
    Block b = make_block(2048, 4, 100, 1);
    queue.push({b.records, BlockOwner(b.block, b.block->capacity)});
    CHECK(queue.bytes() == 400);
    CHECK(queue.memory() == 2048 + 4 * slot);
    queue.pop();
    queue.pop();
    queue.pop();
    CHECK(queue.memory() == 2048 + slot);  // too small to be worth copying out
    queue.pop();
    CHECK(queue.memory() == 0);
    CHECK(b.block.use_count() == 1);
  }
  SUBCASE("the water marks compare memory, not record bytes") {
    for (int i = 0; i < 3; ++i) {
      Block b = make_block(64 << 10, 1, 100, i);
      queue.push({b.records, BlockOwner(b.block, b.block->capacity)});
      CHECK_FALSE(queue.at_or_above_high());
    }
    Block b = make_block(64 << 10, 1, 100, 3);
    queue.push({b.records, BlockOwner(b.block, b.block->capacity)});
    CHECK(queue.bytes() == 400);
    CHECK(queue.at_or_above_high());
    queue.pop();
    queue.pop();
    CHECK_FALSE(queue.at_or_below_low());
    queue.pop();
    CHECK(queue.at_or_below_low());
  }
  SUBCASE("a block pushed in several runs counts once") {
    Block b = make_block(2048, 4, 100, 1);
    std::span<BlockRecord> all(b.records);
    BlockOwner owner(b.block, b.block->capacity);
    queue.push({all.subspan(0, 2), owner});
    queue.push("copied", parsed(3));  // a line that spanned two reads
    queue.push({all.subspan(2), owner});
    CHECK(queue.memory() == 2048 + 6 + 5 * slot);
    queue.pop();
    queue.pop();
    queue.pop();
    // The block is pinned by its later run: it still counts.
    CHECK(queue.memory() == 2048 + 2 * slot);
    queue.pop();
    queue.pop();
    CHECK(queue.empty());
    CHECK(queue.memory() == 0);
  }
  SUBCASE("bytes in flight count until their block is pushed") {
    queue.set_in_flight(200 << 10);
    CHECK(queue.memory() == 200 << 10);
    CHECK_FALSE(queue.at_or_above_high());
    queue.set_in_flight(256 << 10);
    CHECK(queue.at_or_above_high());
    CHECK(queue.empty());
    Block b = make_block(64 << 10, 2, 100, 1);
    queue.push({b.records, BlockOwner(b.block, b.block->capacity)});
    // The pushed block takes its bytes over from those in flight.
    CHECK(queue.in_flight() == 192 << 10);
    CHECK(queue.memory() == (256 << 10) + 2 * slot);
    queue.set_in_flight(0);
    CHECK(queue.memory() == (64 << 10) + 2 * slot);
  }
  SUBCASE("a block reduced to a few records has them copied out and is let go") {
    Block b = make_block(64 << 10, 64, 1000, 1);
    queue.push({b.records, BlockOwner(b.block, b.block->capacity)});
    for (int i = 0; i < 55; ++i) queue.pop();
    CHECK(b.block.use_count() == 2);  // 9 records: more than an eighth
    CHECK(queue.memory() == (64 << 10) + 9 * slot);
    queue.pop();
    // 8 records of 1000 bytes left: copied into 8000 bytes of their own.
    CHECK(b.block.use_count() == 1);
    CHECK(queue.memory() == 8000 + 8 * slot);
    CHECK(queue.bytes() == 8000);
    CHECK(queue.front_bytes().data() != b.records[56].data);
    for (int i = 56; i < 64; ++i) {
      REQUIRE_FALSE(queue.empty());
      CHECK(queue.front_bytes() == b.records[static_cast<size_t>(i)].bytes());
      CHECK(queue.front().key == Key::from_integer(1 + i));
      queue.pop();
    }
    CHECK(queue.empty());
    CHECK(queue.memory() == 0);
  }
  SUBCASE("a block with another queued behind it is merged through, not copied") {
    Block first = make_block(64 << 10, 64, 1000, 1);
    Block second = make_block(64 << 10, 64, 1000, 100);
    queue.push({first.records, BlockOwner(first.block, first.block->capacity)});
    queue.push({second.records, BlockOwner(second.block, second.block->capacity)});
    for (int i = 0; i < 63; ++i) queue.pop();
    CHECK(first.block.use_count() == 2);
    CHECK(queue.memory() == (128 << 10) + 65 * slot);
    queue.pop();
    CHECK(first.block.use_count() == 1);
    CHECK(queue.memory() == (64 << 10) + 64 * slot);
  }
  SUBCASE("thousands of quiet queues do not pin a read block each") {
    // A producer that sent one burst and went quiet, many times over.
    std::vector<FeedQueue> queues;
    queues.reserve(1000);
    size_t memory = 0;
    for (int q = 0; q < 1000; ++q) {
      queues.emplace_back(1 << 20, 512 << 10);
      Block b = make_block(64 << 10, 64, 1000, 1);
      queues.back().push({b.records, BlockOwner(b.block, b.block->capacity)});
      for (int i = 0; i < 62; ++i) queues.back().pop();  // emitted up to the frontier
      CHECK(b.block.use_count() == 1);
      memory += queues.back().memory();
    }
    CHECK(memory == 1000 * (2000 + 2 * slot));
  }
  SUBCASE("a block of unknown size counts its records' bytes, as copies do") {
    auto block = std::make_shared<std::string>(1000, 'x');
    std::vector<BlockRecord> run{{std::string_view(*block).substr(0, 10), parsed(1)},
                                 {std::string_view(*block).substr(10, 20), parsed(2)}};
    queue.push({run, block});
    queue.push("copy", parsed(3));
    CHECK(queue.memory() == 34 + 3 * slot);
    queue.pop();
    CHECK(queue.memory() == 24 + 2 * slot);
    queue.pop();
    queue.pop();
    CHECK(queue.memory() == 0);
  }
}

TEST_CASE("RecordBlockPool") {
  SUBCASE("reuses a block nobody holds") {
    RecordBlockPool pool(1024);
    auto a = pool.acquire();
    const RecordBlock* first = a.get();
    a.reset();
    CHECK(pool.acquire().get() == first);
    CHECK(pool.size() == 1);
  }
  SUBCASE("keeps at most max_free unused blocks") {
    RecordBlockPool pool(1024, 2);
    std::vector<std::shared_ptr<RecordBlock>> held;
    for (int i = 0; i < 10; ++i) held.push_back(pool.acquire());
    CHECK(pool.size() == 10);
    held.clear();
    auto next = pool.acquire();
    CHECK(pool.size() == 3);  // the one handed out and two spare
  }
}
