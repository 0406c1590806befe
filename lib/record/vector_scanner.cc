#include "record/vector_scanner.h"

#include <simdjson.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace chronomerge {

namespace {

using Word = uint64_t;
#if defined(__x86_64__)
typedef uint64_t Lanes8 __attribute__((vector_size(64)));
typedef uint64_t Lanes4 __attribute__((vector_size(32)));
#endif

// Stage 1's view of 64 bytes per lane: bit i of each mask describes byte i.
template <typename W>
struct Chunk {
  W quote;
  W backslash;
  W whitespace;  // space, tab, CR
  W newline;
  W lbrace;
  W rbrace;
  W lbracket;
  W rbracket;
  W colon;
  W comma;
  W control;  // below 0x20, newline included
  W high;     // 0x80 and above
  W digit;
  W zero;
  W minus;
  W plus;
  W dot;
  W exponent;    // e or E
  W key_first;   // the first byte of the key's name
  W beat_first;  // the first byte of the heartbeat field's name (0 without one)
};

// Whether a byte ends a number or literal.
inline bool is_delimiter(char c) {
  switch (c) {
    case '"':
    case ' ':
    case '\t':
    case '\r':
    case '\n':
    case '{':
    case '}':
    case '[':
    case ']':
    case ':':
    case ',':
      return true;
    default:
      return false;
  }
}

// A member name to look for, with its first eight bytes ready to compare
// in one load.
class Name {
 public:
  explicit Name(std::string_view name) : name_(name) {
    const size_t head = name.size() < 8 ? name.size() : 8;
    std::memcpy(&head_, name.data(), head);
    mask_ = head == 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * head)) - 1;
  }
  size_t size() const { return name_.size(); }
  bool empty() const { return name_.empty(); }
  char first() const { return name_.empty() ? '\0' : name_[0]; }

  // Whether the string whose opening quote is at `quote` is this name:
  // without escapes (stage 1 sent those away), the byte after the name is
  // then its closing quote. The line ends at `end`.
  bool at(const char* data, size_t end, size_t quote) const {
    const size_t body = quote + 1;
    const size_t size = name_.size();
    if (end - body <= size || data[body + size] != '"') return false;
    if (std::endian::native == std::endian::little && size <= 8 && end - body >= 8) {
      uint64_t have;
      std::memcpy(&have, data + body, 8);
      return (have & mask_) == head_;
    }
    return std::memcmp(data + body, name_.data(), size) == 0;
  }

 private:
  std::string_view name_;
  uint64_t head_ = 0;
  uint64_t mask_ = 0;
};

// The names a scan looks for.
struct Query {
  Name key;
  Name heartbeat_field;
};

// --- classification: SSE2, AVX2, AVX-512BW -----------------------------------
//
// Byte | 0x20 folds 'E' onto 'e'. A byte is a control byte when its
// unsigned minimum with 0x1F is itself, a digit when its distance from '0'
// is (unsigned minimum with 9); non-ASCII bytes have their top bit set,
// which movemask collects directly.

// The rare masks of a step none of whose bytes is rare (see
// classify_avx512()): empty, and its only control bytes its newlines. The
// one place that says which masks a step without rare bytes may skip.
template <typename W>
[[gnu::always_inline]] inline void no_rare_bytes(Chunk<W>& c) {
  c.backslash = c.lbracket = c.rbracket = c.high = c.plus = W{};
  c.control = c.newline;
}

// Sets lane `lane` of a word of masks to `mask` (a Word has one lane, 0).
template <typename W>
[[gnu::always_inline]] inline void put(W& word, int lane, uint64_t mask) {
  std::memcpy(reinterpret_cast<char*>(&word) + sizeof(uint64_t) * static_cast<size_t>(lane), &mask,
              sizeof(mask));
}

#if defined(__x86_64__)

inline __m128i eq16(__m128i x, char c) {
  return _mm_cmpeq_epi8(x, _mm_set1_epi8(c));
}
inline uint64_t bits16(__m128i v, int shift) {
  return static_cast<uint64_t>(static_cast<uint32_t>(_mm_movemask_epi8(v))) << shift;
}

