// Fuzzes the retained output log against a reference: every record ever
// appended, kept in a vector.
//
// The input drives appends (keys that mostly rise and sometimes tie or go
// back, one or two sources), consumers that subscribe at the head, at an
// offset or at a key, with or without a feed filter, as block or
// disconnect readers, that read in batches of any size (sometimes only
// part of a batch, as a failed file write does), unsubscribe, and the
// clock. It checks:
// - every reader gets exactly the reference's records from its start, in
//   order, filtered by its feeds, with the right offsets, until it is
//   dropped (and a dropped reader reads nothing more);
// - a block reader that caught up is never dropped, and append() says
//   "full" exactly when such a reader is its limit behind;
// - retention: the log keeps at least retention_bytes (once that much was
//   appended) and at most that plus one segment, unless a block reader
//   holds more; oldest_offset() and oldest_key() match the reference;
// - locate_after() and locate_key() agree with a scan of the reference.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "output/output_log.h"

using namespace chronomerge;

namespace {

// FUZZ_TRACE=1 prints every step (to read a reproducer).
const bool trace = std::getenv("FUZZ_TRACE") != nullptr;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "output log invariant broken: %s\n", what);
    std::abort();
  }
}

struct Entry {
  std::string bytes;  // with '\n'
  int64_t key;
  std::vector<OutputLog::SourceId> sources;
};

struct Reader {
  OutputLog::ConsumerId id;
  std::vector<OutputLog::SourceId> sources;  // empty: all
  ConsumerPolicy policy;
  size_t limit;   // block: min(max_buffer, high-water mark); disconnect: max_buffer
  uint64_t next;  // reference index of the next record it may get
  // Has been within `limit` of the head: a block reader holds the merge
  // and is never dropped from then on.
  bool engaged = false;
};

