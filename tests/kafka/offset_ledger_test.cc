#include "kafka/offset_ledger.h"

#include <doctest/doctest.h>

using namespace chronomerge;

TEST_CASE("OffsetLedger") {
  OffsetLedger ledger;
  SUBCASE("has nothing to commit before a message is taken") {
    CHECK_FALSE(ledger.committable());
  }
  SUBCASE("commits past messages that make no record at once") {
    ledger.taken(0, true);
    ledger.taken(1, true);
    CHECK(ledger.committable() == 2);
    CHECK(ledger.pending() == 0);
  }
  SUBCASE("holds the commit at the first record not yet written") {
    ledger.taken(0, false);
    ledger.taken(1, true);  // a heartbeat behind a record: done, but not committable yet
    ledger.taken(2, false);
    CHECK(ledger.committable() == 0);
    ledger.settle(2);  // done out of order (a reorder window)
    CHECK(ledger.committable() == 0);
    ledger.settle(0);
    CHECK(ledger.committable() == 3);
    CHECK(ledger.pending() == 0);
  }
  SUBCASE("skips gaps in the offsets (compacted topics, transaction markers)") {
    ledger.taken(10, false);
    ledger.taken(15, false);
    ledger.settle(10);
    CHECK(ledger.committable() == 15);
    ledger.settle(15);
    CHECK(ledger.committable() == 16);
  }
  SUBCASE("ignores unknown and repeated settlements") {
    ledger.taken(3, false);
    ledger.settle(2);
    ledger.settle(4);
    CHECK(ledger.committable() == 3);
    ledger.settle(3);
    ledger.settle(3);
    CHECK(ledger.committable() == 4);
    CHECK(ledger.pending() == 0);
  }
  SUBCASE("starts afresh when the partition is read again from an earlier offset") {
    ledger.taken(5, false);
    ledger.taken(2, false);
    CHECK(ledger.committable() == 2);
    CHECK(ledger.pending() == 1);
  }
}
