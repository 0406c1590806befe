// LineFramer against a reference splitter: however the same bytes are cut
// into reads, the framer must hand out the same lines and the same
// overlong-line reports as splitting the whole input at once.
//
// Input, read by FuzzedDataProvider from the end: one byte for
// max_line_bytes (1..256, so lines cross both the limit and the 128-byte
// excerpt), one byte for how many read sizes follow, the read sizes (one
// byte each, 0 = an empty read); the bytes before them are the stream. The
// stream is framed four ways: in one read, in the fuzzed read sizes (cycled),
// one byte per read, and in reads that end just after every '\r' and '\n'.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "record/line_framer.h"

namespace {

using chronomerge::LineFramer;

struct Event {
  bool overlong = false;
  std::string bytes;  // the line, or the overlong line's excerpt
  size_t total = 0;   // overlong: the line's length
  friend bool operator==(const Event&, const Event&) = default;
};

struct Collect {
  std::vector<Event> events;
  void line(std::string_view line) { events.push_back({false, std::string(line), line.size()}); }
  void overlong(std::string_view head, size_t total) {
    events.push_back({true, std::string(head), total});
  }
};

// The contract, written the simple way: split at '\n', drop one trailing
// '\r', skip empty lines; a line longer than max_line_bytes is reported
// with its length and its first excerpt_bytes bytes. An unterminated last
// line counts at the end of input.
std::vector<Event> reference(std::string_view stream, size_t max_line_bytes) {
  std::vector<Event> events;
  size_t start = 0;
  while (start < stream.size()) {
    size_t nl = stream.find('\n', start);
    size_t end = nl == std::string_view::npos ? stream.size() : nl;
    std::string_view line = stream.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > max_line_bytes) {
      events.push_back({true, std::string(line.substr(0, LineFramer::excerpt_bytes)), line.size()});
    } else if (!line.empty()) {
      events.push_back({false, std::string(line), line.size()});
    }
    start = end + 1;
  }
  return events;
}

[[noreturn]] void fail(const char* how, std::string_view stream, size_t max_line_bytes,
                       const std::vector<Event>& want, const std::vector<Event>& got) {
  std::fprintf(stderr, "line_framer_fuzz: %s (max_line_bytes %zu, %zu bytes)\n", how,
               max_line_bytes, stream.size());
  auto print = [](const char* label, const std::vector<Event>& events) {
    std::fprintf(stderr, "%s:\n", label);
    for (const Event& e : events) {
      std::fprintf(stderr, "  %s %zu [", e.overlong ? "overlong" : "line", e.total);
      for (unsigned char c : e.bytes) {
        if (c >= 0x20 && c < 0x7f && c != '\\') {
          std::fputc(c, stderr);
        } else {
          std::fprintf(stderr, "\\x%02x", c);
        }
      }
      std::fprintf(stderr, "]\n");
    }
  };
  print("reference", want);
  print("framer", got);
  std::abort();
}

// Frames `stream` cut at the given offsets (ascending, within the stream).
std::vector<Event> frame(std::string_view stream, size_t max_line_bytes,
                         const std::vector<size_t>& cuts, const char* how) {
  LineFramer framer(max_line_bytes);
  Collect collect;
  size_t from = 0;
  auto push = [&](size_t to) {
    framer.push(stream.substr(from, to - from), collect);
    from = to;
    // Never more than one line's worth held, whatever the input.
    const size_t bound = max_line_bytes + 1 > LineFramer::excerpt_bytes ? max_line_bytes + 1
                                                                        : LineFramer::excerpt_bytes;
    if (framer.pending_bytes() > bound) {
      std::fprintf(stderr, "line_framer_fuzz: %s: %zu bytes pending, bound %zu\n", how,
                   framer.pending_bytes(), bound);
      std::abort();
    }
  };
  for (size_t cut : cuts) push(cut);
  push(stream.size());
  framer.finish(collect);
  return collect.events;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  const size_t max_line_bytes = size_t{input.ConsumeIntegral<uint8_t>()} + 1;
  std::vector<size_t> sizes(input.ConsumeIntegral<uint8_t>() % 32);
  for (size_t& s : sizes) s = input.ConsumeIntegral<uint8_t>();
  const std::string stream = input.ConsumeRemainingBytesAsString();

  const std::vector<Event> want = reference(stream, max_line_bytes);

  std::vector<Event> got = frame(stream, max_line_bytes, {}, "one read");
  if (got != want) fail("one read", stream, max_line_bytes, want, got);

  std::vector<size_t> cuts;
  // Empty reads (size 0) are pushes too; the bound keeps all-zero sizes
  // from looping forever.
  for (size_t at = 0, i = 0; !sizes.empty() && at < stream.size() && i < 2 * stream.size() + 64;
       ++i) {
    at = std::min(stream.size(), at + sizes[i % sizes.size()]);
    cuts.push_back(at);
  }
  got = frame(stream, max_line_bytes, cuts, "fuzzed reads");
  if (got != want) fail("fuzzed reads", stream, max_line_bytes, want, got);

  cuts.clear();
  for (size_t at = 1; at < stream.size(); ++at) cuts.push_back(at);
  got = frame(stream, max_line_bytes, cuts, "byte reads");
  if (got != want) fail("byte reads", stream, max_line_bytes, want, got);

  cuts.clear();
  for (size_t at = 0; at < stream.size(); ++at) {
    if (stream[at] == '\r' || stream[at] == '\n') cuts.push_back(at + 1);
  }
  got = frame(stream, max_line_bytes, cuts, "reads cut at line ends");
  if (got != want) fail("reads cut at line ends", stream, max_line_bytes, want, got);
  return 0;
}