[[gnu::always_inline]] inline void classify_sse2(const char* p, const Query& q, Chunk<Word>& c) {
  c = Chunk<Word>{};
  for (int shift = 0; shift < 64; shift += 16) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + shift));
    const __m128i folded = _mm_or_si128(x, _mm_set1_epi8(0x20));
    const __m128i from_zero = _mm_sub_epi8(x, _mm_set1_epi8('0'));
    c.quote |= bits16(eq16(x, '"'), shift);
    c.backslash |= bits16(eq16(x, '\\'), shift);
    c.whitespace |=
        bits16(_mm_or_si128(_mm_or_si128(eq16(x, ' '), eq16(x, '\t')), eq16(x, '\r')), shift);
    c.newline |= bits16(eq16(x, '\n'), shift);
    c.lbrace |= bits16(eq16(x, '{'), shift);
    c.rbrace |= bits16(eq16(x, '}'), shift);
    c.lbracket |= bits16(eq16(x, '['), shift);
    c.rbracket |= bits16(eq16(x, ']'), shift);
    c.colon |= bits16(eq16(x, ':'), shift);
    c.comma |= bits16(eq16(x, ','), shift);
    c.control |= bits16(_mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x1F)), x), shift);
    c.high |= bits16(x, shift);
    c.digit |= bits16(_mm_cmpeq_epi8(_mm_min_epu8(from_zero, _mm_set1_epi8(9)), from_zero), shift);
    c.zero |= bits16(eq16(x, '0'), shift);
    c.minus |= bits16(eq16(x, '-'), shift);
    c.plus |= bits16(eq16(x, '+'), shift);
    c.dot |= bits16(eq16(x, '.'), shift);
    c.exponent |= bits16(eq16(folded, 'e'), shift);
    c.key_first |= bits16(eq16(x, q.key.first()), shift);
    if (!q.heartbeat_field.empty()) {
      c.beat_first |= bits16(eq16(x, q.heartbeat_field.first()), shift);
    }
  }
}

[[gnu::target("avx2"), gnu::always_inline]] inline __m256i eq32(__m256i x, char c) {
  return _mm256_cmpeq_epi8(x, _mm256_set1_epi8(c));
}
[[gnu::target("avx2"), gnu::always_inline]] inline uint64_t bits32(__m256i v, int shift) {
  return static_cast<uint64_t>(static_cast<uint32_t>(_mm256_movemask_epi8(v))) << shift;
}

// A chunk's mask from a test of its two halves, and its bytes equal to c.
[[gnu::target("avx2"), gnu::always_inline]] inline uint64_t chunk_mask(__m256i lo, __m256i hi) {
  return bits32(lo, 0) | bits32(hi, 32);
}
[[gnu::target("avx2"), gnu::always_inline]] inline uint64_t chunk_eq(__m256i lo, __m256i hi,
                                                                     char c) {
  return chunk_mask(eq32(lo, c), eq32(hi, c));
}
// The chunk's bytes that are at most `max`, unsigned (their minimum with
// it is themselves).
[[gnu::target("avx2"), gnu::always_inline]] inline uint64_t chunk_at_most(__m256i lo, __m256i hi,
                                                                          char max) {
  const __m256i m = _mm256_set1_epi8(max);
  return chunk_mask(_mm256_cmpeq_epi8(_mm256_min_epu8(lo, m), lo),
                    _mm256_cmpeq_epi8(_mm256_min_epu8(hi, m), hi));
}
// The chunk's bytes equal to the heartbeat field's first (none without one).
[[gnu::target("avx2"), gnu::always_inline]] inline uint64_t beat_first_avx2(__m256i lo, __m256i hi,
                                                                            const Query& q) {
  return q.heartbeat_field.empty() ? 0 : chunk_eq(lo, hi, q.heartbeat_field.first());
}

