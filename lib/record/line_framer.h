// LineFramer: bytes in, lines out.
//
// Lines end at '\n'; one trailing '\r' is dropped (CRLF tolerated); empty
// lines are skipped silently. A line longer than max_line_bytes is never
// buffered whole: once its length passes the limit the framer drops what it
// holds and discards bytes up to the next '\n', then reports the line once
// with its total length and its first bytes (for the log).
//
// Lines that lie entirely inside one chunk are handed out as views into that
// chunk (no copy); only a line split across chunks is assembled in the
// framer's carry buffer.
#pragma once

#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>

namespace chronomerge {

class LineFramer {
 public:
  // How many leading bytes of an overlong line are kept for its report.
  static constexpr size_t excerpt_bytes = 128;

  explicit LineFramer(size_t max_line_bytes) : max_line_bytes_(max_line_bytes) {}

  // Frames `chunk`. The visitor provides:
  //   void line(std::string_view line);   // view valid during the call only
  //   void overlong(std::string_view head, size_t total_bytes);
  template <typename Visitor>
  void push(std::string_view chunk, Visitor& visitor);

  // End of input: an unterminated final line is delivered as a line.
  template <typename Visitor>
  void finish(Visitor& visitor);

  // The producer went away mid-line (disconnect): forget the partial line.
  // Returns how many bytes were discarded (0 if none), so the caller can
  // count it; the next connection starts on a clean line.
  size_t discard_partial();

  // Bytes of an incomplete line currently held (bounded by max_line_bytes).
  size_t pending_bytes() const { return carry_.size(); }

 private:
  template <typename Visitor>
  void deliver(std::string_view line, Visitor& visitor);
  template <typename Visitor>
  void end_overlong(Visitor& visitor);

  size_t max_line_bytes_;
  std::string carry_;      // start of a line split across chunks
  bool skipping_ = false;  // inside an overlong line, discarding to '\n'
  size_t skipped_ = 0;     // total length of the overlong line so far
};

template <typename Visitor>
void LineFramer::deliver(std::string_view line, Visitor& visitor) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) return;
  if (line.size() > max_line_bytes_) {
    visitor.overlong(line.substr(0, excerpt_bytes), line.size());
    return;
  }
  visitor.line(line);
}

template <typename Visitor>
void LineFramer::end_overlong(Visitor& visitor) {
  visitor.overlong(std::string_view(carry_), skipped_);
  carry_.clear();
  skipping_ = false;
  skipped_ = 0;
}

template <typename Visitor>
void LineFramer::push(std::string_view chunk, Visitor& visitor) {
  const char* p = chunk.data();
  const char* end = p + chunk.size();
  while (p < end) {
    const char* nl = static_cast<const char*>(std::memchr(p, '\n', end - p));
    size_t n = (nl ? nl : end) - p;
    if (skipping_) {
      skipped_ += n;
      if (!nl) return;
      end_overlong(visitor);  // carry_ holds the excerpt
    } else if (!carry_.empty()) {
      // Complete (or extend) the line started in an earlier chunk.
      if (carry_.size() + n > max_line_bytes_ + 1) {  // +1: a '\r' may follow
        skipped_ = carry_.size() + n;
        carry_.resize(excerpt_bytes < carry_.size() ? excerpt_bytes : carry_.size());
        skipping_ = true;
        if (!nl) return;
        end_overlong(visitor);
      } else {
        carry_.append(p, n);
        if (!nl) return;
        deliver(std::string_view(carry_), visitor);
        carry_.clear();
      }
    } else if (nl) {
      deliver(std::string_view(p, n), visitor);
    } else if (n > max_line_bytes_ + 1) {
      skipped_ = n;
      carry_.assign(p, excerpt_bytes < n ? excerpt_bytes : n);
      skipping_ = true;
      return;
    } else {
      carry_.assign(p, n);
      return;
    }
    p = nl + 1;
  }
}

template <typename Visitor>
void LineFramer::finish(Visitor& visitor) {
  if (skipping_) {
    end_overlong(visitor);
  } else if (!carry_.empty()) {
    deliver(std::string_view(carry_), visitor);
    carry_.clear();
  }
}

inline size_t LineFramer::discard_partial() {
  size_t n = skipping_ ? skipped_ : carry_.size();
  carry_.clear();
  skipping_ = false;
  skipped_ = 0;
  return n;
}

}  // namespace chronomerge
