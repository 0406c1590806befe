#include "merge/merger.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <vector>

using namespace chronomerge;

namespace {

// Records in these tests look like {"time":N,"f":F,"i":I}: the key is an
// integer and its text sits right after "time":.
ParsedRecord parsed_for(const std::string& record, int64_t key, bool heartbeat = false) {
  ParsedRecord parsed;
  parsed.key = Key::from_integer(key);
  size_t at = record.find("\"time\":") + 7;
  size_t end = record.find_first_of(",}", at);
  parsed.key_offset = static_cast<uint32_t>(at);
  parsed.key_length = static_cast<uint32_t>(end - at);
  parsed.heartbeat = heartbeat;
  return parsed;
}

std::string record(int64_t key, int feed, int index) {
  return "{\"time\":" + std::to_string(key) + ",\"f\":" + std::to_string(feed) +
         ",\"i\":" + std::to_string(index) + "}";
}

// The merger's decisions so far, sorted by kind.
struct Decisions {
  std::vector<FeedId> paused, resumed;
  std::vector<std::pair<FeedId, std::string>> late;
  std::vector<std::pair<FeedId, bool>> idle;
  void add(const MergerDecision& d) {
    switch (d.kind) {
      case MergerDecision::Kind::pause:
        paused.push_back(d.feed);
        break;
      case MergerDecision::Kind::resume:
        resumed.push_back(d.feed);
        break;
      case MergerDecision::Kind::late:
        late.emplace_back(d.feed, d.record);
        break;
      case MergerDecision::Kind::idle:
      case MergerDecision::Kind::active:
        idle.emplace_back(d.feed, d.kind == MergerDecision::Kind::idle);
        break;
    }
  }
};

// An output with one subscriber that takes everything on demand.
struct Harness {
  explicit Harness(MergerOptions options = {}, size_t hwm = 1 << 30)
      : output(hwm), merger(std::move(options), output) {
    sub = output.subscribe(OutputLog::ConsumerOptions::lossless(SIZE_MAX), nullptr);
  }
  // Drains the output and returns the bytes since the last call.
  std::string take() {
    std::vector<OutputLog::Slice> slices;
    size_t n = output.peek(sub, slices, SIZE_MAX, nullptr);
    std::string out;
    for (auto& s : slices) out += s.bytes;
    output.consume(sub, n);
    return out;
  }
  void push(FeedId feed, const std::string& rec, int64_t key, uint64_t now = 0) {
    merger.push(feed, rec, parsed_for(rec, key), now);
  }
  // The decisions made since the last call, as the merger reports them.
  std::vector<MergerDecision> decisions_since_last() {
    std::vector<MergerDecision> taken;
    merger.take_decisions(taken);
    for (const MergerDecision& d : taken) seen.add(d);
    return taken;
  }
  // Every decision the merger has made, taken from it now.
  Decisions& decisions() {
    std::vector<MergerDecision> taken;
    merger.take_decisions(taken);
    for (const MergerDecision& d : taken) seen.add(d);
    return seen;
  }
  Decisions seen;
  OutputLog output;
  Merger merger;
  OutputLog::ConsumerId sub;
};

FeedSettings finite(std::string name) {
  FeedSettings s;
  s.name = std::move(name);
  return s;
}

FeedSettings live(std::string name, uint64_t idle_ms) {
  FeedSettings s = finite(std::move(name));
  s.idle_timeout_ms = idle_ms;
  return s;
}

}  // namespace

TEST_CASE("interleave merge order") {
  Harness h;
  FeedId a = h.merger.add_feed(finite("a"), 0);
  FeedId b = h.merger.add_feed(finite("b"), 0);

  SUBCASE("emits nothing while a feed is still waiting") {
    h.push(a, record(1, 0, 0), 1);
    h.merger.run(0);
    CHECK(h.take().empty());
  }
  SUBCASE("emits the smaller key first across feeds") {
    h.push(a, record(5, 0, 0), 5);
    h.push(b, record(3, 1, 0), 3);
    h.merger.end(a, 0);
    h.merger.end(b, 0);
    h.merger.run(0);
    CHECK(h.take() == record(3, 1, 0) + "\n" + record(5, 0, 0) + "\n");
    CHECK(h.merger.finished());
    CHECK(h.output.ended());
  }
  SUBCASE("breaks ties by feed order, then by arrival") {
    h.push(b, record(7, 1, 0), 7);
    h.push(b, record(7, 1, 1), 7);
    h.push(a, record(7, 0, 0), 7);
    h.push(a, record(7, 0, 1), 7);
    h.merger.end(a, 0);
    h.merger.end(b, 0);
    h.merger.run(0);
    CHECK(h.take() == record(7, 0, 0) + "\n" + record(7, 0, 1) + "\n" + record(7, 1, 0) + "\n" +
                          record(7, 1, 1) + "\n");
  }
  SUBCASE("stops at the record after which a feed ran dry") {
    h.push(a, record(1, 0, 0), 1);
    h.push(b, record(2, 1, 0), 2);
    h.merger.run(0);
    // a's 1 is safe (b's head is 2, and b cannot go back); then a is empty
    // and could still send something older than 2.
    CHECK(h.take() == record(1, 0, 0) + "\n");
    h.merger.end(a, 0);
    h.merger.run(0);
    CHECK(h.take() == record(2, 1, 0) + "\n");
    CHECK_FALSE(h.merger.finished());
  }
  SUBCASE("an empty feed that ends does not hold the others") {
    h.merger.end(a, 0);
    h.push(b, record(4, 1, 0), 4);
    h.merger.run(0);
    CHECK(h.take() == record(4, 1, 0) + "\n");
  }
}