// The rare bytes of x (see classify_common_avx2()): below 0x20 but the
// newline, from 0x80 (byte - 0x20 from 0x60 on, unsigned: its maximum with
// 0x60 is itself), 0x5B to 0x5D ('[', '\\', ']'), '+'.
[[gnu::target("avx2"), gnu::always_inline]] inline __m256i rare_avx2(__m256i x) {
  const __m256i shifted = _mm256_sub_epi8(x, _mm256_set1_epi8(0x20));
  const __m256i brackets = _mm256_sub_epi8(x, _mm256_set1_epi8(0x5B));
  const __m256i outside_printable = _mm256_andnot_si256(
      eq32(x, '\n'), _mm256_cmpeq_epi8(_mm256_max_epu8(shifted, _mm256_set1_epi8(0x60)), shifted));
  return _mm256_or_si256(
      _mm256_or_si256(outside_printable, eq32(x, '+')),
      _mm256_cmpeq_epi8(_mm256_min_epu8(brackets, _mm256_set1_epi8(2)), brackets));
}

// The same as classify_sse2(), 32 bytes at a time, into lane `lane` of
// `c`, in the two sets of classify_avx512() (see there): the common masks
// here, which returns the chunk's rare bytes as a vector (nonzero bytes
// where a byte is rare, in either half), and the rare ones below.
// `exact`: as for classify_avx512().
template <bool exact, typename W>
[[gnu::target("avx2"), gnu::always_inline]] inline __m256i classify_common_avx2(
    __m256i lo, __m256i hi, const Query& q, Chunk<W>& c, int lane) {
  auto eq = [&](char ch) __attribute__((target("avx2"))) {
    return chunk_eq(lo, hi, ch);
  };
  const __m256i space = _mm256_set1_epi8(0x20);
  const __m256i zero = _mm256_set1_epi8('0');
  const uint64_t newline = eq('\n');
  put(c.quote, lane, eq('"'));
  put(c.newline, lane, newline);
  // Up to a space: the unsigned maximum with a space is the space.
  put(c.whitespace, lane,
      exact ? eq(' ') | eq('\t') | eq('\r')
            : chunk_mask(_mm256_cmpeq_epi8(_mm256_max_epu8(lo, space), space),
                         _mm256_cmpeq_epi8(_mm256_max_epu8(hi, space), space)) &
                  ~newline);
  put(c.lbrace, lane, eq('{'));
  put(c.rbrace, lane, eq('}'));
  put(c.colon, lane, eq(':'));
  put(c.comma, lane, eq(','));
  put(c.digit, lane, chunk_at_most(_mm256_sub_epi8(lo, zero), _mm256_sub_epi8(hi, zero), 9));
  put(c.zero, lane, eq('0'));
  put(c.minus, lane, eq('-'));
  put(c.dot, lane, eq('.'));
  put(c.exponent, lane,
      chunk_mask(eq32(_mm256_or_si256(lo, space), 'e'), eq32(_mm256_or_si256(hi, space), 'e')));
  put(c.key_first, lane, eq(q.key.first()));
  return _mm256_or_si256(rare_avx2(lo), rare_avx2(hi));
}

template <typename W>
[[gnu::target("avx2"), gnu::always_inline]] inline void classify_rare_avx2(__m256i lo, __m256i hi,
                                                                           Chunk<W>& c, int lane) {
  auto eq = [&](char ch) __attribute__((target("avx2"))) {
    return chunk_eq(lo, hi, ch);
  };
  put(c.backslash, lane, eq('\\'));
  put(c.lbracket, lane, eq('['));
  put(c.rbracket, lane, eq(']'));
  put(c.control, lane, chunk_at_most(lo, hi, 0x1F));
  put(c.high, lane, chunk_mask(lo, hi));
  put(c.plus, lane, eq('+'));
}

