#include "merge/head_tournament.h"

#include <bit>

namespace chronomerge {

bool HeadTournament::tie_or_empty(Entry a, Entry b) const {
  if (a.rank == empty_rank || b.rank == empty_rank) {
    return b.rank == empty_rank && a.rank != empty_rank;
  }
  return tie_(context_, a, b);
}

void HeadTournament::set(const Entry& entry) {
  if (entry.feed >= capacity_) grow(size_t{entry.feed} + 1);
  size_t node = capacity_ + entry.feed;
  winners_[node] = entry;
  // Each match on the way up is played again against the winner of the
  // sibling side: the loser kept at the node may be this leaf's own old
  // entry, not the best of the other side.
  for (; node > 1; node >>= 1) {
    const Entry& mine = winners_[node];
    const Entry& other = winners_[node ^ 1];
    const bool other_first = before(other, mine);
    const Entry winner = other_first ? other : mine;
    losers_[node >> 1] = other_first ? mine : other;
    winners_[node >> 1] = winner;
  }
}

void HeadTournament::clear(uint32_t feed) {
  if (feed >= capacity_) return;  // never had a head
  set(empty_leaf(feed));
}

void HeadTournament::rerank(const std::vector<uint32_t>& rank_of) {
  for (size_t i = 0; i < capacity_ && i < rank_of.size(); ++i) {
    Entry& leaf = winners_[capacity_ + i];
    if (leaf.rank != empty_rank) leaf.rank = rank_of[i];
  }
  replay_all();
}

void HeadTournament::grow(size_t feeds) {
  const size_t capacity = std::bit_ceil(std::max<size_t>(feeds, 2));
  std::vector<Entry> winners(2 * capacity);
  for (size_t i = 0; i < capacity; ++i) {
    winners[capacity + i] =
        i < capacity_ ? winners_[capacity_ + i] : empty_leaf(static_cast<uint32_t>(i));
  }
  winners_ = std::move(winners);
  losers_.assign(capacity, Entry{});
  capacity_ = capacity;
  levels_ = static_cast<size_t>(std::countr_zero(capacity));
  replay_all();
}

void HeadTournament::replay_all() {
  for (size_t node = capacity_; node-- > 1;) {
    const Entry& left = winners_[2 * node];
    const Entry& right = winners_[2 * node + 1];
    const bool right_first = before(right, left);
    winners_[node] = right_first ? right : left;
    losers_[node] = right_first ? left : right;
  }
}

}  // namespace chronomerge
