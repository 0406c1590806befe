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

// Stage 1's view of 64 bytes: bit i of each mask describes byte i.
struct Chunk {
  uint64_t quote;
  uint64_t backslash;
  uint64_t whitespace;  // space, tab, CR
  uint64_t newline;
  uint64_t lbrace;
  uint64_t rbrace;
  uint64_t lbracket;
  uint64_t rbracket;
  uint64_t colon;
  uint64_t comma;
  uint64_t control;  // below 0x20, newline included
  uint64_t high;     // 0x80 and above
  uint64_t digit;
  uint64_t zero;
  uint64_t minus;
  uint64_t plus;
  uint64_t dot;
  uint64_t exponent;  // e or E
  uint64_t literal;   // t, f or n: how true, false and null begin
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

// --- classification: SSE2, AVX2, AVX-512BW -----------------------------------
//
// Byte | 0x20 folds 'E' onto 'e'. A byte is a control byte when its
// unsigned minimum with 0x1F is itself, a digit when its distance from '0'
// is (unsigned minimum with 9); non-ASCII bytes have their top bit set,
// which movemask collects directly.

#if defined(__x86_64__)

inline __m128i eq16(__m128i x, char c) {
  return _mm_cmpeq_epi8(x, _mm_set1_epi8(c));
}
inline uint64_t bits16(__m128i v, int shift) {
  return static_cast<uint64_t>(static_cast<uint32_t>(_mm_movemask_epi8(v))) << shift;
}

[[gnu::always_inline]] inline void classify_sse2(const char* p, Chunk& c) {
  c = Chunk{};
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
    c.literal |=
        bits16(_mm_or_si128(_mm_or_si128(eq16(x, 't'), eq16(x, 'f')), eq16(x, 'n')), shift);
  }
}

[[gnu::target("avx2"), gnu::always_inline]] inline __m256i eq32(__m256i x, char c) {
  return _mm256_cmpeq_epi8(x, _mm256_set1_epi8(c));
}
[[gnu::target("avx2"), gnu::always_inline]] inline uint64_t bits32(__m256i v, int shift) {
  return static_cast<uint64_t>(static_cast<uint32_t>(_mm256_movemask_epi8(v))) << shift;
}

// The same as classify_sse2(), 32 bytes at a time.
[[gnu::target("avx2")]] inline void classify_avx2(const char* p, Chunk& c) {
  const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32));
  // One mask from a test of both halves.
  auto mask = [](__m256i low, __m256i high) __attribute__((target("avx2"))) {
    return bits32(low, 0) | bits32(high, 32);
  };
  auto eq = [&](char ch) __attribute__((target("avx2"))) {
    return mask(eq32(lo, ch), eq32(hi, ch));
  };
  const __m256i space = _mm256_set1_epi8(0x20);
  const __m256i zero = _mm256_set1_epi8('0');
  const __m256i nine = _mm256_set1_epi8(9);
  const __m256i control = _mm256_set1_epi8(0x1F);
  const __m256i lo_digit = _mm256_sub_epi8(lo, zero);
  const __m256i hi_digit = _mm256_sub_epi8(hi, zero);
  c.quote = eq('"');
  c.backslash = eq('\\');
  c.whitespace = eq(' ') | eq('\t') | eq('\r');
  c.newline = eq('\n');
  c.lbrace = eq('{');
  c.rbrace = eq('}');
  c.lbracket = eq('[');
  c.rbracket = eq(']');
  c.colon = eq(':');
  c.comma = eq(',');
  c.control = mask(_mm256_cmpeq_epi8(_mm256_min_epu8(lo, control), lo),
                   _mm256_cmpeq_epi8(_mm256_min_epu8(hi, control), hi));
  c.high = mask(lo, hi);
  c.digit = mask(_mm256_cmpeq_epi8(_mm256_min_epu8(lo_digit, nine), lo_digit),
                 _mm256_cmpeq_epi8(_mm256_min_epu8(hi_digit, nine), hi_digit));
  c.zero = eq('0');
  c.minus = eq('-');
  c.plus = eq('+');
  c.dot = eq('.');
  c.exponent = mask(eq32(_mm256_or_si256(lo, space), 'e'), eq32(_mm256_or_si256(hi, space), 'e'));
  c.literal = eq('t') | eq('f') | eq('n');
}