bool matches(const Reader& r, const Entry& e) {
  if (r.sources.empty()) return true;
  for (auto s : e.sources) {
    if (std::find(r.sources.begin(), r.sources.end(), s) != r.sources.end()) return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  OutputLogOptions options;
  options.high_water_mark = in.ConsumeIntegralInRange<size_t>(1, 300);
  options.retention_bytes = in.ConsumeIntegralInRange<size_t>(0, 2000);
  options.segment_bytes = in.ConsumeIntegralInRange<size_t>(8, 200);
  options.run_id = "00000000000000aa";
  OutputLog log(options);
  const OutputLog::SourceId a = log.source_id("a");
  const OutputLog::SourceId b = log.source_id("b");
  std::vector<Entry> ref;
  std::map<int, Reader> readers;
  int next_reader = 0;
  int64_t key = 0;
  uint64_t now = 0;
  uint64_t appended_bytes = 0;

  // The engaged block readers' positions bound what may be trimmed.
  auto check_retention = [&] {
    const uint64_t oldest = log.oldest_offset();
    expect(oldest <= ref.size(), "oldest offset past the head");
    uint64_t data = 0;
    for (uint64_t i = oldest; i < ref.size(); ++i) data += ref[i].bytes.size();
    expect(data <= log.retained_bytes(), "retained bytes below the records retained");
    if (appended_bytes >= options.retention_bytes + options.segment_bytes + 300) {
      expect(log.retained_bytes() >= options.retention_bytes || oldest == 0,
             "retains less than retention_bytes");
    }
    if (oldest < ref.size()) {
      auto k = log.oldest_key();
      expect(k && k->ordinal == ref[oldest].key, "oldest key");
    }
  };

  while (in.remaining_bytes() > 0) {
    switch (in.ConsumeIntegralInRange<int>(0, 7)) {
      case 0:
      case 1: {  // append
        const int step = in.ConsumeIntegralInRange<int>(-1, 3);
        key += step;
        Entry e;
        e.key = key;
        const int which = in.ConsumeIntegralInRange<int>(0, 2);
        if (which != 1) e.sources.push_back(a);
        if (which != 0) e.sources.push_back(b);
        std::string record = "r" + std::to_string(ref.size());
        record.append(in.ConsumeIntegralInRange<size_t>(0, 40), 'x');
        e.bytes = record + "\n";
        // Before the append: is any caught-up block reader at its limit?
        const bool more = log.append(record, Key::from_integer(key), e.sources);
        appended_bytes += e.bytes.size();
        if (trace) {
          std::fprintf(stderr, "append %zu key=%lld sources=%zu bytes=%zu\n", ref.size(),
                       static_cast<long long>(key), e.sources.size(), e.bytes.size());
        }
        ref.push_back(std::move(e));
        bool held = false;
        for (const auto& [n, r] : readers) {
          if (r.policy == ConsumerPolicy::block && r.engaged && log.lag(r.id) >= r.limit)
            held = true;
        }
        expect(more == !held,
               "append() says full exactly when a caught-up block reader is at its limit");
        break;
      }
      case 2: {  // subscribe
        if (readers.size() >= 6) break;
        OutputLog::ConsumerOptions c;
        Reader r;
        r.policy = in.ConsumeBool() ? ConsumerPolicy::block : ConsumerPolicy::disconnect;
        c.policy = r.policy;
        c.max_buffer = in.ConsumeBool() ? SIZE_MAX : in.ConsumeIntegralInRange<size_t>(1, 500);
        r.limit = r.policy == ConsumerPolicy::block
                      ? std::min(c.max_buffer, options.high_water_mark)
                      : c.max_buffer;
        const int filter = in.ConsumeIntegralInRange<int>(0, 2);
        if (filter == 1) r.sources = {a};
        if (filter == 2) r.sources = {b};
        c.sources = r.sources;
        r.next = ref.size();
        const int start = in.ConsumeIntegralInRange<int>(0, 2);
        if (start == 1) {  // an offset
          const uint64_t after = in.ConsumeIntegralInRange<uint64_t>(0, ref.size() + 1);
          const auto at = log.locate_after(in.ConsumeBool() ? "00000000000000aa" : "ffff", after);
          if (at.gap) break;
          expect(after < ref.size() && after + 1 >= log.oldest_offset(), "locate_after gap");
          r.next = at.offset;
        } else if (start == 2) {  // a key
          const int64_t k = key - in.ConsumeIntegralInRange<int64_t>(-1, 10);
          const uint64_t skip = in.ConsumeIntegralInRange<uint64_t>(0, 3);
          const auto at = log.locate_key(Key::from_integer(k), skip, r.sources);
          if (at.gap) break;
          // The reference: the first retained record with key >= k, then
          // past `skip` matching ones equal to k.
          uint64_t i = log.oldest_offset();
          while (i < ref.size() && ref[i].key < k) ++i;
          uint64_t left = skip;
          while (i < ref.size() && left > 0 && ref[i].key == k) {
            Reader probe;
            probe.sources = r.sources;
            if (matches(probe, ref[i])) --left;
            ++i;
          }
          expect(at.offset == i, "locate_key offset");
          r.next = at.offset;
        }
        if (r.next < ref.size()) c.start = r.next;
        r.id = log.subscribe(c, nullptr);
        r.engaged = log.dropped(r.id) == DropReason::none && log.lag(r.id) <= r.limit;
        if (trace) {
          std::fprintf(stderr,
                       "subscribe #%d %s limit=%zu filter=%zu next=%llu oldest=%llu head=%zu\n",
                       next_reader, r.policy == ConsumerPolicy::block ? "block" : "disconnect",
                       r.limit, r.sources.size(), static_cast<unsigned long long>(r.next),
                       static_cast<unsigned long long>(log.oldest_offset()), ref.size());
        }
        readers[next_reader++] = r;
        break;
      }
      case 3:
      case 4: {  // read
        if (readers.empty()) break;
        auto it =
            std::next(readers.begin(), in.ConsumeIntegralInRange<size_t>(0, readers.size() - 1));
        Reader& r = it->second;
        std::vector<OutputLog::Slice> slices;
        uint64_t end = 0;
        const size_t max = in.ConsumeIntegralInRange<size_t>(1, 400);
        const size_t n = log.peek(r.id, slices, max, &end);
        if (trace) {
          std::fprintf(
              stderr,
              "read #%d max=%zu -> %zu bytes, %zu slices, next=%llu first=%llu dropped=%d\n",
              it->first, max, n, slices.size(), static_cast<unsigned long long>(r.next),
              slices.empty() ? 0ULL : static_cast<unsigned long long>(slices[0].first_offset),
              static_cast<int>(log.dropped(r.id)));
        }
        if (log.dropped(r.id) != DropReason::none) {
          expect(n == 0, "a dropped reader reads");
          break;
        }
        for (const auto& s : slices) {
          // The slice's first offset is the reference index of its first
          // record, which must match the reader's.
          while (r.next < ref.size() && !matches(r, ref[r.next])) ++r.next;
          expect(s.first_offset == r.next, "slice offset");
          for (std::string_view rest = s.bytes; !rest.empty();) {
            while (r.next < ref.size() && !matches(r, ref[r.next])) ++r.next;
            expect(r.next < ref.size(), "read past the head");
            const std::string& want = ref[r.next].bytes;
            expect(rest.substr(0, want.size()) == want, "record bytes");
            rest.remove_prefix(want.size());
            ++r.next;
          }
        }
        expect(n == 0 || n <= max || slices.size() == 1, "batch over max_bytes");
        if (in.ConsumeBool() || !r.sources.empty()) {
          log.consume_to(r.id, end);
        } else {
          // Part of the batch, on a record boundary: a failed write.
          size_t part = in.ConsumeIntegralInRange<size_t>(0, n);
          size_t whole = 0;
          uint64_t back = 0;  // records not consumed
          std::string all;
          for (const auto& s : slices) all += s.bytes;
          for (size_t at = 0; at < all.size();) {
            const size_t nl = all.find('\n', at);
            if (nl + 1 <= part) {
              whole = nl + 1;
            } else {
              ++back;
            }
            at = nl + 1;
          }
          log.consume(r.id, whole);
          r.next -= back;
        }
        // Skipped records after the last one read are passed over too.
        if (log.lag(r.id) == 0) r.next = ref.size();
        if (log.lag(r.id) <= r.limit) r.engaged = true;
        break;
      }
      case 5: {  // unsubscribe
        if (readers.empty()) break;
        auto it =
            std::next(readers.begin(), in.ConsumeIntegralInRange<size_t>(0, readers.size() - 1));
        log.unsubscribe(it->second.id);
        readers.erase(it);
        break;
      }
      case 6:
        now += in.ConsumeIntegralInRange<uint64_t>(0, 100);
        log.tick(now);
        break;
      case 7:
        log.flush();
        break;
    }
    for (const auto& [n, r] : readers) {
      if (r.policy == ConsumerPolicy::block && r.engaged) {
        expect(log.dropped(r.id) == DropReason::none, "a caught-up block reader was dropped");
      }
    }
    check_retention();
  }
  return 0;
}