TEST_CASE("fleet members") {
  Harness h;
  FeedId first = h.merger.add_feed(finite("a"), 0);
  auto member = [](std::string name) {
    FeedSettings s = finite("fleet/" + name);
    s.group = "fleet";
    return s;
  };
  // Joined in another order than their names, all at the fleet's rank 1.
  FeedId b = h.merger.add_feed(member("b"), 0, false, 1);
  FeedId c = h.merger.add_feed(member("c"), 0, false, 1);
  FeedId a = h.merger.add_feed(member("a"), 0, false, 1);
  FeedId last = h.merger.add_feed(finite("z"), 0, false, 2);

  SUBCASE("tie by rank, then among members by name") {
    for (FeedId feed : {last, c, b, a, first})
      h.push(feed, record(5, static_cast<int>(feed), 0), 5);
    for (FeedId feed : {first, a, b, c, last}) h.merger.end(feed, 0);
    h.merger.run(0);
    std::string expected;
    for (FeedId feed : {first, a, b, c, last})
      expected += record(5, static_cast<int>(feed), 0) + '\n';
    CHECK(h.take() == expected);
  }
  SUBCASE("a member's records carry the fleet as a source too") {
    for (FeedId feed : {first, a, b, c, last})
      h.push(feed, record(5, static_cast<int>(feed), 0), 5);
    for (FeedId feed : {first, a, b, c, last}) h.merger.end(feed, 0);
    h.merger.run(0);
    const std::vector<OutputLog::SourceId> fleet{h.output.source_id("fleet")};
    const std::vector<OutputLog::SourceId> one{h.output.source_id("fleet/b")};
    // Offsets 1, 2, 3 are the members'; a filter on the fleet finds the
    // first of them, one on a member finds that member's.
    CHECK(h.output.first_match(0, fleet) == 1);
    CHECK(h.output.first_match(2, fleet) == 2);
    CHECK(h.output.first_match(4, fleet) == 5);
    CHECK(h.output.first_match(0, one) == 2);
  }
}

TEST_CASE("merger edge cases") {
  SUBCASE("no feeds at all finishes at once when asked") {
    Harness h;
    h.merger.run(0);
    CHECK(h.merger.finished());
  }
  SUBCASE("one feed passes through unchanged, even out of order") {
    Harness h;
    FeedId a = h.merger.add_feed(finite("a"), 0);
    h.push(a, record(3, 0, 0), 3);
    h.merger.run(0);
    CHECK(h.take() == record(3, 0, 0) + "\n");
    h.push(a, record(2, 0, 1), 2);  // goes backwards: late, emitted by default
    h.merger.run(0);
    CHECK(h.take() == record(2, 0, 1) + "\n");
    CHECK(h.merger.stats(a).late == 1);
    CHECK(h.decisions().late.size() == 1);
  }
  SUBCASE("empty feeds only") {
    Harness h;
    FeedId a = h.merger.add_feed(finite("a"), 0);
    FeedId b = h.merger.add_feed(finite("b"), 0);
    h.merger.end(a, 0);
    h.merger.run(0);
    CHECK_FALSE(h.merger.finished());
    h.merger.end(b, 0);
    CHECK(h.merger.finished());
    CHECK(h.take().empty());
  }
  SUBCASE("a hold defers the end while the feeds are being replaced") {
    Harness h;
    FeedId a = h.merger.add_feed(finite("a"), 0);
    h.merger.hold();
    h.merger.end(a, 0);  // every feed ended...
    h.merger.run(0);
    CHECK_FALSE(h.merger.finished());  // ...but more are coming
    CHECK_FALSE(h.output.ended());
    FeedId b = h.merger.add_feed(finite("b"), 0);
    h.merger.release();
    CHECK_FALSE(h.merger.finished());
    h.push(b, record(1, 1, 0), 1);
    h.merger.end(b, 0);
    h.merger.run(0);
    CHECK(h.take() == record(1, 1, 0) + "\n");
    CHECK(h.merger.finished());
  }
  SUBCASE("releasing the last hold ends a merge whose feeds all ended") {
    Harness h;
    h.merger.hold();
    FeedId a = h.merger.add_feed(finite("a"), 0);
    h.merger.end(a, 0);
    CHECK_FALSE(h.merger.finished());
    h.merger.release();
    CHECK(h.merger.finished());
  }
}

// The property that matters most: for finite inputs the output equals a
// stable sort by key of the feeds concatenated in feed order, however the
// records arrive and however the output applies backpressure.
TEST_CASE("interleave equals a stable sort of the concatenated feeds") {
  for (int round = 0; round < 60; ++round) {
    std::mt19937_64 rng(round);
    int feeds = 1 + static_cast<int>(rng() % (round < 50 ? 8 : 1000));
    int per_feed = round < 50 ? static_cast<int>(rng() % 40) : 3;
    size_t hwm = 1 + rng() % 400;  // tiny output buffers force many stops
    CAPTURE(round);
    CAPTURE(feeds);
    Harness h({}, hwm);
    std::vector<std::vector<std::pair<int64_t, std::string>>> input(feeds);
    std::vector<std::pair<int64_t, std::string>> all;
    for (int f = 0; f < feeds; ++f) {
      int64_t key = static_cast<int64_t>(rng() % 5);
      for (int i = 0; i < per_feed; ++i) {
        key += static_cast<int64_t>(rng() % 3);  // sorted, with ties
        input[f].emplace_back(key, record(key, f, i));
        all.push_back(input[f].back());
      }
      h.merger.add_feed(finite("f" + std::to_string(f)), 0);
    }
    std::stable_sort(all.begin(), all.end(),
                     [](const auto& x, const auto& y) { return x.first < y.first; });
    std::string expected;
    for (auto& [k, r] : all) expected += r + "\n";

    // Deliver records in random bursts, ending feeds as they run out, and
    // drain the output at random moments.
    std::vector<size_t> next(feeds, 0);
    std::vector<bool> ended(feeds, false);
    std::string got;
    int open = feeds;
    for (int step = 0; open > 0 || !h.merger.finished(); ++step) {
      REQUIRE(step < 1000000);
      int f = static_cast<int>(rng() % feeds);
      size_t burst = rng() % 4;
      for (size_t n = 0; n < burst && next[f] < input[f].size(); ++n, ++next[f]) {
        h.push(f, input[f][next[f]].second, input[f][next[f]].first);
      }
      if (next[f] == input[f].size() && !ended[f]) {
        h.merger.end(f, 0);
        ended[f] = true;
        --open;
      }
      h.merger.run(0);
      if (open == 0 || rng() % 2) got += h.take();
    }
    got += h.take();
    REQUIRE(got == expected);
  }
}