[[gnu::target("avx512bw"), gnu::always_inline]] inline uint64_t eq64(__m512i x, char c) {
  return _mm512_cmpeq_epi8_mask(x, _mm512_set1_epi8(c));
}

// AVX-512BW compares 64 bytes into a 64-bit mask in one instruction.
[[gnu::target("avx512bw")]] inline void classify_avx512(const char* p, Chunk& c) {
  const __m512i x = _mm512_loadu_si512(p);
  c.quote = eq64(x, '"');
  c.backslash = eq64(x, '\\');
  c.whitespace = eq64(x, ' ') | eq64(x, '\t') | eq64(x, '\r');
  c.newline = eq64(x, '\n');
  c.lbrace = eq64(x, '{');
  c.rbrace = eq64(x, '}');
  c.lbracket = eq64(x, '[');
  c.rbracket = eq64(x, ']');
  c.colon = eq64(x, ':');
  c.comma = eq64(x, ',');
  c.control = _mm512_cmplt_epu8_mask(x, _mm512_set1_epi8(0x20));
  c.high = _mm512_movepi8_mask(x);
  c.digit = _mm512_cmplt_epu8_mask(_mm512_sub_epi8(x, _mm512_set1_epi8('0')), _mm512_set1_epi8(10));
  c.zero = eq64(x, '0');
  c.minus = eq64(x, '-');
  c.plus = eq64(x, '+');
  c.dot = eq64(x, '.');
  c.exponent = eq64(_mm512_or_si512(x, _mm512_set1_epi8(0x20)), 'e');
  c.literal = eq64(x, 't') | eq64(x, 'f') | eq64(x, 'n');
}

#endif

// --- bit operations that carry from one chunk into the next -------------------

// Bit i of the result: the XOR of bits 0..i of x.
inline uint64_t prefix_xor(uint64_t x) {
  for (int shift = 1; shift < 64; shift *= 2) x ^= x << shift;
  return x;
}

// A parity that runs across chunks and restarts at every line: bit i is
// the XOR of the bits of x from the start of i's line up to i (a line
// starts after a bit of `newlines`). A newline keeps the parity of its
// line (a string or array left open shows there, so that its line is
// found bad); the byte after it starts clear.
class LineParity {
 public:
  uint64_t operator()(uint64_t x, uint64_t newlines) {
    uint64_t inside = prefix_xor(x) ^ carry_;
    // Rare, for strings and arrays: only a broken line leaves one open at
    // its newline.
    for (uint64_t open = newlines & inside; open != 0;) {
      const uint64_t above = ~((open & (0 - open)) * 2 - 1);  // 0 above bit 63
      inside ^= above;
      open = newlines & inside & above;
    }
    // After a newline the parity is clear, whatever it was at the newline.
    carry_ = 0 - ((inside & ~newlines) >> 63);
    return inside;
  }

 private:
  uint64_t carry_ = 0;  // all ones when the previous chunk ended inside
};

struct ShiftCarry {
  uint64_t bit = 0;
  // x one byte on: bit i of the result is bit i-1 of x.
  uint64_t operator()(uint64_t x) {
    const uint64_t shifted = x << 1 | bit;
    bit = x >> 63;
    return shifted;
  }
};
struct AddCarry {
  unsigned char carry = 0;
  uint64_t operator()(uint64_t a, uint64_t b) {
#if defined(__x86_64__)
    unsigned long long sum;
    carry = _addcarry_u64(carry, a, b, &sum);  // one add-with-carry
    return sum;
#else
    uint64_t sum;
    const bool first = __builtin_add_overflow(a, b, &sum);
    const bool second = __builtin_add_overflow(sum, static_cast<uint64_t>(carry), &sum);
    carry = first || second;
    return sum;
#endif
  }
};
// The first token after each bit of x (x a subset of the tokens): x + 1
// carried through the bytes up to the next token. Distributes over unions
// of token sets: a carry stops at the next token, so it never meets another.
struct NextToken {
  ShiftCarry shift;
  AddCarry add;
  uint64_t operator()(uint64_t x, uint64_t tokens) { return add(shift(x), ~tokens) & tokens; }
};
// For each run of `runs` holding bits of x (x a subset of runs): the run
// from its first such bit to its end. A second bit of x in the same run is
// not in the result.
struct RunFrom {
  AddCarry add;
  uint64_t operator()(uint64_t x, uint64_t runs) { return (runs ^ add(runs, x)) & runs; }
};