[[gnu::target("avx2"), gnu::always_inline]] inline __m256i load32(const char* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

template <bool exact, typename W>
[[gnu::target("avx2")]] inline void classify_avx2(const char* p, const Query& q, Chunk<W>& c,
                                                  int lane) {
  const __m256i lo = load32(p);
  const __m256i hi = load32(p + 32);
  classify_common_avx2<exact>(lo, hi, q, c, lane);
  classify_rare_avx2(lo, hi, c, lane);
  put(c.beat_first, lane, beat_first_avx2(lo, hi, q));
}

// The four chunks at p, p + 64, p + 128, p + 192 into the lanes of `c`
// (inexact whitespace: for the compact stage), as classify_step_avx512().
[[gnu::target("avx2")]] inline void classify_step_avx2(const char* p, const Query& q,
                                                       Chunk<Lanes4>& c) {
  __m256i rare = _mm256_setzero_si256();
  for (int i = 0; i < 4; ++i) {
    const __m256i lo = load32(p + 64 * i);
    const __m256i hi = load32(p + 64 * i + 32);
    rare = _mm256_or_si256(rare, classify_common_avx2<false>(lo, hi, q, c, i));
    if (!q.heartbeat_field.empty()) put(c.beat_first, i, beat_first_avx2(lo, hi, q));
  }
  if (q.heartbeat_field.empty()) c.beat_first = Lanes4{};
  if (_mm256_testz_si256(rare, rare)) {
    no_rare_bytes(c);
    return;
  }
  for (int i = 0; i < 4; ++i) classify_rare_avx2(load32(p + 64 * i), load32(p + 64 * i + 32), c, i);
}

[[gnu::target("avx512bw"), gnu::always_inline]] inline uint64_t eq64(__m512i x, char c) {
  return _mm512_cmpeq_epi8_mask(x, _mm512_set1_epi8(c));
}

// AVX-512BW compares 64 bytes into a 64-bit mask in one instruction.
// `exact`: whitespace is space, tab and CR; else every byte up to a space
// but the newline, which is all a compact stage needs (it only asks whether
// there is whitespace between tokens, and a control byte there is as bad).
//
// The masks come in two sets. The common ones are in every line of NDJSON;
// the rare ones (backslashes, brackets, '+', non-ASCII bytes and control
// bytes other than the newline) are absent from most chunks, so a step of
// eight chunks first asks whether any of its bytes is rare and, if none
// is, sets those lanes with one store each instead of one per lane.
template <bool exact, typename W>
[[gnu::target("avx512bw"), gnu::always_inline]] inline void classify_common_avx512(__m512i x,
                                                                                   const Query& q,
                                                                                   Chunk<W>& c,
                                                                                   int lane) {
  put(c.quote, lane, eq64(x, '"'));
  const uint64_t newline = eq64(x, '\n');
  put(c.newline, lane, newline);
  put(c.whitespace, lane,
      exact ? eq64(x, ' ') | eq64(x, '\t') | eq64(x, '\r')
            : _mm512_cmple_epu8_mask(x, _mm512_set1_epi8(' ')) & ~newline);
  put(c.lbrace, lane, eq64(x, '{'));
  put(c.rbrace, lane, eq64(x, '}'));
  put(c.colon, lane, eq64(x, ':'));
  put(c.comma, lane, eq64(x, ','));
  put(c.digit, lane,
      _mm512_cmplt_epu8_mask(_mm512_sub_epi8(x, _mm512_set1_epi8('0')), _mm512_set1_epi8(10)));
  put(c.zero, lane, eq64(x, '0'));
  put(c.minus, lane, eq64(x, '-'));
  put(c.dot, lane, eq64(x, '.'));
  put(c.exponent, lane, eq64(_mm512_or_si512(x, _mm512_set1_epi8(0x20)), 'e'));
  put(c.key_first, lane, eq64(x, q.key.first()));
}

template <typename W>
[[gnu::target("avx512bw"), gnu::always_inline]] inline void classify_rare_avx512(__m512i x,
                                                                                 Chunk<W>& c,
                                                                                 int lane) {
  put(c.backslash, lane, eq64(x, '\\'));
  put(c.lbracket, lane, eq64(x, '['));
  put(c.rbracket, lane, eq64(x, ']'));
  put(c.control, lane, _mm512_cmplt_epu8_mask(x, _mm512_set1_epi8(0x20)));
  put(c.high, lane, _mm512_movepi8_mask(x));
  put(c.plus, lane, eq64(x, '+'));
}

// The bytes of x that classify_rare_avx512() would find in a mask: below
// 0x20 but the newline, from 0x80 ('\\', '[' and ']' are 0x5B to 0x5D), '+'.
[[gnu::target("avx512bw"), gnu::always_inline]] inline __mmask64 rare_avx512(__m512i x) {
  const __mmask64 outside_printable =
      _mm512_cmpge_epu8_mask(_mm512_sub_epi8(x, _mm512_set1_epi8(0x20)), _mm512_set1_epi8(0x60));
  const __mmask64 brackets =
      _mm512_cmplt_epu8_mask(_mm512_sub_epi8(x, _mm512_set1_epi8(0x5B)), _mm512_set1_epi8(3));
  return _kor_mask64(
      _kandn_mask64(_mm512_cmpeq_epi8_mask(x, _mm512_set1_epi8('\n')), outside_printable),
      _kor_mask64(brackets, _mm512_cmpeq_epi8_mask(x, _mm512_set1_epi8('+'))));
}

[[gnu::target("avx512bw"), gnu::always_inline]] inline uint64_t beat_first_avx512(__m512i x,
                                                                                  const Query& q) {
  return q.heartbeat_field.empty() ? 0 : eq64(x, q.heartbeat_field.first());
}

template <bool exact, typename W>
[[gnu::target("avx512bw")]] inline void classify_avx512(const char* p, const Query& q, Chunk<W>& c,
                                                        int lane) {
  const __m512i x = _mm512_loadu_si512(p);
  classify_common_avx512<exact>(x, q, c, lane);
  classify_rare_avx512(x, c, lane);
  put(c.beat_first, lane, beat_first_avx512(x, q));
}

// The eight chunks at p, p + 64, ..., p + 448 into the lanes of `c`
// (inexact whitespace: for the compact stage).
[[gnu::target("avx512bw")]] inline void classify_step_avx512(const char* p, const Query& q,
                                                             Chunk<Lanes8>& c) {
  __mmask64 rare = 0;  // kept in a mask register, tested once
  for (int i = 0; i < 8; ++i) {
    const __m512i x = _mm512_loadu_si512(p + 64 * i);
    classify_common_avx512<false>(x, q, c, i);
    rare = _kor_mask64(rare, rare_avx512(x));
    if (!q.heartbeat_field.empty()) put(c.beat_first, i, beat_first_avx512(x, q));
  }
  if (q.heartbeat_field.empty()) c.beat_first = Lanes8{};
  if (_kortestz_mask64_u8(rare, rare)) {
    no_rare_bytes(c);
    return;
  }
  for (int i = 0; i < 8; ++i) classify_rare_avx512(_mm512_loadu_si512(p + 64 * i), c, i);
}

#endif

// --- stage 1 ------------------------------------------------------------------

// The masks of the last `words` chunks, for reading the key of a line that
// just ended: chunk w is at w % words.
struct Window {
  static constexpr size_t words = 128;
  uint64_t token[words];
  uint64_t quote[words];
  uint64_t scalar[words];
  uint64_t key[words];   // the closing quotes of names that may be the key's
  uint64_t beat[words];  // ... that may be the heartbeat field's
  uint64_t real[words];  // '.', 'e' and 'E' in numbers
};
// Lanes of a step of stage 1 at most (its chunks are all in the window
// before the first line ending in them is read).
constexpr size_t max_lanes = 8;
static_assert(Window::words % max_lanes == 0, "a word's lanes are consecutive slots");
static_assert(VectorScanner::max_line_bytes <= 64 * (Window::words - 1 - max_lanes),
              "a line the scanner reads fits its window, whatever its offset in a step");

// A word of up to eight bytes as a little-endian load of it reads.
constexpr uint64_t bytes_of(std::string_view word) {
  uint64_t bits = 0;
  for (size_t i = word.size(); i-- > 0;) bits = bits << 8 | static_cast<unsigned char>(word[i]);
  return bits;
}

// A run of bytes outside strings that does not begin as a number does
// (with a digit or '-') is a literal: exactly true, false or null.
inline bool literal_at(const char* data, size_t n, size_t at) {
  const char* p = data + at;
  const std::string_view word = *p == 't' ? "true" : *p == 'f' ? "false" : "null";
  const size_t end = at + word.size();
  if (end > n) return false;
  if (std::endian::native == std::endian::little && n - at >= 8) {
    // One load and compare rather than a call to memcmp: literals are
    // common (every boolean), and the word is at most five bytes.
    static constexpr uint64_t four = (uint64_t{1} << 32) - 1, five = (uint64_t{1} << 40) - 1;
    uint64_t have;
    std::memcpy(&have, p, 8);
    const bool same = *p == 't'   ? (have & four) == bytes_of("true")
                      : *p == 'f' ? (have & five) == bytes_of("false")
                                  : (have & four) == bytes_of("null");
    if (!same) return false;
  } else if (std::memcmp(p, word.data(), word.size()) != 0) {
    return false;
  }
  return end == n || is_delimiter(data[end]);
}

// --- the key of a line stage 1 accepted ---------------------------------------

// Positions in the window's masks, within one line.
class Cursor {
 public:
  Cursor(const Window& w, size_t end) : w_(w), end_(end) {}

  // The first token at or after `from` (at most the line's newline).
  size_t token_from(size_t from) const { return first_set(w_.token, from, 0); }
  // The first quote at or after `from` (a string's closing quote: stage 1
  // made sure it exists).
  size_t quote_from(size_t from) const { return first_set(w_.quote, from, 0); }
  // Where the number or literal starting at `from` ends.
  size_t scalar_end(size_t from) const { return first_set(w_.scalar, from, ~uint64_t{0}); }
  // Whether a '.', 'e' or 'E' of a number lies in [from, to).
  bool real_in(size_t from, size_t to) const { return first_set(w_.real, from, 0) < to; }

 private:
  // The first bit at or after `from` that is set in masks ^ flip, at most
  // the line's end.
  size_t first_set(const uint64_t* masks, size_t from, uint64_t flip) const {
    if (from >= end_) return end_;
    size_t word = from / 64;
    uint64_t x = (masks[word % Window::words] ^ flip) & (~uint64_t{0} << (from % 64));
    while (x == 0) {
      if (++word * 64 >= end_) return end_;
      x = masks[word % Window::words] ^ flip;
    }
    const size_t at = word * 64 + static_cast<size_t>(std::countr_zero(x));
    return at < end_ ? at : end_;
  }

  const Window& w_;
  const size_t end_;
};

constexpr size_t none = ~size_t{0};

// Where the last member named `want` of the line [begin, end) starts (its
// opening quote), or `none`. `closes`: the window's closing quotes of the
// names that may be `want` (stage 1 found names of its size that begin
// with its first byte), compared from the last one back.
inline size_t last_name(const char* data, size_t begin, size_t end, const uint64_t* closes,
                        const Name& want) {
  const size_t from = begin + want.size() + 1;  // the first closing quote possible
  if (from >= end) return none;
  for (size_t word = end / 64 + 1; word-- > from / 64;) {
    uint64_t candidates = closes[word % Window::words];
    if (word == from / 64) candidates &= ~uint64_t{0} << (from % 64);
    if (word == end / 64) candidates &= (uint64_t{1} << (end % 64)) - 1;
    while (candidates != 0) {
      const int top = 63 - std::countl_zero(candidates);
      const size_t quote = 64 * word + static_cast<size_t>(top) - want.size() - 1;
      if (want.at(data, end, quote)) return quote;
      candidates &= ~(uint64_t{1} << top);
    }
  }
  return none;
}

// The key (the member named `key`) and the heartbeat flag of the line
// [begin, end) that stage 1 accepted, the last of each name winning.
// `compact`: no whitespace between tokens, so a value starts two bytes
// after its name's closing quote.
[[gnu::always_inline]] inline void members(const char* data, size_t begin, size_t end,
                                           const Window& w, const Query& q, bool compact,
                                           LineScan& out) {
  out.top_is_object = true;
  const Cursor cursor(w, end);
  // Where the value of the member named `name` (at its opening quote)
  // starts.
  auto value_of = [&](size_t name, const Name& n) {
    const size_t quote = name + n.size() + 1;
    return compact ? quote + 2 : cursor.token_from(cursor.token_from(quote + 1) + 1);
  };
  if (!q.heartbeat_field.empty()) {
    const size_t name = last_name(data, begin, end, w.beat, q.heartbeat_field);
    if (name != none) out.heartbeat = data[value_of(name, q.heartbeat_field)] == 't';
  }
  const size_t key_name = last_name(data, begin, end, w.key, q.key);
  if (key_name == none) return;
  const size_t value = value_of(key_name, q.key);
  const char first = data[value];
  if (first == '"') {
    out.key =
        KeyValue{data + value, data + cursor.quote_from(value + 1) + 1, ValueKind::string, false};
  } else if (first == '[') {
    out.key = KeyValue{data + value, data + value + 1, ValueKind::other, false};
  } else {
    const size_t scalar_end = cursor.scalar_end(value);
    const ValueKind kind = first == 't'                        ? ValueKind::true_literal
                           : first == 'f' || first == 'n'      ? ValueKind::other
                           : cursor.real_in(value, scalar_end) ? ValueKind::real
                                                               : ValueKind::integer;
    out.key = KeyValue{data + value, data + scalar_end, kind, false};
  }
}

// Appends a ScannedLine per line.
struct AppendLines {
  std::vector<ScannedLine>& out;
  size_t first = out.size();
  void forget() { out.resize(first); }
  void reject(size_t begin, size_t end) {
    out.push_back(ScannedLine{static_cast<uint32_t>(begin), static_cast<uint32_t>(end - begin),
                              false, LineScan{}});
  }
  // The line's scan, for the caller to fill in.
  LineScan& accept(size_t begin, size_t end) {
    ScannedLine& line = out.emplace_back();
    line.begin = static_cast<uint32_t>(begin);
    line.length = static_cast<uint32_t>(end - begin);
    line.accepted = true;
    return line.scan;
  }
};
// --- one copy of stage 1 per level ----------------------------------------------
//
// Each level's copy is compiled for its target (as simdjson does), so its
// wide words live in that level's registers and every function in it may
// use its instructions.
#define CHRONOMERGE_STRINGIFY(x) #x
#if defined(__clang__)
#define CHRONOMERGE_TARGET_REGION(t) \
  _Pragma(CHRONOMERGE_STRINGIFY(     \
      clang attribute push(__attribute__((target(t))), apply_to = function)))
#define CHRONOMERGE_END_TARGET_REGION _Pragma("clang attribute pop")
#else
#define CHRONOMERGE_TARGET_REGION(t) \
  _Pragma("GCC push_options") _Pragma(CHRONOMERGE_STRINGIFY(GCC target(t)))
#define CHRONOMERGE_END_TARGET_REGION _Pragma("GCC pop_options")
#endif

#if defined(__x86_64__)
namespace sse2 {
#include "record/vector_scanner_stage1.inc"
[[gnu::flatten]] void lines(const char* data, size_t n, const Query& q,
                            std::vector<ScannedLine>& out) {
  lines_at<Word, classify_sse2, classify_sse2>(data, n, q, out);
}
}  // namespace sse2

namespace avx2 {
CHRONOMERGE_TARGET_REGION("avx2,bmi,bmi2")
inline Lanes4 previous(const Lanes4& x, const Lanes4& before) {
#if defined(__clang__)
  return __builtin_shufflevector(before, x, 3, 4, 5, 6);
#else
  return __builtin_shuffle(before, x, Lanes4{3, 4, 5, 6});
#endif
}
inline __m256i vec(const Lanes4& x) {
  return reinterpret_cast<__m256i>(x);
}
inline bool any(const Lanes4& x) {
  return !_mm256_testz_si256(vec(x), vec(x));
}
inline unsigned top_bits(const Lanes4& x) {
  return static_cast<unsigned>(_mm256_movemask_pd(_mm256_castsi256_pd(vec(x))));
}
inline unsigned all_ones(const Lanes4& x) {
  return top_bits(reinterpret_cast<Lanes4>(_mm256_cmpeq_epi64(vec(x), _mm256_set1_epi64x(-1))));
}
// Unsigned: with the sign bits flipped, a signed comparison.
inline unsigned below(const Lanes4& x, const Lanes4& y) {
  const __m256i sign = _mm256_set1_epi64x(INT64_MIN);
  return top_bits(reinterpret_cast<Lanes4>(
      _mm256_cmpgt_epi64(_mm256_xor_si256(vec(y), sign), _mm256_xor_si256(vec(x), sign))));
}
template <typename W>
inline W spread(unsigned lanes);
template <>
inline Lanes4 spread<Lanes4>(unsigned lanes) {
  const __m256i bits = _mm256_setr_epi64x(1, 2, 4, 8);
  const __m256i set = _mm256_and_si256(_mm256_set1_epi64x(lanes), bits);
  return reinterpret_cast<Lanes4>(_mm256_cmpeq_epi64(set, bits));
}
inline Lanes4 add_one(const Lanes4& x, unsigned lanes) {
  return x - spread<Lanes4>(lanes);  // all ones is -1
}
#include "record/vector_scanner_stage1.inc"
[[gnu::flatten]] void lines(const char* data, size_t n, const Query& q,
                            std::vector<ScannedLine>& out) {
  lines_at<Lanes4, classify_step_avx2, classify_lanes<Word, classify_avx2<true, Word>>>(data, n, q,
                                                                                        out);
}
CHRONOMERGE_END_TARGET_REGION
}  // namespace avx2

namespace avx512 {
CHRONOMERGE_TARGET_REGION("avx512f,avx512bw,avx512dq,avx512vl,avx2,bmi,bmi2")
inline Lanes8 previous(const Lanes8& x, const Lanes8& before) {
#if defined(__clang__)
  return __builtin_shufflevector(before, x, 7, 8, 9, 10, 11, 12, 13, 14);
#else
  return __builtin_shuffle(before, x, Lanes8{7, 8, 9, 10, 11, 12, 13, 14});
#endif
}
inline __m512i vec(const Lanes8& x) {
  return reinterpret_cast<__m512i>(x);
}
inline bool any(const Lanes8& x) {
  return _mm512_test_epi64_mask(vec(x), vec(x)) != 0;
}
inline unsigned top_bits(const Lanes8& x) {
  return _mm512_movepi64_mask(vec(x));
}
inline unsigned all_ones(const Lanes8& x) {
  return _mm512_cmpeq_epi64_mask(vec(x), _mm512_set1_epi64(-1));
}
inline unsigned below(const Lanes8& x, const Lanes8& y) {
  return _mm512_cmplt_epu64_mask(vec(x), vec(y));
}
inline Lanes8 add_one(const Lanes8& x, unsigned lanes) {
  return reinterpret_cast<Lanes8>(
      _mm512_mask_sub_epi64(vec(x), static_cast<__mmask8>(lanes), vec(x), _mm512_set1_epi64(-1)));
}
template <typename W>
inline W spread(unsigned lanes);
template <>
inline Lanes8 spread<Lanes8>(unsigned lanes) {
  return reinterpret_cast<Lanes8>(_mm512_movm_epi64(static_cast<__mmask8>(lanes)));
}
#include "record/vector_scanner_stage1.inc"
[[gnu::flatten]] void lines(const char* data, size_t n, const Query& q,
                            std::vector<ScannedLine>& out) {
  lines_at<Lanes8, classify_step_avx512, classify_lanes<Word, classify_avx512<true, Word>>>(data, n,
                                                                                            q, out);
}
CHRONOMERGE_END_TARGET_REGION
}  // namespace avx512
#endif

}  // namespace

size_t VectorScanner::step_bytes(SimdLevel level) {
  switch (level) {
#if defined(__x86_64__)
    case SimdLevel::avx512:
      return 64 * avx512::lanes<Lanes8>;
    case SimdLevel::avx2:
      return 64 * avx2::lanes<Lanes4>;
    case SimdLevel::sse2:
      return 64;
#endif
    default:
      return 0;
  }
}

void VectorScanner::scan_lines(SimdLevel level, std::string_view lines, std::string_view key_field,
                               std::string_view heartbeat_field, std::vector<ScannedLine>& out) {
  const Query q{Name(key_field), Name(heartbeat_field)};
  switch (level) {
#if defined(__x86_64__)
    case SimdLevel::avx2:
      return avx2::lines(lines.data(), lines.size(), q, out);
    case SimdLevel::sse2:
      return sse2::lines(lines.data(), lines.size(), q, out);
    case SimdLevel::avx512:
      return avx512::lines(lines.data(), lines.size(), q, out);
#endif
    default:  // the scalar scanner, line by line
      return;
  }
}

}  // namespace chronomerge
