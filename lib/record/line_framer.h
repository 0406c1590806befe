// LineFramer: bytes in, lines out.
//
// Lines end at '\n'; one trailing '\r' is dropped (CRLF tolerated); empty
// lines are skipped silently. A line longer than max_line_bytes is never
// buffered whole: once its length passes the limit the framer drops what it
// holds and discards bytes up to the next '\n', then reports the line once
// with its length and its first excerpt_bytes bytes (for the log). How the
// bytes were split into chunks never changes what is delivered or reported.
//
// Lines that lie entirely inside one chunk are handed out as views into that
// chunk (no copy); only a line split across chunks is assembled in the
// framer's carry buffer.
//
// A visitor that validates whole runs of lines at once may take them as
// runs: see push().
#pragma once

#include <algorithm>
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
  // For an overlong line, `total_bytes` is its length as a line would have
  // (without '\n' and one trailing '\r') and `head` its first
  // min(excerpt_bytes, total_bytes) bytes.
  // A visitor may also provide
  //   void lines(std::string_view run);
  // which then gets every run of whole lines lying in the chunk (each
  // ending in '\n') instead of line() calls for them; it must pass each of
  // those lines, in order, to deliver() or, for one it made a record of
  // itself (neither empty nor overlong once one '\r' is dropped), to
  // count_line(), so that line numbers and the rules above stay the
  // framer's.
  template <typename Visitor>
  void push(std::string_view chunk, Visitor& visitor);

  // One whole line (without its '\n') by the rules above: a '\r' dropped,
  // skipped if empty, overlong or delivered. Counts it.
  template <typename Visitor>
  void deliver(std::string_view line, Visitor& visitor);
  // A whole line the visitor took itself: counts it.
  void count_line() { ++line_number_; }
  size_t max_line_bytes() const { return max_line_bytes_; }

  // End of input: an unterminated final line is delivered as a line.
  template <typename Visitor>
  void finish(Visitor& visitor);

  // The producer went away mid-line (disconnect): forget the partial line.
  // Returns how many bytes were discarded (0 if none), so the caller can
  // count it; the next connection starts on a clean line.
  size_t discard_partial();

  // The number of the line last delivered (line() or overlong()), counting
  // from 1 and counting the empty lines it skips: what a warning names.
  uint64_t line_number() const { return line_number_; }

  // Bytes of an incomplete line currently held: at most max_line_bytes + 1
  // (a '\r' may follow), or excerpt_bytes inside an overlong line.
  size_t pending_bytes() const { return carry_.size(); }

 private:
  void skip(const char* p, size_t n);
  template <typename Visitor>
  void end_overlong(Visitor& visitor);

  size_t max_line_bytes_;
  std::string carry_;        // start of a line split across chunks; the excerpt when skipping
  bool skipping_ = false;    // inside an overlong line, discarding to '\n'
  size_t skipped_ = 0;       // total length of the overlong line so far
  bool skipped_cr_ = false;  // its last byte so far is a '\r'
  uint64_t line_number_ = 0;
};

template <typename Visitor>
void LineFramer::deliver(std::string_view line, Visitor& visitor) {
  ++line_number_;
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) return;
  if (line.size() > max_line_bytes_) {
    visitor.overlong(line.substr(0, excerpt_bytes), line.size());
    return;
  }
  visitor.line(line);
}

// Inside an overlong line: count the bytes, and keep the first ones for the
// excerpt, so that it does not depend on where the reads happened to end.
inline void LineFramer::skip(const char* p, size_t n) {
  if (n == 0) return;
  skipped_ += n;
  skipped_cr_ = p[n - 1] == '\r';
  if (carry_.size() < excerpt_bytes) {
    carry_.append(p, std::min(n, excerpt_bytes - carry_.size()));
  }
}

template <typename Visitor>
void LineFramer::end_overlong(Visitor& visitor) {
  // Measured like a line: a CR before the '\n' is not part of it.
  const size_t total = skipped_ - (skipped_cr_ ? 1 : 0);
  if (carry_.size() > total) carry_.resize(total);
  ++line_number_;
  visitor.overlong(std::string_view(carry_), total);
  carry_.clear();
  skipping_ = false;
  skipped_ = 0;
  skipped_cr_ = false;
}

template <typename Visitor>
void LineFramer::push(std::string_view chunk, Visitor& visitor) {
  const char* p = chunk.data();
  const char* end = p + chunk.size();
  while (p < end) {
    auto* nl = static_cast<const char*>(std::memchr(p, '\n', end - p));
    size_t n = (nl ? nl : end) - p;
    // A line that will not fit whatever follows (+1: a '\r' may follow)
    // starts being skipped as soon as that is clear, unless it lies whole
    // in this chunk: deliver() reports that one without a copy.
    if (!skipping_ && (!carry_.empty() || !nl) && carry_.size() + n > max_line_bytes_ + 1) {
      skipping_ = true;
      skipped_ = carry_.size();
      skipped_cr_ = !carry_.empty() && carry_.back() == '\r';
      if (carry_.size() > excerpt_bytes) carry_.resize(excerpt_bytes);
    }
    if (skipping_) {
      skip(p, n);
      if (!nl) return;
      end_overlong(visitor);
    } else if (!carry_.empty()) {
      // Complete (or extend) the line started in an earlier chunk.
      carry_.append(p, n);
      if (!nl) return;
      deliver(std::string_view(carry_), visitor);
      carry_.clear();
    } else if (nl) {
      if constexpr (requires { visitor.lines(std::string_view()); }) {
        // Every whole line left in the chunk, in one run.
        nl = static_cast<const char*>(memrchr(nl, '\n', static_cast<size_t>(end - nl)));
        visitor.lines(std::string_view(p, static_cast<size_t>(nl + 1 - p)));
      } else {
        deliver(std::string_view(p, n), visitor);
      }
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
  skipped_cr_ = false;
  return n;
}

}  // namespace chronomerge