// --- stage 1 ------------------------------------------------------------------

// The masks of the last `words` chunks, for reading the key of a line that
// just ended: chunk w is at w % words.
struct Window {
  static constexpr size_t words = 64;
  uint64_t token[words];
  uint64_t quote[words];
  uint64_t scalar[words];
  uint64_t names[words];
  uint64_t real[words];  // '.', 'e' and 'E' in numbers
};
static_assert(VectorScanner::max_line_bytes <= 64 * (Window::words - 2),
              "a line the scanner reads fits its window, whatever its offset in a chunk");

// `t`, `f` or `n` starts a literal: it must be exactly true, false or null.
inline bool literal_at(const char* data, size_t n, size_t at) {
  const char* p = data + at;
  const std::string_view word = *p == 't' ? "true" : *p == 'f' ? "false" : "null";
  const size_t end = at + word.size();
  return end <= n && std::memcmp(p, word.data(), word.size()) == 0 &&
         (end == n || is_delimiter(data[end]));
}

// What one chunk holds that its lines' verdicts need.
struct ChunkVerdict {
  uint64_t bad;   // bytes where the grammar fails, or that need the scalar scanner
  uint64_t high;  // non-ASCII bytes inside strings: check the line's UTF-8
  bool spaced;    // whitespace between tokens: a compact stage cannot go on
};

