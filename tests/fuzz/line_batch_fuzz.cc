// LineBatch, the one framing and validation path of every transport,
// against a reference: however the same bytes are cut into reads (and into
// blocks with room to spare), and however often the feed takes the results
// in between, the records that come out are the lines of the input that
// parse, byte for byte and with the same keys, in order; the rejected ones
// are the others, in order, with the same reasons. Every record view is
// read before the batch is cleared, so AddressSanitizer sees any view into
// a block that is already gone.
//
// The batch validates at a SimdLevel chosen by the input (the vector levels
// scan the whole lines of a read at once); the reference parses line by
// line at SimdLevel::scalar, so the two paths are compared as well.
//
// Input, read by FuzzedDataProvider from the end: one byte for
// max_line_bytes (1..256), one for the key type, one for the level, one for how many read
// sizes follow, the read sizes (one byte each: the read's length, 0 = an
// empty read), one byte of flags (bit 0: take results after every read;
// bit 1: parse runs shorter than the vector scanner's step line by line,
// as by default, rather than scan them); the bytes before them are the
// stream.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "feeds/line_batch.h"

namespace {

using namespace chronomerge;

struct Out {
  std::vector<std::string> records;  // bytes, then the key's text and ordinal
  std::vector<std::string> rejected;
};

std::string describe(std::string_view bytes, const ParsedRecord& parsed) {
  std::string out(bytes);
  out += " | " + parsed.key.text + " | " + std::to_string(parsed.key.ordinal) +
         (parsed.heartbeat ? " | hb" : "");
  return out;
}

// The contract, written the simple way: split at '\n', drop one trailing
// '\r', skip empty lines; a line longer than max_line_bytes is rejected as
// too long (with the framer's excerpt), the others parsed one by one. A
// rejected line is reported with its number, empty lines counted.
Out reference(std::string_view stream, size_t max_line_bytes, const RecordParser& parser) {
  Out out;
  size_t start = 0;
  uint64_t number = 0;
  while (start < stream.size()) {
    ++number;
    size_t nl = stream.find('\n', start);
    size_t end = nl == std::string_view::npos ? stream.size() : nl;
    std::string_view line = stream.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    start = end + 1;
    if (line.empty()) continue;
    if (line.size() > max_line_bytes) {
      out.rejected.push_back(std::string(to_string(LineError::too_long)) + " " +
                             std::to_string(line.size()) + " line " + std::to_string(number));
      continue;
    }
    ParsedRecord parsed;
    if (auto error = parser.parse(line, parsed)) {
      out.rejected.push_back(std::string(to_string(*error)) + " " + std::to_string(line.size()) +
                             " line " + std::to_string(number));
    } else {
      out.records.push_back(describe(line, parsed));
    }
  }
  return out;
}

void take(LineBatch& batch, Out& out) {
  for (LineBatch::Run& run : batch.runs()) {
    if (run.records.empty()) continue;
    if (!run.block.memory) {
      std::fprintf(stderr, "a run without a block\n");
      std::abort();
    }
    for (size_t i = 0; i < run.size(); ++i) {
      out.records.push_back(describe(run.records[i].bytes(), run.parsed(i)));
    }
  }
  for (const LineBatch::Rejected& r : batch.rejected()) {
    out.rejected.push_back(std::string(to_string(r.error)) + " " + std::to_string(r.length) +
                           " line " + std::to_string(r.line_number));
  }
  batch.clear();
}

void expect_equal(const std::vector<std::string>& want, const std::vector<std::string>& got,
                  const char* what) {
  if (want == got) return;
  std::fprintf(stderr, "%s differ: want %zu, got %zu\n", what, want.size(), got.size());
  for (size_t i = 0; i < std::max(want.size(), got.size()); ++i) {
    const char* w = i < want.size() ? want[i].c_str() : "(none)";
    const char* g = i < got.size() ? got[i].c_str() : "(none)";
    if (i >= want.size() || i >= got.size() || want[i] != got[i]) {
      std::fprintf(stderr, "  #%zu want [%s]\n      got  [%s]\n", i, w, g);
      break;
    }
  }
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider fdp(data, size);
  const size_t max_line_bytes = 1 + fdp.ConsumeIntegral<uint8_t>();
  KeySpec spec;
  spec.path = "t";
  spec.heartbeat_field = "hb";
  switch (fdp.ConsumeIntegral<uint8_t>() % 4) {
    case 0:
      spec.type = KeyType::integer;
      break;
    case 1:
      spec.type = KeyType::number;
      break;
    case 2:
      spec.type = KeyType::rfc3339;
      break;
    default:
      spec.type = KeyType::string;
  }
  constexpr SimdLevel levels[] = {SimdLevel::scalar, SimdLevel::sse2, SimdLevel::avx2,
                                  SimdLevel::avx512};
  SimdLevel level = levels[fdp.ConsumeIntegral<uint8_t>() % 4];
  if (!simd_level_supported(level)) level = SimdLevel::scalar;
  const size_t sizes_count = fdp.ConsumeIntegralInRange<size_t>(0, 32);
  std::vector<size_t> sizes;
  for (size_t i = 0; i < sizes_count; ++i) sizes.push_back(fdp.ConsumeIntegral<uint8_t>());
  const uint8_t flags = fdp.ConsumeIntegral<uint8_t>();
  const bool take_every_read = (flags & 1) != 0;
  const bool scan_short_runs = (flags & 2) == 0;
  const std::string stream = fdp.ConsumeRemainingBytesAsString();
  if (sizes.empty() || std::all_of(sizes.begin(), sizes.end(), [](size_t s) { return s == 0; })) {
    sizes = {stream.size() > 0 ? stream.size() : 1};
  }

  const Out want = reference(stream, max_line_bytes, RecordParser(spec, SimdLevel::scalar));

  LineBatch batch(max_line_bytes, RecordParser(spec, level));
  batch.scan_short_runs(scan_short_runs);
  Out got;
  size_t at = 0;
  for (size_t i = 0; at < stream.size(); ++i) {
    const size_t n = std::min(sizes[i % sizes.size()], stream.size() - at);
    // A block with room to spare, as a pooled block is; the bytes past the
    // read are garbage the batch must never show.
    auto block = std::make_shared<RecordBlock>(n + (i % 3) * 7 + 1);
    std::memset(block->data.get(), '\n', block->capacity);
    std::memcpy(block->data.get(), stream.data() + at, n);
    const size_t capacity = block->capacity;
    batch.frame(std::move(block), n, capacity);
    at += n;
    if (take_every_read || i % 5 == 4) take(batch, got);
  }
  batch.finish();
  take(batch, got);

  expect_equal(want.records, got.records, "records");
  expect_equal(want.rejected, got.rejected, "rejected lines");
  return 0;
}
