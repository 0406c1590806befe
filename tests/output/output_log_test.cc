#include "output/output_log.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "output/output_cursor.h"

using namespace chronomerge;

namespace {

using Consumer = OutputLog::ConsumerOptions;

Consumer block(size_t max_buffer = SIZE_MAX) {
  return Consumer::lossless(max_buffer);
}

Consumer disconnect(size_t max_buffer, std::optional<uint64_t> start = std::nullopt) {
  Consumer c;
  c.policy = ConsumerPolicy::disconnect;
  c.max_buffer = max_buffer;
  c.start = start;
  return c;
}

std::string read_all(OutputLog& log, OutputLog::ConsumerId id, size_t max = SIZE_MAX,
                     bool consume = true) {
  std::vector<OutputLog::Slice> slices;
  uint64_t end = 0;
  const size_t n = log.peek(id, slices, max, &end);
  std::string out;
  for (const auto& s : slices) out += s.bytes;
  CHECK(out.size() == n);
  if (consume) log.consume_to(id, end);
  return out;
}

// Appends `count` records "r<i>" (keys i*step) from `source`.
void append_numbered(OutputLog& log, int from, int count, OutputLog::SourceId source = 0,
                     int64_t step = 1) {
  for (int i = from; i < from + count; ++i) {
    log.append("r" + std::to_string(i), Key::from_integer(i * step), {&source, 1});
  }
}

OutputLogOptions retaining(size_t retention_bytes, size_t segment_bytes = 64) {
  OutputLogOptions options;
  options.high_water_mark = 1 << 20;
  options.retention_bytes = retention_bytes;
  options.segment_bytes = segment_bytes;
  options.run_id = "run1";
  return options;
}

}  // namespace

TEST_CASE("OutputLog high-water mark") {
  OutputLog log(20);
  auto sub = log.subscribe(block(), nullptr);
  int demands = 0;
  log.set_demand_callback([&] { ++demands; });

  SUBCASE("append() turns false exactly when the consumer is the mark behind") {
    CHECK(log.append("123456789"));  // 10 bytes with '\n'
    CHECK(log.append("12345678"));   // 19
    CHECK_FALSE(log.append(""));     // 20: at the mark
    CHECK(log.full());
  }
  SUBCASE("the demand callback runs once the consumer drains under the mark") {
    log.append("123456789");
    log.append("123456789");
    CHECK(log.full());
    log.consume(sub, 0);
    CHECK(demands == 0);
    log.consume(sub, 10);
    CHECK_FALSE(log.full());
    CHECK(demands == 1);
    log.consume(sub, 10);
    CHECK(demands == 1);  // only on the full -> not full edge
  }
  SUBCASE("the consumer sees every byte in order") {
    std::string expected;
    for (int i = 0; i < 10; ++i) {
      std::string r = "record-" + std::to_string(i);
      log.append(r);
      expected += r + "\n";
      CHECK(expected.ends_with(read_all(log, sub)));
    }
    CHECK(log.records() == 10);
  }
  SUBCASE("unsubscribing the consumer that holds the merge restarts the belt") {
    log.append("123456789");
    log.append("123456789");
    CHECK(log.full());
    log.unsubscribe(sub);
    CHECK_FALSE(log.full());
    CHECK(demands == 1);
  }
}

TEST_CASE("OutputLog segments") {
  OutputLog log(retaining(1 << 20, 16));
  auto sub = log.subscribe(block(), nullptr);

  SUBCASE("a record never straddles two segments, so every slice is whole records") {
    append_numbered(log, 0, 20);  // "rN\n", 3-4 bytes: 4-5 per 16-byte segment
    std::vector<OutputLog::Slice> slices;
    uint64_t end = 0;
    log.peek(sub, slices, SIZE_MAX, &end);
    CHECK(slices.size() > 1);
    uint64_t offset = 0;
    for (const auto& s : slices) {
      CHECK(s.bytes.back() == '\n');
      CHECK(s.first_offset == offset);
      CHECK(s.bytes.starts_with("r" + std::to_string(offset) + "\n"));
      offset += std::count(s.bytes.begin(), s.bytes.end(), '\n');
    }
    CHECK(offset == 20);
  }
  SUBCASE("a record larger than a segment gets one of its own") {
    const std::string big(100, 'x');
    log.append("a");
    log.append(big);
    log.append("b");
    CHECK(read_all(log, sub) == "a\n" + big + "\nb\n");
  }
  SUBCASE("peek honours max_bytes but always returns something") {
    append_numbered(log, 0, 20);
    std::vector<OutputLog::Slice> slices;
    uint64_t end = 0;
    const size_t n = log.peek(sub, slices, 1, &end);
    CHECK(n > 1);
    CHECK(slices.size() == 1);
    CHECK(end == n);
  }
}