TEST_CASE("output backpressure stops the conveyor belt") {
  Harness h({}, 30);  // room for about one record
  FeedId a = h.merger.add_feed(finite("a"), 0);
  for (int i = 0; i < 5; ++i) h.push(a, record(i, 0, i), i);
  h.merger.end(a, 0);
  h.merger.run(0);
  SUBCASE("nothing is pushed while the output is full") {
    uint64_t head = h.output.head();
    CHECK(h.output.full());
    h.merger.run(0);
    h.merger.run(0);
    CHECK(h.output.head() == head);
  }
  SUBCASE("draining restarts the belt until everything is out, exactly once") {
    std::string got;
    int rounds = 0;
    while (!h.merger.finished() || h.output.lag(h.sub) > 0) {
      got += h.take();
      h.merger.run(0);
      REQUIRE(++rounds < 100);
    }
    std::string expected;
    for (int i = 0; i < 5; ++i) expected += record(i, 0, i) + "\n";
    CHECK(got == expected);
  }
}

TEST_CASE("feed queues pause and resume with hysteresis") {
  Harness h({}, 1 << 20);
  FeedSettings s = finite("a");
  // A queued record counts its 23 bytes and its ring slot.
  const size_t each = 23 + FeedQueue::slot_bytes;
  s.high_water_mark = 4 * each + 10;
  s.low_water_mark = 2 * each - 10;
  FeedId a = h.merger.add_feed(s, 0);
  FeedId b = h.merger.add_feed(finite("b"), 0);
  std::string r = record(10, 0, 0);
  REQUIRE(r.size() == 23);
  for (int i = 0; i < 4; ++i) h.push(a, record(10 + i, 0, i), 10 + i);
  CHECK(h.decisions().paused.empty());  // 4 records: under the high mark
  h.push(a, record(14, 0, 4), 14);
  CHECK(h.decisions().paused == std::vector<FeedId>{a});  // 5: over it
  CHECK(h.merger.paused(a));
  h.push(b, record(12, 1, 0), 12);
  h.merger.run(0);                       // emits 10, 11, 12(a), then waits for b
  CHECK(h.decisions().resumed.empty());  // 2 records: above the low mark
  h.push(b, record(20, 1, 1), 20);
  h.merger.run(0);
  CHECK(h.decisions().resumed == std::vector<FeedId>{a});
  CHECK_FALSE(h.merger.paused(a));
  CHECK(h.merger.stats(a).pauses == 1);
}

TEST_CASE("live feeds go idle and come back late") {
  MergerOptions options;
  Harness h(options);
  FeedId a = h.merger.add_feed(live("a", 1000), 0);
  FeedId b = h.merger.add_feed(live("b", 1000), 0);
  h.push(a, record(100, 0, 0), 100, 10);
  h.merger.run(10);

  SUBCASE("a silent feed holds the merge only until its idle timeout") {
    CHECK(h.take().empty());
    CHECK(h.merger.next_deadline() == std::optional<uint64_t>(1000));
    h.merger.run(999);
    CHECK(h.take().empty());
    h.merger.run(1000);
    CHECK(h.take() == record(100, 0, 0) + "\n");
    CHECK(h.merger.state(b) == FeedState::idle);
  }
  SUBCASE("the idle clock restarts when a feed empties again") {
    h.push(b, record(50, 1, 0), 50, 900);
    h.merger.run(900);
    CHECK(h.take() == record(50, 1, 0) + "\n");
    // b emptied at 900: it is waiting until 1900, a's 100 holds.
    h.merger.run(1500);
    CHECK(h.take().empty());
    h.merger.run(1900);
    CHECK(h.take() == record(100, 0, 0) + "\n");
  }
  SUBCASE("late records follow the emit policy and are counted") {
    h.merger.run(1000);
    h.take();
    h.push(b, record(60, 1, 0), 60, 2000);
    h.merger.run(2000);
    CHECK(h.take() == record(60, 1, 0) + "\n");
    CHECK(h.merger.stats(b).late == 1);
    // A late record is no sign of life: b stays idle, and says nothing.
    CHECK(h.merger.state(b) == FeedState::idle);
    CHECK(std::count(h.decisions().idle.begin(), h.decisions().idle.end(),
                     std::pair<FeedId, bool>(b, false)) == 0);
  }
}

