#include "sinks/write_batch.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace chronomerge {
namespace {

// Cuts `slices` after their last newline and returns the bytes left; 0
// (and nothing cut) if they hold no newline.
size_t cut_after_last_newline(std::vector<OutputLog::Slice>& slices) {
  for (size_t i = slices.size(); i-- > 0;) {
    std::string_view bytes = slices[i].bytes;
    const void* nl = ::memrchr(bytes.data(), '\n', bytes.size());
    if (nl == nullptr) continue;
    slices[i].bytes = bytes.substr(0, static_cast<const char*>(nl) - bytes.data() + 1);
    slices.resize(i + 1);
    size_t total = 0;
    for (const auto& slice : slices) total += slice.bytes.size();
    return total;
  }
  return 0;
}

}  // namespace

void WriteBatch::clear() {
  preamble.clear();
  slices.clear();
  bufs.clear();
  bytes = 0;
  written = 0;
}

size_t WriteBatch::fill(OutputCursor& cursor, size_t max_bytes, bool whole_records) {
  std::string first = std::move(preamble);
  clear();
  preamble = std::move(first);
  bytes = cursor.peek(slices, max_bytes);
  if (bytes > 0 && whole_records) {
    // A batch ends at a chunk boundary, mostly inside a record: cut it
    // after its last newline. The stream always ends with a newline.
    size_t whole = cut_after_last_newline(slices);
    if (whole == 0) {
      slices.clear();
      const size_t all = cursor.peek(slices, SIZE_MAX);
      whole = cut_after_last_newline(slices);
      if (whole == 0) whole = all;
    }
    bytes = whole;
  }
  bufs.reserve(slices.size() + 1);
  if (!preamble.empty()) {
    bufs.push_back(uv_buf_init(preamble.data(), static_cast<unsigned>(preamble.size())));
  }
  for (const auto& slice : slices) {
    bufs.push_back(uv_buf_init(const_cast<char*>(slice.bytes.data()),
                               static_cast<unsigned>(slice.bytes.size())));
  }
  return bytes;
}

void WriteBatch::advance(size_t n) {
  written += n;
  size_t skip = n;
  auto first = bufs.begin();
  while (first != bufs.end() && skip >= first->len) {
    skip -= first->len;
    ++first;
  }
  bufs.erase(bufs.begin(), first);
  if (!bufs.empty()) {
    bufs.front().base += skip;
    bufs.front().len -= skip;
  }
}

size_t whole_records_in(const std::vector<OutputLog::Slice>& slices, size_t limit) {
  size_t start = 0;
  size_t whole = 0;
  for (const auto& slice : slices) {
    if (start >= limit) break;
    size_t n = std::min(slice.bytes.size(), limit - start);
    if (const void* nl = ::memrchr(slice.bytes.data(), '\n', n)) {
      whole = start + static_cast<size_t>(static_cast<const char*>(nl) - slice.bytes.data()) + 1;
    }
    start += slice.bytes.size();
  }
  return whole;
}

uint64_t count_records(const std::vector<OutputLog::Slice>& slices) {
  uint64_t records = 0;
  for (const auto& slice : slices) {
    records += static_cast<uint64_t>(std::count(slice.bytes.begin(), slice.bytes.end(), '\n'));
  }
  return records;
}

}  // namespace chronomerge