TEST_CASE("OutputLog retention") {
  SUBCASE("keeps at least retention_bytes and at most one segment more, without readers") {
    OutputLog log(retaining(200, 64));
    for (int i = 0; i < 1000; ++i) {
      append_numbered(log, i, 1);
      if (log.head() > 400) {
        CHECK(log.retained_bytes() >= 200);
        // One segment more: 64 bytes of records, at most 21 of them, 20
        // bytes of index each.
        CHECK(log.retained_bytes() <= 200 + 64 + 21 * 20);
      }
    }
    CHECK(log.oldest_offset() > 0);
    CHECK(log.oldest_key());
    CHECK(log.retained_records() == log.records() - log.oldest_offset());
  }
  SUBCASE("an engaged block reader keeps what it has not read, beyond retention") {
    OutputLog log(retaining(0, 16));
    auto sub = log.subscribe(block(), nullptr);
    append_numbered(log, 0, 50);
    CHECK(log.oldest_offset() == 0);
    const std::string all = read_all(log, sub);
    CHECK(all.starts_with("r0\nr1\n"));
    append_numbered(log, 50, 50);
    CHECK(log.oldest_offset() >= 50);  // read: gone
  }
  SUBCASE("trims as soon as the block reader that held it moves on, and goes on trimming") {
    OutputLog log(retaining(0, 16));
    auto sub = log.subscribe(block(), nullptr);
    append_numbered(log, 0, 50);
    CHECK(log.oldest_offset() == 0);  // held: nothing read yet
    // Read part of it: the segments read go at once, no append needed.
    CHECK(read_all(log, sub, 20).starts_with("r0\n"));
    const uint64_t after_part = log.oldest_offset();
    CHECK(after_part > 0);
    CHECK(after_part < 50);
    append_numbered(log, 50, 50);
    CHECK(log.oldest_offset() == after_part);  // still held where it stopped
    read_all(log, sub);
    CHECK(log.oldest_offset() >= 90);
    // Caught up: what it reads from now on goes as it reads, all but the
    // segment being filled (three or four records of 16 bytes).
    for (int i = 100; i < 400; i += 10) {
      append_numbered(log, i, 10);
      read_all(log, sub);
      CHECK(log.records() - log.oldest_offset() <= 4);
    }
  }
  SUBCASE("retention_ms drops old segments even under retention_bytes") {
    OutputLogOptions options = retaining(1 << 20, 16);
    options.retention_ms = 1000;
    OutputLog log(options);
    log.tick(0);
    append_numbered(log, 0, 20);
    log.tick(500);
    append_numbered(log, 20, 20);
    log.tick(1200);  // the first 20 records are 1.2 s old
    CHECK(log.oldest_offset() >= 16);
    CHECK(log.oldest_offset() <= 20);
    log.tick(10'000);
    CHECK(log.oldest_offset() >= 36);  // all but the segment being filled
  }
  SUBCASE("a slice in flight outlives its segment's trimming") {
    OutputLog log(retaining(0, 16));
    auto sub = log.subscribe(block(), nullptr);
    append_numbered(log, 0, 20);
    std::vector<OutputLog::Slice> slices;
    uint64_t end = 0;
    log.peek(sub, slices, SIZE_MAX, &end);
    log.consume_to(sub, end);
    append_numbered(log, 20, 20);
    CHECK(log.oldest_offset() > 0);                   // the slice's segment is gone from the log
    CHECK(slices.front().bytes.starts_with("r0\n"));  // still readable (ASan checks)
  }
}

TEST_CASE("OutputLog disconnect readers") {
  OutputLog log(retaining(100, 16));
  auto slow = log.subscribe(disconnect(40), nullptr);

  SUBCASE("never hold the merge") {
    for (int i = 0; i < 10; ++i) CHECK(log.append("0123456789"));
    CHECK_FALSE(log.full());
  }
  SUBCASE("are dropped, too slow, once more than max_buffer behind") {
    log.append("0123456789");
    log.append("0123456789");
    log.append("0123456789");  // 33 bytes behind
    CHECK(log.dropped(slow) == DropReason::none);
    log.append("0123456789");  // 44
    CHECK(log.dropped(slow) == DropReason::too_slow);
    std::vector<OutputLog::Slice> slices;
    CHECK(log.peek(slow, slices, SIZE_MAX, nullptr) == 0);
  }
  SUBCASE("are dropped once their cursor leaves the retained window") {
    auto lagging = log.subscribe(disconnect(1 << 20), nullptr);
    append_numbered(log, 0, 200);
    CHECK(log.dropped(lagging) == DropReason::out_of_window);
  }
  SUBCASE("a reader resuming further behind than its max_buffer is bound by the window alone") {
    append_numbered(log, 0, 20);  // ~90 bytes retained
    auto resumed = log.subscribe(disconnect(10, log.oldest_offset()), nullptr);
    log.append("x");
    CHECK(log.dropped(resumed) == DropReason::none);
    while (log.lag(resumed) > 0) read_all(log, resumed, 8);  // caught up: engaged
    log.append("0123456789");
    CHECK(log.dropped(resumed) == DropReason::too_slow);
  }
  SUBCASE("a dropped reader is notified at the next flush") {
    int notified = 0;
    auto other = log.subscribe(disconnect(5), [&] { ++notified; });
    log.append("0123456789");
    log.flush();
    CHECK(log.dropped(other) == DropReason::too_slow);
    CHECK(notified == 1);
  }
}

TEST_CASE("OutputLog block readers resuming from far behind") {
  OutputLogOptions options = retaining(1 << 20, 64);
  options.high_water_mark = 50;
  OutputLog log(options);
  append_numbered(log, 0, 100);  // ~500 bytes: far more than the mark
  Consumer from_oldest = block();
  from_oldest.start = log.oldest_offset();
  auto reader = log.subscribe(from_oldest, nullptr);

  SUBCASE("do not hold the merge while catching up") {
    CHECK(log.lag(reader) > 50);
    CHECK_FALSE(log.full());
    CHECK(log.append("more"));
  }
  SUBCASE("hold it once they caught up within the mark") {
    while (log.lag(reader) > 0) read_all(log, reader, 64);
    for (int i = 0; i < 20 && log.append("0123456789"); ++i) {
    }
    CHECK(log.full());
    CHECK(log.lag(reader) >= 50);
  }
  SUBCASE("read every record from the oldest, in order") {
    std::string all;
    while (log.lag(reader) > 0) all += read_all(log, reader, 64);
    CHECK(all.starts_with("r0\nr1\n"));
    CHECK(all.ends_with("r99\n"));
  }
}

TEST_CASE("OutputLog held time") {
  OutputLog log(10);
  auto sub = log.subscribe(block(), nullptr);
  log.tick(1000);
  log.append("0123456789");
  CHECK(log.full());
  log.tick(1250);
  CHECK(log.held_ms(sub) == 250);
  log.consume(sub, 11);
  log.tick(2000);
  CHECK(log.held_ms(sub) == 250);
}

TEST_CASE("OutputLog locate_after") {
  OutputLog log(retaining(100, 16));
  append_numbered(log, 0, 10);

  SUBCASE("continues right after the offset of this run") {
    auto at = log.locate_after("run1", 4);
    CHECK_FALSE(at.gap);
    CHECK(at.offset == 5);
    auto sub = log.subscribe(disconnect(1 << 20, at.offset), nullptr);
    CHECK(read_all(log, sub).starts_with("r5\nr6\n"));
  }
  SUBCASE("the last record: continue at the head") {
    auto at = log.locate_after("run1", 9);
    CHECK_FALSE(at.gap);
    CHECK(at.offset == 10);
  }
  SUBCASE("another run, an offset never written, or one no longer retained is a gap") {
    CHECK(log.locate_after("run0", 4).gap);
    CHECK(log.locate_after("run1", 10).gap);
    append_numbered(log, 10, 200);
    CHECK(log.oldest_offset() > 5);
    CHECK(log.locate_after("run1", 4).gap);
    CHECK_FALSE(log.locate_after("run1", log.oldest_offset() - 1).gap);
  }
}

TEST_CASE("OutputLog locate_key") {
  OutputLog log(retaining(1 << 20, 32));
  const OutputLog::SourceId a = log.source_id("a");
  const OutputLog::SourceId b = log.source_id("b");
  // Keys 0 0 1 1 1 2 2 3, alternating sources a b a b ...
  const int64_t keys[] = {0, 0, 1, 1, 1, 2, 2, 3};
  for (int i = 0; i < 8; ++i) {
    const OutputLog::SourceId source = i % 2 == 0 ? a : b;
    log.append("r" + std::to_string(i), Key::from_integer(keys[i]), {&source, 1});
  }

  SUBCASE("starts at the first record with a key at or after K") {
    CHECK(log.locate_key(Key::from_integer(1), 0, {}).offset == 2);
    CHECK(log.locate_key(Key::from_integer(-5), 0, {}).offset == 0);
    CHECK(log.locate_key(Key::from_integer(9), 0, {}).offset == 8);  // the head
  }
  SUBCASE("skips n records whose key equals K") {
    CHECK(log.locate_key(Key::from_integer(1), 2, {}).offset == 4);
    CHECK(log.locate_key(Key::from_integer(1), 3, {}).offset == 5);
    CHECK(log.locate_key(Key::from_integer(1), 9, {}).offset == 5);  // past every equal one
  }
  SUBCASE("with a feed filter, skip counts only that feed's records") {
    const OutputLog::SourceId only_b[] = {b};
    CHECK(log.locate_key(Key::from_integer(1), 1, only_b).offset == 4);
  }
  SUBCASE("a key older than what retention dropped is a gap") {
    OutputLog small(retaining(60, 16));
    append_numbered(small, 0, 100);
    CHECK(small.locate_key(Key::from_integer(3), 0, {}).gap);
    const int64_t oldest = small.oldest_key()->ordinal;
    CHECK_FALSE(small.locate_key(Key::from_integer(oldest), 0, {}).gap);
  }
}

TEST_CASE("OutputLog feed filters") {
  OutputLog log(retaining(1 << 20, 32));
  const OutputLog::SourceId a = log.source_id("a");
  const OutputLog::SourceId b = log.source_id("b");
  CHECK(log.source_id("a") == a);  // stable
  for (int i = 0; i < 12; ++i) {
    const OutputLog::SourceId source = i % 3 == 0 ? a : b;
    log.append("r" + std::to_string(i), Key::from_integer(i), {&source, 1});
  }
  // A combine-mode object from both.
  const OutputLog::SourceId both[] = {a, b};
  log.append("ab", Key::from_integer(12), both);

  SUBCASE("a filtered reader gets only the records of its feeds, in order") {
    Consumer only_a = disconnect(1 << 20, 0);
    only_a.sources = {a};
    auto sub = log.subscribe(only_a, nullptr);
    std::string all;
    while (log.lag(sub) > 0) all += read_all(log, sub, 4);
    CHECK(all == "r0\nr3\nr6\nr9\nab\n");
  }
  SUBCASE("first_match names the first record of the filter's feeds") {
    const OutputLog::SourceId only_b[] = {b};
    CHECK(log.first_match(0, only_b) == 1);
    CHECK(log.first_match(3, only_b) == 4);
    CHECK(log.first_match(5, {}) == 5);
    const OutputLog::SourceId only_c[] = {log.source_id("c")};
    CHECK(log.first_match(0, only_c) == log.head_offset());
  }
  SUBCASE("a reader whose feeds sent nothing moves to the head without reading") {
    Consumer only_c = disconnect(1 << 20, 0);
    only_c.sources = {log.source_id("c")};
    auto sub = log.subscribe(only_c, nullptr);
    CHECK(read_all(log, sub) == "");
    CHECK(log.lag(sub) == 0);
  }
  SUBCASE("the cursor reader passes over skipped records once the write completes") {
    Consumer only_b = disconnect(1 << 20, 0);
    only_b.sources = {b};
    OutputCursor cursor(log, only_b, nullptr);
    std::vector<OutputLog::Slice> slices;
    const size_t n = cursor.peek(slices, SIZE_MAX);
    std::string got;
    for (const auto& s : slices) {
      got += s.bytes;
    }
    CHECK(got == "r1\nr2\nr4\nr5\nr7\nr8\nr10\nr11\nab\n");
    CHECK(slices.front().first_offset == 1);
    cursor.consume(n);
    CHECK(cursor.lag() == 0);
  }
}

TEST_CASE("OutputLog filtered readers and trimming") {
  // Regression: passing over skipped records moves the cursor, which may
  // trim the segments behind it; the reader then read from a stale place
  // (a later record, or past the end).
  OutputLog log(retaining(0, 16));
  const OutputLog::SourceId a = log.source_id("a");
  const OutputLog::SourceId b = log.source_id("b");
  Consumer only_a = block();
  only_a.sources = {a};
  auto reader = log.subscribe(only_a, nullptr);
  for (int i = 0; i < 12; ++i) log.append("b" + std::to_string(i), Key::from_integer(i), {&b, 1});
  log.append("a12", Key::from_integer(12), {&a, 1});
  log.append("a13", Key::from_integer(13), {&a, 1});
  CHECK(read_all(log, reader) == "a12\na13\n");
}

TEST_CASE("OutputLog string keys") {
  OutputLogOptions options = retaining(1 << 20, 32);
  options.key_type = KeyType::string;
  OutputLog log(options);
  for (const char* k : {"apple", "banana", "banana", "cherry"}) {
    log.append(std::string("{\"k\":\"") + k + "\"}", Key::from_string(k), {});
  }
  CHECK(log.locate_key(Key::from_string("banana"), 1, {}).offset == 2);
  CHECK(log.locate_key(Key::from_string("b"), 0, {}).offset == 1);
  CHECK(log.oldest_key()->text == "apple");
}

TEST_CASE("OutputLog reports origins once every block reader wrote them") {
  OutputLog log(OutputLogOptions{});
  std::vector<uint64_t> written;
  log.set_written_callback([&](const OutputLog::Origin& o) {
    CHECK(o.source == 7);
    written.push_back(o.position);
  });
  const OutputLog::SourceId source = 7;
  auto append = [&](int i, uint64_t origin) {
    const OutputLog::Origin o{source, origin};
    log.append(
        "r" + std::to_string(i), Key::from_integer(i), {&source, 1},
        origin ? std::span<const OutputLog::Origin>(&o, 1) : std::span<const OutputLog::Origin>());
  };

  SUBCASE("at once when no block reader holds the log") {
    const auto reader = log.subscribe(disconnect(1 << 20), [] {});
    append(1, 11);
    append(2, 0);  // untracked: nothing to report
    append(3, 13);
    CHECK(written == std::vector<uint64_t>{11, 13});
    CHECK(log.unwritten_origins() == 0);
    log.unsubscribe(reader);
  }
  SUBCASE("as the slowest block reader moves past each record") {
    const auto fast = log.subscribe(block(), [] {});
    const auto slow = log.subscribe(block(), [] {});
    append(1, 11);
    append(2, 12);
    read_all(log, fast);
    CHECK(written.empty());
    log.consume_to(slow, log.position(slow) + 3);  // "r1\n"
    CHECK(written == std::vector<uint64_t>{11});
    read_all(log, slow);
    CHECK(written == std::vector<uint64_t>{11, 12});
    log.unsubscribe(fast);
    log.unsubscribe(slow);
  }
  SUBCASE("a block reader that goes away no longer holds them") {
    const auto reader = log.subscribe(block(), [] {});
    append(1, 11);
    CHECK(written.empty());
    log.unsubscribe(reader);
    CHECK(written == std::vector<uint64_t>{11});
  }
}

TEST_CASE("OutputLog heartbeat records go only to readers that ask for them") {
  OutputLog log(OutputLogOptions{});
  const OutputLog::SourceId source = log.source_id("a");
  auto plain = log.subscribe(block(), [] {});
  Consumer wants = block();
  wants.heartbeats = true;
  auto reader = log.subscribe(wants, [] {});
  log.append("r1", Key::from_integer(1), {&source, 1});
  log.append_heartbeat("hb5", Key::from_integer(5));
  log.append("r6", Key::from_integer(6), {&source, 1});
  CHECK(log.newest_key() == Key::from_integer(6));
  CHECK(read_all(log, plain) == "r1\nr6\n");
  CHECK(read_all(log, reader) == "r1\nhb5\nr6\n");
  CHECK(log.lag(plain) == 0);
}