TEST_CASE("a late record is never a sign of life") {
  // Two feeds send in order; c sends in order, then only records 60 s old,
  // one per second: each used to restart c's waiting, holding the merge.
  Harness h;
  FeedId a = h.merger.add_feed(live("a", 1000), 0);
  FeedId c = h.merger.add_feed(live("c", 1000), 0);
  int64_t key = 100000;
  uint64_t now = 0;
  for (; now < 3000; now += 10, key += 10) {
    h.push(a, record(key, 0, 0), key, now);
    h.push(c, record(key, 1, 0), key, now);
    h.merger.run(now);
  }
  h.take();
  const uint64_t first_late = now;
  uint64_t idle_at = 0;
  for (; now < 20000; now += 10, key += 10) {
    h.push(a, record(key, 0, 0), key, now);
    if (now % 1000 == 0) h.push(c, record(key - 60000, 1, 0), key - 60000, now);
    h.merger.run(now);
    if (!idle_at && h.merger.state(c) == FeedState::idle) idle_at = now;
  }
  REQUIRE(idle_at != 0);
  CHECK(idle_at <= first_late + 1000);
  CHECK(h.merger.stats(c).late >= 16);
  // Once idle, a's records flow at once: the frontier is a's last key.
  h.merger.run(now);
  REQUIRE(h.merger.frontier());
  CHECK(h.merger.frontier()->ordinal == key - 10);
  // c flapped neither back to active nor idle again per late record.
  CHECK(std::count(h.decisions().idle.begin(), h.decisions().idle.end(),
                   std::pair<FeedId, bool>(c, false)) == 0);
  SUBCASE("a record at the frontier brings it back") {
    h.push(c, record(key, 1, 1), key, now);
    CHECK(h.merger.state(c) == FeedState::ready);
    CHECK(h.decisions().idle.back() == std::pair<FeedId, bool>(c, false));
  }
}

TEST_CASE("a heartbeat behind the frontier is no sign of life either") {
  // c sends only heartbeats 60 s old, every 100 ms: it used to stay
  // waiting for ever, holding the merge.
  Harness h;
  FeedId a = h.merger.add_feed(live("a", 1000), 0);
  FeedId c = h.merger.add_feed(live("c", 1000), 0);
  h.push(a, record(100000, 0, 0), 100000, 0);
  h.push(c, record(100000, 1, 0), 100000, 0);
  h.merger.run(0);
  h.take();
  uint64_t now = 0;
  for (int64_t key = 100010; now < 3000; now += 100, key += 100) {
    h.push(a, record(key, 0, 0), key, now);
    std::string beat = record(key - 60000, 1, 1);
    h.merger.push(c, beat, parsed_for(beat, key - 60000, true), now);
    h.merger.run(now);
  }
  CHECK(h.merger.state(c) == FeedState::idle);
  CHECK(h.take().find(record(102910, 0, 0)) != std::string::npos);
}

TEST_CASE("an idle feed back a little behind rejoins within max_lag") {
  // b goes idle, then sends again 50 key units behind a.
  for (std::optional<double> lag : {std::optional<double>(), std::optional<double>(1000)}) {
    CAPTURE(lag.has_value());
    Harness h;
    FeedSettings s = live("b", 100);
    s.max_lag = lag;
    FeedId a = h.merger.add_feed(live("a", 100), 0);
    FeedId b = h.merger.add_feed(s, 0);
    uint64_t now = 0;
    int64_t key = 1000;
    for (; now < 1000; now += 10, key += 10) {
      h.push(a, record(key, 0, 0), key, now);
      h.merger.run(now);
    }
    REQUIRE(h.merger.state(b) == FeedState::idle);
    for (; now < 2000; now += 10, key += 10) {
      h.push(a, record(key, 0, 0), key, now);
      h.push(b, record(key - 50, 1, 0), key - 50, now);
      h.merger.run(now);
    }
    if (lag) {
      // Back, waited for, caught up: only its first records were late.
      CHECK(h.merger.stats(b).late <= 5);
      CHECK(h.merger.state(b) != FeedState::idle);
    } else {
      // Without max_lag only a record at the frontier is a sign of life.
      CHECK(h.merger.stats(b).late == 100);
      CHECK(h.merger.state(b) == FeedState::idle);
    }
  }
}

TEST_CASE("max_lag lets go of a feed that has fallen behind the others") {
  // Feeds a and b are live at key ~now; each test drives c.
  auto settings = [](std::string name, std::optional<double> lag) {
    FeedSettings s = live(std::move(name), 600000);  // idleness never decides here
    s.max_lag = lag;
    return s;
  };
  SUBCASE("a feed 60 s behind no longer sets the pace") {
    Harness h;
    FeedId a = h.merger.add_feed(settings("a", 5000), 0);
    FeedId b = h.merger.add_feed(settings("b", 5000), 0);
    FeedId c = h.merger.add_feed(settings("c", 5000), 0);
    for (int64_t t = 0; t < 20000; t += 10) {
      h.push(a, record(100000 + t, 0, 0), 100000 + t, 0);
      h.push(b, record(100000 + t, 1, 0), 100000 + t, 0);
    }
    h.push(c, record(40000, 2, 0), 40000, 0);  // 60 s behind, then quiet
    h.merger.run(0);
    std::string out = h.take();
    CHECK(h.merger.state(c) == FeedState::idle);
    CHECK(h.merger.lagging(c));
    CHECK(out.find(record(119990, 0, 0)) != std::string::npos);
    // Its next record is older than the frontier: late, counted.
    h.push(c, record(40010, 2, 1), 40010, 1);
    h.merger.run(1);
    CHECK(h.merger.stats(c).late == 1);
  }
  SUBCASE("without max_lag the same feed holds the merge") {
    Harness h;
    FeedId a = h.merger.add_feed(settings("a", std::nullopt), 0);
    FeedId b = h.merger.add_feed(settings("b", std::nullopt), 0);
    FeedId c = h.merger.add_feed(settings("c", std::nullopt), 0);
    h.push(a, record(100000, 0, 0), 100000, 0);
    h.push(b, record(100000, 1, 0), 100000, 0);
    h.push(c, record(40000, 2, 0), 40000, 0);
    h.merger.run(0);
    CHECK(h.take() == record(40000, 2, 0) + "\n");
    CHECK(h.merger.state(c) == FeedState::waiting);
    CHECK(h.merger.holder() == c);
  }
  SUBCASE("a feed an hour ahead makes nothing of the others late") {
    Harness h;
    FeedId a = h.merger.add_feed(settings("a", 5000), 0);
    FeedId b = h.merger.add_feed(settings("b", 5000), 0);
    FeedId x = h.merger.add_feed(settings("x", 5000), 0);
    h.push(x, record(100000 + 3600000, 2, 0), 100000 + 3600000, 0);
    for (int64_t t = 0; t < 10000; t += 10) {
      // a and b both run dry after every record: the only ready head is x's.
      h.push(a, record(100000 + t, 0, 0), 100000 + t, 0);
      h.push(b, record(100000 + t, 1, 0), 100000 + t, 0);
      h.merger.run(0);
    }
    h.take();
    CHECK(h.merger.stats(a).late == 0);
    CHECK(h.merger.stats(b).late == 0);
    CHECK(h.merger.state(a) == FeedState::waiting);
    CHECK(h.merger.frontier()->ordinal == 100000 + 9990);
  }
}

