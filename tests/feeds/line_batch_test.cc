#include "feeds/line_batch.h"

#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

using namespace chronomerge;

namespace {

KeySpec spec_with_heartbeat() {
  KeySpec spec;
  spec.heartbeat_field = "hb";
  return spec;
}

// What a batch hands over, flattened: records as "key:bytes" (heartbeats
// marked), rejected lines as "!error:length:text", in the order a feed
// takes them (records first, rejections after, per batch).
struct Seen {
  std::vector<std::string> records;
  std::vector<std::string> rejected;
  bool operator==(const Seen&) const = default;
};

std::shared_ptr<RecordBlock> block_of(std::string_view bytes) {
  auto block = std::make_shared<RecordBlock>(bytes.size());
  std::memcpy(block->data.get(), bytes.data(), bytes.size());
  return block;
}

// Takes what `batch` holds: checks that every record lies in the memory
// of the block its run names, within the size it counts with.
void take(LineBatch& batch, Seen& seen) {
  for (const LineBatch::Run& run : batch.runs()) {
    REQUIRE(run.block.memory != nullptr);
    const auto* block = static_cast<const RecordBlock*>(run.block.memory.get());
    REQUIRE(run.block.bytes <= block->capacity);
    for (const BlockRecord& record : run.records) {
      CHECK(record.data >= block->data.get());
      CHECK(record.data + record.length <= block->data.get() + run.block.bytes);
      seen.records.push_back((record.heartbeat ? "hb " : "") + std::to_string(record.ordinal) +
                             ":" + std::string(record.bytes()));
    }
  }
  for (const LineBatch::Rejected& line : batch.rejected()) {
    seen.rejected.push_back("!" + std::string(to_string(line.error)) + ":" +
                            std::to_string(line.length) + ":" + line.text + "@" +
                            std::to_string(line.line_number));
  }
  batch.clear();
}

// Frames `input` cut at `cuts` (ascending offsets), one batch per piece,
// each piece in a block of its own, then ends the input.
// `scan_short_runs`: the vector scanner takes runs shorter than its step
// too (by default they are parsed line by line).
Seen frame_pieces(std::string_view input, const std::vector<size_t>& cuts, size_t max_line,
                  SimdLevel level = SimdLevel::scalar, bool scan_short_runs = false) {
  LineBatch batch(max_line, RecordParser(spec_with_heartbeat(), level));
  batch.scan_short_runs(scan_short_runs);
  Seen seen;
  size_t at = 0;
  for (size_t i = 0; i <= cuts.size(); ++i) {
    size_t end = i < cuts.size() ? cuts[i] : input.size();
    std::string_view piece = input.substr(at, end - at);
    batch.frame(block_of(piece), piece.size(), piece.size());
    take(batch, seen);
    at = end;
  }
  batch.finish();
  take(batch, seen);
  return seen;
}

}  // namespace

