#include "sinks/write_batch.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <string_view>

#include <fmt/format.h>

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

WriteBatch& WriteBatch::operator=(WriteBatch&& other) noexcept {
  framing = other.framing;
  run = std::move(other.run);
  preamble = std::move(other.preamble);
  slices = std::move(other.slices);
  bufs = std::move(other.bufs);
  bytes = other.bytes;
  written = other.written;
  frames_ = std::move(other.frames_);
  // Only buffers into the preamble or the frames can have moved; those
  // into the slices point at segments on the heap.
  if (!bufs.empty() && written == 0 && (!preamble.empty() || framing != Framing::raw)) build();
  other.clear();
  return *this;
}

void WriteBatch::clear() {
  preamble.clear();
  frames_.clear();
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
  build();
  return bytes;
}

namespace {

uv_buf_t buf_of(std::string_view bytes) {
  return uv_buf_init(const_cast<char*>(bytes.data()), static_cast<unsigned>(bytes.size()));
}

}  // namespace

void WriteBatch::build() {
  bufs.clear();
  frames_.clear();
  if (!preamble.empty()) bufs.push_back(buf_of(preamble));
  if (slices.empty()) return;
  if (framing == Framing::raw) {
    bufs.reserve(bufs.size() + slices.size());
    for (const auto& slice : slices) bufs.push_back(buf_of(slice.bytes));
    return;
  }
  // The frames are written into one string first (the buffers point into
  // it, so it must not grow afterwards), then the buffers interleave them
  // with the records.
  static constexpr std::string_view crlf = "\r\n";
  static constexpr std::string_view event_end = "\n\n";
  size_t body = 0;
  std::vector<size_t> id_ends;  // events: where each record's "id:... data: " ends
  if (framing == Framing::chunked) {
    for (const auto& slice : slices) body += slice.bytes.size();
  } else {
    for (const auto& slice : slices) {
      uint64_t offset = slice.first_offset;
      for (std::string_view rest = slice.bytes; !rest.empty(); ++offset) {
        const size_t end = rest.find('\n');
        const size_t record = end == std::string_view::npos ? rest.size() : end;
        fmt::format_to(std::back_inserter(frames_), "id: {}:{}\ndata: ", run, offset);
        id_ends.push_back(frames_.size());
        body += record + event_end.size();
        rest.remove_prefix(std::min(rest.size(), record + 1));
      }
    }
    body += frames_.size();
  }
  char header[24];
  const int header_size = std::snprintf(header, sizeof(header), "%zx\r\n", body);
  const size_t header_at = frames_.size();
  frames_.append(header, static_cast<size_t>(header_size));
  const std::string_view frames = frames_;
  bufs.push_back(buf_of(frames.substr(header_at)));
  if (framing == Framing::chunked) {
    for (const auto& slice : slices) bufs.push_back(buf_of(slice.bytes));
  } else {
    size_t event = 0;
    size_t id_start = 0;
    for (const auto& slice : slices) {
      for (std::string_view rest = slice.bytes; !rest.empty(); ++event) {
        const size_t end = rest.find('\n');
        const size_t record = end == std::string_view::npos ? rest.size() : end;
        bufs.push_back(buf_of(frames.substr(id_start, id_ends[event] - id_start)));
        bufs.push_back(buf_of(rest.substr(0, record)));
        bufs.push_back(buf_of(event_end));
        id_start = id_ends[event];
        rest.remove_prefix(std::min(rest.size(), record + 1));
      }
    }
  }
  bufs.push_back(buf_of(crlf));
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