TEST_CASE("the merger names the feed that holds the frontier") {
  Harness h;
  FeedId a = h.merger.add_feed(live("a", 5000), 0);
  FeedId b = h.merger.add_feed(live("b", 5000), 0);
  h.push(a, record(10, 0, 0), 10, 100);
  h.merger.run(100);
  REQUIRE(h.merger.holder() == b);
  CHECK(h.merger.held_since() == 100);
  h.push(a, record(20, 0, 1), 20, 300);
  h.merger.run(300);
  CHECK(h.merger.held_since() == 100);  // the same feed, no break
  h.push(b, record(10, 1, 0), 10, 400);
  h.merger.run(400);
  // b's record went out; a's 20 is still ahead of b's clock: b holds again
  // from now on.
  CHECK(h.merger.holder() == b);
  CHECK(h.merger.held_since() == 100);
  h.merger.run(5400);
  CHECK_FALSE(h.merger.holder());
}

TEST_CASE("a reload changes a feed's settings in place") {
  Harness h;
  FeedSettings s = live("a", 1000);
  s.high_water_mark = 4000;
  s.low_water_mark = 100;
  FeedId a = h.merger.add_feed(s, 0);
  FeedId b = h.merger.add_feed(live("b", 1000), 0);
  for (int i = 0; i < 20; ++i) h.push(a, record(i, 0, i), i, 0);  // ~20 bytes each
  REQUIRE(h.merger.queue_bytes(a) >= 300);
  SUBCASE("a higher mark resumes a paused feed; a lower one pauses it") {
    REQUIRE_FALSE(h.merger.paused(a));  // ~20 records of ~52 bytes with their slots
    s.high_water_mark = 200;
    s.low_water_mark = 50;
    h.merger.update(a, s, 0);
    CHECK(h.merger.paused(a));
    s.high_water_mark = 1 << 20;
    s.low_water_mark = 1 << 19;
    h.merger.update(a, s, 0);
    CHECK_FALSE(h.merger.paused(a));
    CHECK(h.decisions().resumed.back() == a);
  }
  SUBCASE("a waiting feed's idle clock keeps its start") {
    s = live("b", 5000);
    h.merger.update(b, s, 500);
    CHECK(h.merger.next_deadline() == std::optional<uint64_t>(5000));
    s = live("b", 10);
    h.merger.update(b, s, 500);
    h.merger.run(500);
    CHECK(h.merger.state(b) == FeedState::idle);
    CHECK(h.take().size() > 0);
  }
  SUBCASE("nothing queued is lost or reordered") {
    s.reorder_window = 5;
    h.merger.update(a, s, 0);
    h.merger.end(b, 0);
    h.merger.end(a, 0);
    h.merger.run(0);
    std::string expected;
    for (int i = 0; i < 20; ++i) expected += record(i, 0, i) + "\n";
    CHECK(h.take() == expected);
  }
}

TEST_CASE("removed feeds free their slot") {
  Harness h;
  FeedId keep = h.merger.add_feed(live("keep", 1000), 0);
  h.push(keep, record(1000000, 0, 0), 1000000, 0);
  for (int round = 0; round < 100; ++round) {
    FeedId f = h.merger.add_feed(live("churn", 1000), 0, true);
    CHECK(f == keep + 1);  // the same slot every time
    CHECK(h.merger.state(f) == FeedState::idle);
    h.push(f, record(round, 1, round), round, 0);
    h.merger.end(f, 0);
    h.merger.run(0);
    REQUIRE(h.merger.retired(f));
    h.decisions();  // as the owner does after every run
    h.merger.remove(f);
  }
  CHECK(h.merger.feed_count() == 2);
  CHECK(h.merger.feeds_in_use() == 1);
}

TEST_CASE("decisions about a removed feed never reach the feed that takes its slot") {
  // The owner takes decisions once per loop turn; a slot freed and reused
  // in between must not receive its predecessor's pause or idle report.
  Harness h;
  FeedId keep = h.merger.add_feed(live("keep", 1000), 0);
  h.push(keep, record(1000, 0, 0), 1000, 0);
  FeedSettings tiny = live("old", 1000);
  tiny.high_water_mark = 10;
  tiny.low_water_mark = 5;
  FeedId old = h.merger.add_feed(tiny, 0, true);
  CHECK_FALSE(h.merger.push(old, record(1, 1, 0), parsed_for(record(1, 1, 0), 1), 0));
  h.merger.end(old, 0);
  h.merger.run(0);  // emits the late record: the slot is free to go
  REQUIRE(h.merger.retired(old));
  h.merger.remove(old);
  FeedId next = h.merger.add_feed(live("new", 1000), 0, true);
  REQUIRE(next == old);
  for (const MergerDecision& d : h.decisions_since_last()) CHECK(d.feed != next);
}