// Stage 1 over a run of lines, chunk by chunk, the state carried between
// chunks. Two ways to check which token may follow which:
// - compact (the run has no whitespace between tokens, as most NDJSON
//   writers emit it): the token after another starts at the byte after it
//   ends, so every rule is a one-byte shift of a mask; and where strings
//   alternate between names and values, the ':' and ',' between them must
//   alternate too (a parity). It gives up at the first whitespace between
//   tokens (`spaced`), and the run is scanned again the general way.
// - general: the token after each one is found by an addition that
//   carries through the whitespace (and the string or number) up to it.
template <bool compact>
class Stage1 {
 public:
  // The chunk at `offset` of the run (`data`, `n` bytes), classified as `c`;
  // its masks for reading keys go to `window`. `padding`: the bytes of a
  // last chunk past the run (whitespace).
  ChunkVerdict add(const Chunk& c, const char* data, size_t n, size_t offset, uint64_t padding,
                   Window& window) {
    const uint64_t nl = c.newline;
    const uint64_t inside = in_string_(c.quote, nl);  // opening quotes included
    const uint64_t outside = ~inside;
    uint64_t bad = c.backslash | (c.control & inside);
    const uint64_t op = c.lbrace | c.rbrace | c.lbracket | c.rbracket | c.colon | c.comma;
    const uint64_t scalar = ~(c.whitespace | nl | op | c.quote | inside);
    const uint64_t run_start = scalar & ~previous_scalar_(scalar);
    const uint64_t open_quotes = c.quote & inside;
    const uint64_t tokens = (op & outside) | open_quotes | run_start | nl;
    for (uint64_t literals = run_start & c.literal; literals != 0; literals &= literals - 1) {
      if (!literal_at(data, n, offset + static_cast<size_t>(std::countr_zero(literals)))) {
        bad |= literals & (0 - literals);
      }
    }

    // A line: { ( name : value ( , name : value )* )? }, a value a string,
    // number, literal or an array of those. Every token must be one of
    // these, and each is followed only by what may follow it.
    const uint64_t lbrace = c.lbrace & outside;
    const uint64_t rbrace = c.rbrace & outside;
    const uint64_t lbracket = c.lbracket & outside;
    const uint64_t rbracket = c.rbracket & outside;
    const uint64_t colon = c.colon & outside;
    const uint64_t comma = c.comma & outside;
    const uint64_t in_array = in_array_(lbracket | rbracket, nl);  // '[' included, ']' not
    bad |= (lbracket & ~in_array) | (rbracket & in_array) |
           ((lbrace | rbrace | colon | nl) & in_array);
    const uint64_t value_start = open_quotes | run_start;
    const uint64_t member_comma = comma & ~in_array;
    const uint64_t element_comma = comma & in_array;
    uint64_t names;
    if constexpr (compact) {
      const bool spaced = (c.whitespace & outside & ~padding) != 0;
      // What the byte after each token (or after a string's closing quote,
      // or a number's last byte) may be, one shift per set of tokens that
      // may be followed by the same. The first colon of a line, and every
      // other ':' or ',' between members after it, sets a parity: ':'
      // where it is set, ',' where it is clear, and the newline makes it
      // even again; a '}' after members closes where it is set. So a ','
      // is never taken for a ':' (nor the reverse), and what the shared
      // sets let through — a ':' after a value — the parity stops, as the
      // bracket parity stops a '[' after a ',' in an array.
      const uint64_t colons = member_parity_(colon | member_comma | nl, nl);
      const uint64_t after_lbrace = after_lbrace_(lbrace);
      const uint64_t after_member_comma = after_member_comma_(member_comma);
      const uint64_t after_value = after_value_((c.quote & outside) | scalar);
      names = (after_lbrace | after_member_comma) & open_quotes;
      bad |= (after_newline_(nl) ^ lbrace) | (after_lbrace & ~(open_quotes | rbrace)) |
             (after_member_comma & ~open_quotes) |
             (after_colon_(colon | element_comma) & ~(value_start | lbracket)) |
             (after_lbracket_(lbracket) & ~(value_start | rbracket)) |
             (after_value & ~(colon | comma | rbrace | rbracket | (scalar & ~run_start))) |
             (after_rbracket_(rbracket) & ~(member_comma | rbrace)) |
             (after_rbrace_(rbrace) & ~nl) | (colon & ~colons) | (member_comma & colons) |
             (rbrace & ~colons & ~after_lbrace);
      if (spaced) return {bad, 0, true};
    } else {
      const uint64_t after_lbrace = after_lbrace_(lbrace, tokens);
      const uint64_t after_member_comma = after_member_comma_(member_comma, tokens);
      names = (after_lbrace | after_member_comma) & open_quotes;
      const uint64_t values = after_colon_(colon, tokens);
      const uint64_t after_lbracket = after_lbracket_(lbracket, tokens);
      const uint64_t after_element_comma = after_element_comma_(element_comma, tokens);
      const uint64_t elements = (after_lbracket | after_element_comma) & value_start;
      bad |= (after_newline_(nl, tokens) ^ lbrace) | (after_lbrace & ~(open_quotes | rbrace)) |
             (after_member_comma & ~open_quotes) | (after_name_(names, tokens) & ~colon) |
             (values & ~(value_start | lbracket)) | (after_lbracket & ~(value_start | rbracket)) |
             (after_element_comma & ~value_start) |
             // after a member's value: a string, a scalar, or an array's ']'
             (after_member_((values & value_start) | rbracket, tokens) & ~(member_comma | rbrace)) |
             (after_element_(elements, tokens) & ~(element_comma | rbracket)) |
             (after_rbrace_(rbrace, tokens) & ~nl) |
             (tokens & ~(lbrace | rbrace | lbracket | rbracket | colon | comma | nl | names |
                         values | elements));
    }

    // Numbers: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?; literals
    // were checked above.
    const uint64_t literal_bytes = literal_run_(run_start & c.literal, scalar);
    const uint64_t number = scalar & ~literal_bytes;
    const uint64_t starts = run_start & number;
    const uint64_t digit = c.digit & number;
    const uint64_t minus = c.minus & number;
    const uint64_t plus = c.plus & number;
    const uint64_t dot = c.dot & number;
    const uint64_t exponent = c.exponent & number;
    const uint64_t after_digit = after_digit_(digit);
    const uint64_t after_exponent = after_exponent_(exponent);
    const uint64_t after_minus = after_minus_(starts & minus);
    const uint64_t first_digit = (starts | after_minus) & digit;
    const uint64_t exponent_part = exponent_part_(exponent, number);
    bad |= (number & ~(digit | minus | plus | dot | exponent)) | (starts & ~(digit | minus)) |
           (after_minus & ~digit) | (after_zero_(first_digit & c.zero) & digit) |
           (minus & ~(starts | after_exponent)) | (plus & ~after_exponent) | (dot & ~after_digit) |
           (after_dot_(dot) & ~digit) | (exponent & ~after_digit) |
           (after_exponent & ~(digit | minus | plus)) |
           (after_sign_(after_exponent & (minus | plus)) & ~digit) |
           (dot & ~dot_part_(dot, number)) | (exponent & ~exponent_part) | (dot & exponent_part);

    const size_t slot = offset / 64 % Window::words;
    window.token[slot] = tokens;
    window.quote[slot] = c.quote;
    window.scalar[slot] = scalar;
    window.names[slot] = names;
    window.real[slot] = dot | exponent;
    return {bad, c.high & inside, false};
  }

