#include "merge/head_tournament.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <utility>
#include <vector>

using namespace chronomerge;

namespace {

using Entry = HeadTournament::Entry;

// Ties by rank, then by feed id (standing in for the merger's name order),
// counted so that a test can see the tie function at work.
struct TieOrder {
  int calls = 0;
  static bool before(const void* context, const Entry& a, const Entry& b) {
    ++static_cast<TieOrder*>(const_cast<void*>(context))->calls;
    if (a.rank != b.rank) return a.rank < b.rank;
    return a.feed < b.feed;
  }
};

// The reference: the heads by feed, and the one that comes first.
std::optional<Entry> first_of(const std::map<uint32_t, Entry>& heads) {
  std::optional<Entry> best;
  for (const auto& [feed, e] : heads) {
    if (!best || e.ordinal < best->ordinal ||
        (e.ordinal == best->ordinal &&
         (e.rank < best->rank || (e.rank == best->rank && e.feed < best->feed)))) {
      best = e;
    }
  }
  return best;
}

void check_top(const HeadTournament& t, const std::map<uint32_t, Entry>& heads) {
  const std::optional<Entry> want = first_of(heads);
  REQUIRE(t.empty() == !want.has_value());
  if (!want) return;
  CHECK(t.top().feed == want->feed);
  CHECK(t.top().ordinal == want->ordinal);
  CHECK(t.top().rank == want->rank);
}

}  // namespace

TEST_CASE("HeadTournament") {
  TieOrder ties;
  HeadTournament t(&TieOrder::before, &ties);

  SUBCASE("is empty until a feed has a head, and again when none has") {
    CHECK(t.empty());
    t.set(Entry{5, 0, 0});
    REQUIRE_FALSE(t.empty());
    CHECK(t.top().feed == 0);
    t.remove_top();
    CHECK(t.empty());
  }
  SUBCASE("gives the smallest ordinal first, whatever order the feeds came in") {
    t.set(Entry{30, 0, 0});
    t.set(Entry{10, 1, 1});
    t.set(Entry{20, 2, 2});
    CHECK(t.top().feed == 1);
    t.remove_top();
    CHECK(t.top().feed == 2);
    t.replace_top(Entry{40, 2, 2});
    CHECK(t.top().feed == 0);
    t.remove_top();
    CHECK(t.top().feed == 2);
    CHECK(t.top().ordinal == 40);
    CHECK(ties.calls == 0);
  }
  SUBCASE("asks the tie function only when ordinals are equal") {
    t.set(Entry{7, 1, 0});
    t.set(Entry{7, 0, 1});
    CHECK(ties.calls > 0);
    CHECK(t.top().feed == 1);  // rank 0
  }
  SUBCASE("an empty leaf loses even to a head at the largest ordinal") {
    t.set(Entry{INT64_MAX, 3, 2});
    t.set(Entry{1, 0, 0});
    t.remove_top();  // feed 0's leaf is empty now, at INT64_MAX too
    REQUIRE_FALSE(t.empty());
    CHECK(t.top().feed == 2);
  }
  SUBCASE("grows for feed ids past its capacity, keeping its heads") {
    t.set(Entry{9, 0, 0});
    t.set(Entry{8, 1, 1});
    t.set(Entry{3, 1000, 1000});
    CHECK(t.capacity() >= 1001);
    CHECK(t.top().feed == 1000);
    t.remove_top();
    CHECK(t.top().feed == 1);
    t.remove_top();
    CHECK(t.top().feed == 0);
  }
  SUBCASE("contenders: the losers on the top's path, nearest the root first") {
    for (uint32_t f = 0; f < 8; ++f) t.set(Entry{int64_t{10} * f, f, f});
    std::vector<uint32_t> seen;
    t.contenders(3, [&](const Entry& e) { seen.push_back(e.feed); });
    // Feed 0 is on top; the best of feeds 4-7, of 2-3, then feed 1.
    CHECK(seen == std::vector<uint32_t>{4, 2, 1});
    seen.clear();
    t.contenders(1, [&](const Entry& e) { seen.push_back(e.feed); });
    CHECK(seen == std::vector<uint32_t>{4});
  }
  SUBCASE("rerank plays every match again with the new ranks") {
    t.set(Entry{5, 0, 0});
    t.set(Entry{5, 1, 1});
    CHECK(t.top().feed == 0);
    t.rerank({1, 0});
    CHECK(t.top().feed == 1);
    CHECK(t.top().rank == 0);
  }
  SUBCASE("agrees with a reference under random heads, ties, joins and leaves") {
    std::mt19937 rng(7);
    for (int round = 0; round < 200; ++round) {
      CAPTURE(round);
      TieOrder round_ties;
      HeadTournament r(&TieOrder::before, &round_ties);
      std::map<uint32_t, Entry> heads;
      const auto feeds = static_cast<uint32_t>(1 + rng() % 40);
      // Few distinct ordinals in some rounds, so that ties are common;
      // shared ranks, as fleet members have.
      const int64_t spread = round % 3 == 0 ? 4 : 1000;
      auto entry = [&](uint32_t feed) {
        return Entry{static_cast<int64_t>(rng() % spread), feed % 5, feed};
      };
      for (int step = 0; step < 300; ++step) {
        const uint32_t feed = static_cast<uint32_t>(rng() % feeds);
        switch (rng() % 4) {
          case 0:  // a feed gets a head, or another one
            heads[feed] = entry(feed);
            r.set(heads[feed]);
            break;
          case 1:  // any feed runs empty
            heads.erase(feed);
            r.clear(feed);
            break;
          case 2:  // the merge's step: the top's next head, or none
            if (!r.empty()) {
              const uint32_t top = r.top().feed;
              if (rng() % 4 == 0) {
                heads.erase(top);
                r.remove_top();
              } else {
                heads[top] = entry(top);
                heads[top].ordinal += r.top().ordinal;  // a feed's keys go up
                r.replace_top(heads[top]);
              }
            }
            break;
          default:
            break;
        }
        check_top(r, heads);
      }
      // Drain it as the merge does: the order is the reference's.
      while (!r.empty()) {
        check_top(r, heads);
        heads.erase(r.top().feed);
        r.remove_top();
      }
      CHECK(heads.empty());
    }
  }
}