TEST_CASE("a feed added while the merge runs joins idle") {
  Harness h;
  FeedId a = h.merger.add_feed(live("a", 1000), 0);
  h.push(a, record(10, 0, 0), 10, 0);
  h.merger.run(0);
  FeedId late = h.merger.add_feed(live("new", 1000), 0, true);
  h.merger.run(0);
  CHECK(h.take() == record(10, 0, 0) + "\n");  // not held by the newcomer
  h.push(late, record(5, 1, 0), 5, 1);
  h.merger.run(1);
  CHECK(h.merger.stats(late).late == 1);
  CHECK(h.merger.state(late) == FeedState::idle);
}

TEST_CASE("late policy drop forwards nothing") {
  MergerOptions options;
  options.late = LatePolicy::drop;
  Harness h(options);
  FeedId a = h.merger.add_feed(finite("a"), 0);
  h.push(a, record(5, 0, 0), 5);
  h.push(a, record(4, 0, 1), 4);
  h.push(a, record(6, 0, 2), 6);
  h.merger.end(a, 0);
  h.merger.run(0);
  CHECK(h.take() == record(5, 0, 0) + "\n" + record(6, 0, 2) + "\n");
  CHECK(h.decisions().late == std::vector<std::pair<FeedId, std::string>>{{a, record(4, 0, 1)}});
}

TEST_CASE("heartbeats move a feed forward without being forwarded") {
  Harness h;
  FeedId a = h.merger.add_feed(live("a", 100000), 0);
  FeedId b = h.merger.add_feed(live("b", 100000), 0);
  h.push(b, record(10, 1, 0), 10);
  h.push(b, record(20, 1, 1), 20);
  h.merger.run(0);
  CHECK(h.take().empty());
  std::string beat = "{\"time\":15,\"hb\":true}";
  h.merger.push(a, beat, parsed_for(beat, 15, true), 0);
  h.merger.run(0);
  // 10 is older than the promise; 20 is not, and a is waiting again.
  CHECK(h.take() == record(10, 1, 0) + "\n");
  CHECK(h.merger.stats(a).heartbeats == 1);
  CHECK(h.merger.stats(a).records_in == 0);
}

// Regression: a heartbeat at the top was dropped while another feed was
// still waiting, which turned its own feed back into a waiting one and
// held the merge until the idle timeout.
TEST_CASE("a heartbeat waits at the head while another feed is waiting") {
  Harness h;
  FeedId a = h.merger.add_feed(live("a", 100000), 0);
  FeedId b = h.merger.add_feed(live("b", 100000), 0);
  h.push(a, record(1, 0, 0), 1);
  std::string beat = "{\"time\":1000,\"hb\":true}";
  h.merger.push(a, beat, parsed_for(beat, 1000, true), 0);
  h.push(b, record(2, 1, 0), 2);
  h.merger.run(0);
  CHECK(h.take() == record(1, 0, 0) + "\n" + record(2, 1, 0) + "\n");
  h.push(b, record(3, 1, 1), 3);  // b was waiting; a still stands at 1000
  h.merger.run(10);
  CHECK(h.take() == record(3, 1, 1) + "\n");
  CHECK(h.merger.state(a) == FeedState::ready);
}

TEST_CASE("reorder window sorts a slightly shuffled feed") {
  Harness h;
  FeedSettings s = finite("a");
  s.reorder_window = 10;
  FeedId a = h.merger.add_feed(s, 0);
  for (int64_t k : {5, 3, 4, 12, 9, 20, 30}) h.push(a, record(k, 0, 0), k);
  h.merger.run(0);
  // Released: up to 30 - 10 = 20.
  CHECK(h.take() == record(3, 0, 0) + "\n" + record(4, 0, 0) + "\n" + record(5, 0, 0) + "\n" +
                        record(9, 0, 0) + "\n" + record(12, 0, 0) + "\n" + record(20, 0, 0) + "\n");
  h.merger.end(a, 0);
  h.merger.run(0);
  CHECK(h.take() == record(30, 0, 0) + "\n");
  CHECK(h.merger.stats(a).late == 0);
}

TEST_CASE("reorder window holds no more than the high-water mark") {
  // A feed whose key stops advancing: nothing ever leaves the window by
  // key, so memory must release it, and the queue then pauses the feed.
  Harness h({}, 1 << 10);  // the output stops after 1 KiB: the queue fills
  FeedSettings s = finite("a");
  s.reorder_window = 1000000;
  s.high_water_mark = 4096;
  s.low_water_mark = 1024;
  FeedId a = h.merger.add_feed(s, 0);
  const std::string rec = record(7, 0, 0);
  size_t pushed = 0;
  while (h.decisions().paused.empty() && pushed < 100000) {
    h.push(a, rec, 7);
    ++pushed;
    h.merger.run(0);
  }
  CHECK(h.decisions().paused.size() == 1);
  CHECK(pushed * rec.size() < 3 * 4096 + (1 << 10));  // held + queued + output
  h.merger.end(a, 0);
  std::string out;
  for (std::string part = h.take(); !part.empty() || !h.merger.finished(); part = h.take()) {
    out += part;
    h.merger.run(0);
  }
  CHECK(h.merger.finished());
  CHECK(out.size() == pushed * (rec.size() + 1));  // every record, once
}