 private:
  // The rules' state: what carries from one chunk into the next. (The two
  // ways share most rules; each leaves a few of these unused: the compact
  // one after_name_, after_element_comma_, after_member_, after_element_;
  // the general one member_parity_, after_value_, after_rbracket_.)
  using Next = std::conditional_t<compact, ShiftCarry, NextToken>;
  LineParity in_string_, in_array_, member_parity_;
  ShiftCarry previous_scalar_;
  // The run starts on a line of its own: what follows its (virtual)
  // newline must be a '{'.
  Next after_newline_ = first_line();
  Next after_lbrace_, after_member_comma_, after_name_, after_colon_, after_lbracket_,
      after_element_comma_, after_member_, after_element_, after_rbrace_, after_value_,
      after_rbracket_;
  static Next first_line() {
    if constexpr (compact) {
      return ShiftCarry{1};
    } else {
      return NextToken{ShiftCarry{1}, AddCarry{}};
    }
  }
  RunFrom literal_run_, dot_part_, exponent_part_;
  ShiftCarry after_digit_, after_exponent_, after_minus_, after_zero_, after_dot_, after_sign_;
};

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

constexpr size_t none = ~size_t{0};

// Where the last member named `want` of the line [begin, end) starts (its
// opening quote), or `none`. Only names whose closing quote lies where
// `want`'s would are compared, from the last one back.
inline size_t last_name(const char* data, size_t begin, size_t end, const Window& w,
                        const Name& want) {
  const size_t distance = want.size() + 1;  // from the opening quote to the closing one
  for (size_t word = end / 64 + 1; word-- > begin / 64;) {
    uint64_t candidates = w.names[word % Window::words];
    if (word == begin / 64) candidates &= ~uint64_t{0} << (begin % 64);
    if (distance < 64) {
      // Quotes past the line's end are in a slot not yet written: the
      // Name::at() check below decides those.
      const uint64_t next = word < end / 64 ? w.quote[(word + 1) % Window::words] : ~uint64_t{0};
      candidates &= w.quote[word % Window::words] >> distance | next << (64 - distance);
    }
    while (candidates != 0) {
      const int top = 63 - std::countl_zero(candidates);
      const size_t at = 64 * word + static_cast<size_t>(top);
      if (at < end && want.at(data, end, at)) return at;
      candidates &= ~(uint64_t{1} << top);
    }
  }
  return none;
}

struct Query {
  Name key;
  Name heartbeat_field;
};

// The key (the member named `key`) and the heartbeat flag of the line
// [begin, end) that stage 1 accepted, the last of each name winning.
// `compact`: no whitespace between tokens, so a value starts two bytes
// after its name's closing quote.
LineScan members(const char* data, size_t begin, size_t end, const Window& w, const Query& q,
                 bool compact) {
  LineScan out;
  out.top_is_object = true;
  const Cursor cursor(w, end);
  // Where the value of the member named `name` (at its opening quote)
  // starts.
  auto value_of = [&](size_t name, const Name& n) {
    const size_t quote = name + n.size() + 1;
    return compact ? quote + 2 : cursor.token_from(cursor.token_from(quote + 1) + 1);
  };
  if (!q.heartbeat_field.empty()) {
    const size_t name = last_name(data, begin, end, w, q.heartbeat_field);
    if (name != none) out.heartbeat = data[value_of(name, q.heartbeat_field)] == 't';
  }
  const size_t key_name = last_name(data, begin, end, w, q.key);
  if (key_name == none) return out;
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
  return out;
}