TEST_CASE("LineBatch") {
  // Every kind of line: records, CRLF, empty lines, a heartbeat, malformed
  // lines, lines over max_line_bytes (40) by a little and by a lot, one of
  // them with a CR, and a final line without '\n'.
  const std::string input =
      "{\"time\":1,\"a\":\"x\"}\n"
      "{\"time\":2}\r\n"
      "\n"
      "\r\n"
      "{\"time\":3,\"hb\":true}\n"
      "not json\n"
      "{\"time\":\"four\"}\n"
      "{\"time\":5,\"pad\":\"0123456789012345678901\"}\n"
      "{\"time\":6,\"pad\":\"01234567890123456789\"}\n"
      "{\"time\":7,\"pad\":\"" +
      std::string(100, 'p') +
      "\"}\r\n"
      "{\"time\":8}\n"
      "{\"time\":9}";
  const size_t max_line = 40;
  const Seen whole = frame_pieces(input, {}, max_line);
  // A few valid records before and after: runs of whole lines, at every
  // level, with the lines above among them.
  const std::string compact = "{\"time\":10,\"v\":[1,2]}\n{\"time\":11}\n";

  SUBCASE("frames and validates a whole input as LineFramer and RecordParser do") {
    CHECK(whole.records ==
          std::vector<std::string>{"1:{\"time\":1,\"a\":\"x\"}", "2:{\"time\":2}",
                                   "hb 3:{\"time\":3,\"hb\":true}",
                                   "6:{\"time\":6,\"pad\":\"01234567890123456789\"}",
                                   "8:{\"time\":8}", "9:{\"time\":9}"});
    REQUIRE(whole.rejected.size() == 4);
    CHECK(whole.rejected[0] == "!not_json:8:not json@6");
    CHECK(whole.rejected[2].starts_with("!too_long:41:{\"time\":5"));
    CHECK(whole.rejected[3].starts_with("!too_long:119:{\"time\":7"));
  }
  SUBCASE("every vector level frames and validates as the scalar level does, cut anywhere") {
    const std::string runs = compact + input + "\n" + compact + compact;
    const Seen scalar = frame_pieces(runs, {}, max_line);
    REQUIRE(scalar.records.size() == whole.records.size() + 6);
    for (SimdLevel level : {SimdLevel::sse2, SimdLevel::avx2, SimdLevel::avx512}) {
      if (!simd_level_supported(level)) continue;
      CAPTURE(to_string(level));
      // Short runs scanned too, or parsed line by line as by default.
      for (bool short_runs : {true, false}) {
        CAPTURE(short_runs);
        CHECK(frame_pieces(runs, {}, max_line, level, short_runs) == scalar);
        for (size_t cut = 0; cut <= runs.size(); ++cut) {
          CAPTURE(cut);
          REQUIRE(frame_pieces(runs, {cut}, max_line, level, short_runs) == scalar);
        }
      }
    }
  }
  SUBCASE("records split across two reads at every position come out the same") {
    for (size_t cut = 0; cut <= input.size(); ++cut) {
      CAPTURE(cut);
      REQUIRE(frame_pieces(input, {cut}, max_line) == whole);
    }
  }
  SUBCASE("records split across three reads at every pair of positions come out the same") {
    for (size_t a = 0; a <= input.size(); ++a) {
      for (size_t b = a; b <= input.size(); b += 3) {
        CAPTURE(a);
        CAPTURE(b);
        REQUIRE(frame_pieces(input, {a, b}, max_line) == whole);
      }
    }
  }
  SUBCASE("byte by byte") {
    std::vector<size_t> cuts;
    for (size_t i = 1; i < input.size(); ++i) cuts.push_back(i);
    CHECK(frame_pieces(input, cuts, max_line) == whole);
  }
  SUBCASE("lines whole in a read are views into its block; a spanning line gets a small block") {
    LineBatch batch(max_line, RecordParser(spec_with_heartbeat()));
    std::string first = "{\"time\":1}\n{\"time\":2}\n{\"ti";
    auto block = block_of(first);
    const char* base = block->data.get();
    batch.frame(std::move(block), first.size(), 4096);
    auto runs = batch.runs();
    REQUIRE(runs.size() == 1);
    CHECK(runs[0].records.size() == 2);
    CHECK(runs[0].records[0].data == base);
    CHECK(runs[0].block.bytes == 4096);
    batch.clear();
    std::string second = "me\":3}\n{\"time\":4}\n";
    batch.frame(block_of(second), second.size(), second.size());
    runs = batch.runs();
    REQUIRE(runs.size() == 2);
    CHECK(runs[0].records.size() == 1);
    CHECK(runs[0].records[0].bytes() == "{\"time\":3}");
    CHECK(runs[0].block.bytes == 10);  // the assembled line only
    CHECK(runs[1].records[0].bytes() == "{\"time\":4}");
    CHECK(runs[1].block.bytes == second.size());
  }
  SUBCASE("a producer gone mid-line leaves nothing for the next one") {
    LineBatch batch(max_line, RecordParser(spec_with_heartbeat()));
    std::string cut = "{\"time\":1}\n{\"time\":";
    batch.frame(block_of(cut), cut.size(), cut.size());
    Seen seen;
    take(batch, seen);
    CHECK(batch.discard_partial() == 8);
    std::string next = "2}\n{\"time\":3}\n";
    batch.frame(block_of(next), next.size(), next.size());
    take(batch, seen);
    CHECK(seen.records == std::vector<std::string>{"1:{\"time\":1}", "3:{\"time\":3}"});
    CHECK(seen.rejected == std::vector<std::string>{"!not_json:2:2}@2"});
  }
  SUBCASE("a new parser applies to the next read") {
    LineBatch batch(max_line, RecordParser(KeySpec{}));
    CHECK(batch.parser_version() == 0);
    batch.set_parser(RecordParser(spec_with_heartbeat()), 1);
    CHECK(batch.parser_version() == 1);
    std::string hb = "{\"time\":1,\"hb\":true}\n";
    batch.frame(block_of(hb), hb.size(), hb.size());
    REQUIRE(batch.runs().size() == 1);
    CHECK(batch.runs()[0].records[0].heartbeat);
  }
}

TEST_CASE("LineBatch with string keys hands each record's text beside it") {
  KeySpec spec;
  spec.type = KeyType::string;
  // Plain keys, an escaped one, a key of the wrong type between them (its
  // text must not shift the others'), and a line that spans two reads.
  const std::string input =
      "{\"time\":\"a\"}\n"
      "{\"time\":\"b\\u0041\",\"v\":[1]}\n"
      "{\"time\":3}\n"
      "{\"time\":\"cc\"}\n"
      "{\"time\":\"dd\",\"pad\":\"0123456789\"}\n"
      "{\"time\":\"e\"}\n";
  const std::vector<std::string> want{"a", "bA", "cc", "dd", "e"};
  for (SimdLevel level : {SimdLevel::scalar, SimdLevel::sse2, SimdLevel::avx2, SimdLevel::avx512}) {
    if (!simd_level_supported(level)) continue;
    CAPTURE(to_string(level));
    for (size_t cut : {size_t{0}, input.find("dd") + 4}) {
      CAPTURE(cut);
      LineBatch batch(1 << 10, RecordParser(spec, level));
      batch.scan_short_runs(true);
      std::vector<std::string> texts;
      auto take_texts = [&] {
        for (const LineBatch::Run& run : batch.runs()) {
          REQUIRE(run.texts.size() == run.records.size());
          for (size_t i = 0; i < run.size(); ++i) {
            CHECK(run.key(i) == Key::from_string(run.texts[i]));
            texts.push_back(run.texts[i]);
          }
        }
        CHECK(batch.rejected().size() <= 1);
        batch.clear();
      };
      std::string_view in(input);
      batch.frame(block_of(in.substr(0, cut)), cut, cut);
      take_texts();
      batch.frame(block_of(in.substr(cut)), in.size() - cut, in.size() - cut);
      take_texts();
      CHECK(texts == want);
    }
  }
}