TEST_CASE("combine mode groups equal keys like stream-combine") {
  MergerOptions options;
  options.mode = MergeMode::combine;
  Harness h(options);
  FeedId a = h.merger.add_feed(finite("a"), 0);
  FeedId b = h.merger.add_feed(finite("b"), 0);
  FeedId c = h.merger.add_feed(finite("c"), 0);

  SUBCASE("the stream-combine README example") {
    // Three streams of {"time":...}: equal times are combined into one
    // object with the records and their stream indexes.
    auto rec = [](int t) { return "{\"time\":" + std::to_string(t) + "}"; };
    for (int t : {1, 2, 4}) h.push(a, rec(t), t);
    for (int t : {1, 3, 4}) h.push(b, rec(t), t);
    for (int t : {2, 3, 5}) h.push(c, rec(t), t);
    for (FeedId f : {a, b, c}) h.merger.end(f, 0);
    h.merger.run(0);
    CHECK(h.take() ==
          "{\"data\":[{\"time\":1},{\"time\":1}],\"indexes\":[0,1],\"time\":1}\n"
          "{\"data\":[{\"time\":2},{\"time\":2}],\"indexes\":[0,2],\"time\":2}\n"
          "{\"data\":[{\"time\":3},{\"time\":3}],\"indexes\":[1,2],\"time\":3}\n"
          "{\"data\":[{\"time\":4},{\"time\":4}],\"indexes\":[0,1],\"time\":4}\n"
          "{\"data\":[{\"time\":5}],\"indexes\":[2],\"time\":5}\n");
  }
  SUBCASE("equal keys twice in one feed become two steps") {
    h.push(a, record(1, 0, 0), 1);
    h.push(a, record(1, 0, 1), 1);
    h.push(b, record(1, 1, 0), 1);
    for (FeedId f : {a, b, c}) h.merger.end(f, 0);
    h.merger.run(0);
    CHECK(h.take() == "{\"data\":[" + record(1, 0, 0) + "," + record(1, 1, 0) +
                          "],\"indexes\":[0,1],\"time\":1}\n{\"data\":[" + record(1, 0, 1) +
                          "],\"indexes\":[0],\"time\":1}\n");
  }
  SUBCASE("a feed ending while the output is backed up neither repeats nor skips a group") {
    Harness small(options, 10);
    FeedId x = small.merger.add_feed(finite("x"), 0);
    FeedId y = small.merger.add_feed(finite("y"), 0);
    small.push(x, record(1, 0, 0), 1);
    small.push(y, record(1, 1, 0), 1);
    small.push(x, record(2, 0, 1), 2);
    small.merger.run(0);  // y is waiting after the first group
    small.merger.end(y, 0);
    small.merger.run(0);  // output full: nothing more yet
    std::string got = small.take();
    small.merger.end(x, 0);
    small.merger.run(0);
    got += small.take();
    small.merger.run(0);
    got += small.take();
    CHECK(got == "{\"data\":[" + record(1, 0, 0) + "," + record(1, 1, 0) +
                     "],\"indexes\":[0,1],\"time\":1}\n{\"data\":[" + record(2, 0, 1) +
                     "],\"indexes\":[0],\"time\":2}\n");
  }
}

// File feeds hand the merger whole reads: runs of records that stay in the
// reader's block. The result must be that of pushing them one by one.
TEST_CASE("a run of records from one block merges like single pushes") {
  auto run_of = [](const std::string& block, const std::vector<int64_t>& keys) {
    std::vector<BlockRecord> run;
    size_t at = 0;
    for (int64_t key : keys) {
      size_t end = block.find('\n', at);
      std::string_view text = std::string_view(block).substr(at, end - at);
      run.push_back({text, parsed_for(std::string(text), key)});
      at = end + 1;
    }
    return run;
  };
  SUBCASE("interleaves with copied records of other feeds and counts them") {
    Harness h;
    FeedId a = h.merger.add_feed(finite("a"), 0);
    FeedId b = h.merger.add_feed(finite("b"), 0);
    auto block = std::make_shared<std::string>(record(1, 0, 0) + "\n" + record(3, 0, 1) + "\n" +
                                               record(5, 0, 2) + "\n");
    auto run = run_of(*block, {1, 3, 5});
    h.merger.push(a, {run, block}, 0);
    h.push(b, record(2, 1, 0), 2);
    h.push(b, record(3, 1, 1), 3);
    h.merger.end(a, 0);
    h.merger.end(b, 0);
    h.merger.run(0);
    CHECK(h.take() == record(1, 0, 0) + "\n" + record(2, 1, 0) + "\n" + record(3, 0, 1) + "\n" +
                          record(3, 1, 1) + "\n" + record(5, 0, 2) + "\n");
    CHECK(h.merger.stats(a).records_in == 3);
    CHECK(h.merger.stats(a).bytes_in == block->size() - 3);
    CHECK(h.merger.stats(a).last_key == Key::from_integer(5));
    CHECK(block.use_count() == 1);  // released once merged
  }
  SUBCASE("pauses once for a run that crosses the high-water mark") {
    Harness h;
    FeedSettings s = finite("a");
    s.high_water_mark = 50;
    s.low_water_mark = 10;
    FeedId a = h.merger.add_feed(s, 0);
    auto block = std::make_shared<std::string>(record(1, 0, 0) + "\n" + record(2, 0, 1) + "\n" +
                                               record(3, 0, 2) + "\n");
    auto run = run_of(*block, {1, 2, 3});
    h.merger.push(a, {run, block}, 0);
    CHECK(h.decisions().paused == std::vector<FeedId>{a});
    h.merger.run(0);
    CHECK(h.decisions().resumed == std::vector<FeedId>{a});
  }
  SUBCASE("records held by a reorder window are copied and released in order") {
    Harness h;
    FeedSettings s = finite("a");
    s.reorder_window = 10;
    FeedId a = h.merger.add_feed(s, 0);
    auto block = std::make_shared<std::string>(record(5, 0, 0) + "\n" + record(3, 0, 1) + "\n" +
                                               record(30, 0, 2) + "\n");
    auto run = run_of(*block, {5, 3, 30});
    h.merger.push(a, {run, block}, 0);
    CHECK(block.use_count() == 1);  // nothing kept in the block
    h.merger.end(a, 0);
    h.merger.run(0);
    CHECK(h.take() == record(3, 0, 1) + "\n" + record(5, 0, 0) + "\n" + record(30, 0, 2) + "\n");
  }
}

