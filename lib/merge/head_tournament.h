// HeadTournament: which feed's head the merge emits next — a tournament
// tree over the feeds' heads, by feed id.
//
// Every feed id is a leaf; a feed with no head (an empty queue) has an
// empty leaf, which loses every match. Each inner node keeps both players
// of the match played there: the winner, which moved up, and the loser.
// Replacing the top's head (the merge's every step) replays only the
// top's path, and each match there is against the loser kept at its node
// — the best of the other side, since the top won every match on its way
// up: a fixed number of compares and conditional moves, no branch on
// their outcome. A binary heap, which this replaced, branched at every
// level on which child is smaller and where the entry stops climbing, and
// those branches are coin flips on interleaved feeds: a loop merging the
// keys of the benchmark's eight feeds and doing nothing else took 22 ns
// per record with the heap and 13.5 with this tree (two feeds: 11.7 and
// 5.3). Any other leaf change (a feed gets a head while another is on
// top) replays its path against the winners kept at the sibling nodes.
//
// Order: the smaller ordinal first; equal ordinals go to the tie function,
// which must be a strict weak order consistent with the ordinals (it sees
// only entries whose ordinals are equal, and never an empty leaf).
//
// Pure; loop thread only, like the Merger that owns it.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace chronomerge {

class HeadTournament {
 public:
  struct Entry {
    int64_t ordinal;
    uint32_t rank;  // empty_rank: an empty leaf
    uint32_t feed;
  };
  static constexpr uint32_t empty_rank = UINT32_MAX;
  // True if a comes before b; a and b have equal ordinals, neither is
  // empty. `context` is the one given to the constructor.
  using Tie = bool (*)(const void* context, const Entry& a, const Entry& b);

  HeadTournament(Tie tie, const void* context) : tie_(tie), context_(context) {}

  // No feed has a head.
  bool empty() const { return winners_.empty() || winners_[1].rank == empty_rank; }
  // The head that comes first. REQUIRES: !empty().
  const Entry& top() const { return winners_[1]; }

  // The top feed's next head replaces its last one (same feed).
  void replace_top(const Entry& next) {
    winners_[capacity_ + next.feed] = next;
    // The match at each node on the way up, against the loser kept there.
    // The entry moving up stays in two registers, and each of them is
    // picked by masks, not by a branch, which the compiler made of a
    // conditional expression here: the outcome is a coin flip.
    Words moving = std::bit_cast<Words>(next);
    for (size_t node = (capacity_ + next.feed) >> 1; node >= 1; node >>= 1) {
      const Words kept = std::bit_cast<Words>(losers_[node]);
      const auto kept_ordinal = static_cast<int64_t>(kept.ordinal);
      const auto moving_ordinal = static_cast<int64_t>(moving.ordinal);
      const bool kept_first =
          kept_ordinal != moving_ordinal
              ? kept_ordinal < moving_ordinal
              : tie_or_empty(std::bit_cast<Entry>(kept), std::bit_cast<Entry>(moving));
      const uint64_t take = 0 - uint64_t{kept_first};  // all ones: the kept one wins
      const Words winner{(kept.ordinal & take) | (moving.ordinal & ~take),
                         (kept.rest & take) | (moving.rest & ~take)};
      const Words loser{winner.ordinal ^ kept.ordinal ^ moving.ordinal,
                        winner.rest ^ kept.rest ^ moving.rest};
      losers_[node] = std::bit_cast<Entry>(loser);
      winners_[node] = std::bit_cast<Entry>(winner);
      moving = winner;
    }
  }
  // The top feed has no head any more.
  void remove_top() { replace_top(empty_leaf(top().feed)); }
  // `entry.feed` has a head now (it had none, or another one): any feed,
  // not only the top's.
  void set(const Entry& entry);
  // The feed has no head any more (any feed).
  void clear(uint32_t feed);

  // After ranks changed: the entries' ranks are set again from `rank_of`
  // (by feed id) and every match replayed.
  void rerank(const std::vector<uint32_t>& rank_of);

  // The heads most likely to come after the top, in that order: the losers
  // kept on the top's path, nearest the root first (the one there is the
  // best of half the feeds), at most `n`. REQUIRES: !empty().
  template <typename F>
  void contenders(size_t n, F&& visit) const {
    for (size_t shift = levels_; shift-- > 0 && n-- > 0;) {
      const Entry& e = losers_[(capacity_ + top().feed) >> (shift + 1)];
      if (e.rank != empty_rank) visit(e);
    }
  }

  // Leaves, a power of two: at least the largest feed id given plus one.
  size_t capacity() const { return capacity_; }

 private:
  // An Entry as two words, to pick between entries without a branch.
  struct Words {
    uint64_t ordinal;
    uint64_t rest;  // rank and feed
  };
  static_assert(sizeof(Words) == sizeof(Entry));
  static Entry empty_leaf(uint32_t feed) { return Entry{INT64_MAX, empty_rank, feed}; }
  bool before(const Entry& a, const Entry& b) const {
    if (a.ordinal != b.ordinal) [[likely]]
      return a.ordinal < b.ordinal;
    return tie_or_empty(a, b);
  }
  // before() for equal ordinals: an empty leaf last, else the tie
  // function. Out of line, so that the common path keeps its registers.
  [[gnu::noinline]] bool tie_or_empty(Entry a, Entry b) const;
  // Room for feed ids below `feeds`, every match replayed.
  void grow(size_t feeds);
  void replay_all();

  Tie tie_;
  const void* context_;
  size_t capacity_ = 0;  // leaves
  size_t levels_ = 0;    // log2(capacity_)
  // Nodes 1 .. capacity_ - 1 are the matches, node 1 the final; leaf i is
  // winners_[capacity_ + i]. Node 0 is unused.
  std::vector<Entry> winners_;
  std::vector<Entry> losers_;
};

}  // namespace chronomerge