// Stage 1 over the run `data` (`n` bytes), chunk by chunk; at every line's
// end, `line(begin, end, accepted, scan)`. Bytes past the run are never
// read: the last partial chunk is copied, padded with whitespace (and a
// '\n' first if the run lacks its final one). Returns false if a compact
// stage met whitespace between tokens: the lines it reported do not count.
template <bool compact, void (*classify)(const char*, Chunk&), typename LineVisitor>
[[gnu::always_inline]] inline bool scan_run(const char* data, size_t n, const Query& q,
                                            LineVisitor& line) {
  Stage1<compact> stage;
  Window window;
  size_t begin = 0;  // of the current line
  bool line_bad = false;
  bool line_high = false;
  const bool open_end = n > 0 && data[n - 1] != '\n';
  for (size_t offset = 0;; offset += 64) {
    Chunk c;
    uint64_t padding = 0;
    const bool last = offset + 64 > n;
    if (!last) {
      classify(data + offset, c);
    } else {
      if (offset == n && !open_end) break;
      alignas(64) char tail[64];
      const size_t left = n - offset;
      std::memcpy(tail, data + offset, left);
      std::memset(tail + left, ' ', 64 - left);
      if (open_end) tail[left] = '\n';
      classify(tail, c);
      const size_t used = left + (open_end ? 1 : 0);
      padding = used == 64 ? 0 : ~uint64_t{0} << used;
    }
    ChunkVerdict v = stage.add(c, data, n, offset, padding, window);
    if (compact && v.spaced) return false;
    for (uint64_t newlines = c.newline; newlines != 0; newlines &= newlines - 1) {
      const int bit = std::countr_zero(newlines);
      const uint64_t upto = bit == 63 ? ~uint64_t{0} : (uint64_t{2} << bit) - 1;
      const size_t end = offset + static_cast<size_t>(bit);
      const bool bad =
          line_bad || (v.bad & upto) != 0 || end - begin > VectorScanner::max_line_bytes;
      if (bad || ((line_high || (v.high & upto) != 0) &&
                  !simdjson::validate_utf8(data + begin, end - begin))) {
        line(begin, end, false, LineScan{});
      } else {
        line(begin, end, true, members(data, begin, end, window, q, compact));
      }
      v.bad &= ~upto;
      v.high &= ~upto;
      line_bad = line_high = false;
      begin = end + 1;
    }
    line_bad |= v.bad != 0;
    line_high |= v.high != 0;
    if (last) break;
  }
  return true;
}

// The run, compact if it is, else the general way.
template <void (*classify)(const char*, Chunk&), typename LineVisitor>
[[gnu::always_inline]] inline void scan_any(const char* data, size_t n, const Query& q,
                                            LineVisitor& line) {
  if (scan_run<true, classify>(data, n, q, line)) return;
  line.forget();
  scan_run<false, classify>(data, n, q, line);
}

// Appends a ScannedLine per line.
struct AppendLines {
  std::vector<ScannedLine>& out;
  size_t first = out.size();
  void forget() { out.resize(first); }
  void operator()(size_t begin, size_t end, bool accepted, const LineScan& scan) {
    out.push_back(ScannedLine{static_cast<uint32_t>(begin), static_cast<uint32_t>(end - begin),
                              accepted, scan});
  }
};
template <void (*classify)(const char*, Chunk&)>
[[gnu::always_inline]] inline void lines_at(const char* data, size_t n, const Query& q,
                                            std::vector<ScannedLine>& out) {
  AppendLines append{out};
  scan_any<classify>(data, n, q, append);
}
#if defined(__x86_64__)
[[gnu::flatten]] void lines_sse2(const char* data, size_t n, const Query& q,
                                 std::vector<ScannedLine>& out) {
  lines_at<classify_sse2>(data, n, q, out);
}
[[gnu::target("avx2"), gnu::flatten]] void lines_avx2(const char* data, size_t n, const Query& q,
                                                      std::vector<ScannedLine>& out) {
  lines_at<classify_avx2>(data, n, q, out);
}
[[gnu::target("avx512bw"), gnu::flatten]] void lines_avx512(const char* data, size_t n,
                                                            const Query& q,
                                                            std::vector<ScannedLine>& out) {
  lines_at<classify_avx512>(data, n, q, out);
}
#endif

}  // namespace

void VectorScanner::scan_lines(SimdLevel level, std::string_view lines, std::string_view key_field,
                               std::string_view heartbeat_field, std::vector<ScannedLine>& out) {
  const Query q{Name(key_field), Name(heartbeat_field)};
  switch (level) {
#if defined(__x86_64__)
    case SimdLevel::avx2:
      return lines_avx2(lines.data(), lines.size(), q, out);
    case SimdLevel::sse2:
      return lines_sse2(lines.data(), lines.size(), q, out);
    case SimdLevel::avx512:
      return lines_avx512(lines.data(), lines.size(), q, out);
#endif
    default:  // the scalar scanner, line by line
      return;
  }
}

}  // namespace chronomerge