TEST_CASE("string keys order by their text") {
  MergerOptions options;
  options.key_type = KeyType::string;
  Harness h(options);
  FeedId a = h.merger.add_feed(finite("a"), 0);
  FeedId b = h.merger.add_feed(finite("b"), 0);
  auto push = [&](FeedId feed, const std::string& key) {
    std::string rec = "{\"k\":\"" + key + "\"}";
    ParsedRecord parsed;
    parsed.key = Key::from_string(key);
    parsed.key_offset = 5;
    parsed.key_length = static_cast<uint32_t>(key.size() + 2);
    h.merger.push(feed, rec, std::move(parsed), 0);
  };
  SUBCASE("records pushed one by one") {
    push(a, "apple");
    push(a, "cherry");
    push(b, "banana");
    push(b, "cherry");
    push(b, "apricot");  // behind the frontier once "banana" is out: late
    h.merger.end(a, 0);
    h.merger.end(b, 0);
    h.merger.run(0);
    CHECK(h.take() ==
          "{\"k\":\"apple\"}\n{\"k\":\"banana\"}\n{\"k\":\"cherry\"}\n{\"k\":\"cherry\"}\n"
          "{\"k\":\"apricot\"}\n");
    CHECK(h.merger.stats(b).late == 1);
    CHECK(h.merger.frontier() == Key::from_string("cherry"));
  }
  SUBCASE("a run of one block, its texts beside its records") {
    auto block = std::make_shared<std::string>("{\"k\":\"b\"}{\"k\":\"d\"}");
    std::vector<BlockRecord> run(2);
    std::vector<std::string> texts{"b", "d"};
    for (size_t i = 0; i < 2; ++i) {
      run[i].data = block->data() + 9 * i;
      run[i].length = 9;
      run[i].key_offset = 5;
      run[i].key_length = 3;
    }
    h.merger.push(a, {run, block, texts}, 0);
    push(b, "a");
    push(b, "c");
    h.merger.end(a, 0);
    h.merger.end(b, 0);
    h.merger.run(0);
    CHECK(h.take() == "{\"k\":\"a\"}\n{\"k\":\"b\"}\n{\"k\":\"c\"}\n{\"k\":\"d\"}\n");
    CHECK(h.merger.stats(a).last_key == Key::from_string("d"));
  }
}

TEST_CASE("ranks set by a reload order ties and combine indexes") {
  MergerOptions options;
  options.mode = MergeMode::combine;
  Harness h(options);
  FeedId a = h.merger.add_feed(finite("a"), 0);
  FeedId b = h.merger.add_feed(finite("b"), 0);
  h.merger.set_ranks({1, 0});  // the new config lists b first
  auto rec = [](int t, const char* f) {
    return "{\"time\":" + std::to_string(t) + ",\"f\":\"" + f + "\"}";
  };
  h.push(a, rec(1, "a"), 1);
  h.push(b, rec(1, "b"), 1);
  h.merger.end(a, 0);
  h.merger.end(b, 0);
  h.merger.run(0);
  CHECK(h.take() ==
        "{\"data\":[" + rec(1, "b") + "," + rec(1, "a") + "],\"indexes\":[0,1],\"time\":1}\n");
}

TEST_CASE("lower_bound: what heartbeats on an output may promise") {
  Harness h;
  const FeedId a = h.merger.add_feed(live("a", 1000), 0);
  const FeedId b = h.merger.add_feed(live("b", 1000), 0);
  SUBCASE("is unknown while a feed has sent nothing") {
    h.push(a, record(5, 0, 0), 5);
    h.merger.run(0);
    CHECK_FALSE(h.merger.lower_bound());
  }
  SUBCASE("is the smallest of the heads and of the waiting feeds' newest keys") {
    h.push(a, record(5, 0, 0), 5);
    h.push(b, record(8, 1, 0), 8);
    CHECK(h.merger.lower_bound() == Key::from_integer(5));
    h.merger.run(0);  // emits 5; a is waiting with newest key 5, b holds 8
    CHECK(h.take() == record(5, 0, 0) + "\n");
    CHECK(h.merger.lower_bound() == Key::from_integer(5));
    // A heartbeat moves a past what it sent: the bound follows.
    h.merger.push(a, "{\"time\":20,\"hb\":true}", parsed_for("{\"time\":20,\"hb\":true}", 20, true),
                  0);
    h.merger.run(0);  // emits 8 (b's head); b now waits at 8
    CHECK(h.take() == record(8, 1, 0) + "\n");
    CHECK(h.merger.lower_bound() == Key::from_integer(8));
    h.push(b, record(30, 1, 1), 30);
    h.merger.run(0);  // the heartbeat at 20 goes; a waits at 20, b holds 30
    CHECK(h.merger.lower_bound() == Key::from_integer(20));
  }
  SUBCASE("is the frontier while a feed is idle: it may still send anything newer") {
    h.push(a, record(5, 0, 0), 5);
    h.push(b, record(8, 1, 0), 8);
    h.merger.run(0);
    h.merger.run(2000);  // a went idle
    CHECK(h.merger.state(a) == FeedState::idle);
    CHECK(h.merger.lower_bound() == h.merger.frontier());
  }
}
