#include "record/vector_scanner.h"

#include <simdjson.h>

#include <bit>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace chronomerge {

namespace {

constexpr int max_chunks = VectorScanner::max_line_bytes / 64;

// Stage 1's view of bytes: bit i of each mask describes byte i. Stage 1
// works on words of W bits: one 64-bit word per 64-byte chunk of a long
// line, carrying from word to word, or one 128-bit word for a line of at
// most 128 bytes (most records), which carries nothing.
template <typename W>
struct ClassMasks {
  W quote;
  W backslash;
  W whitespace;  // space, tab, CR, LF
  W lbrace;
  W rbrace;
  W bracket;  // [ or ]
  W colon;
  W comma;
  W control;  // below 0x20
  W high;     // 0x80 and above
  W digit;
  W zero;
  W minus;
  W plus;
  W dot;
  W exponent;  // e or E
  W literal;   // t, f or n: how true, false and null begin
};
using Chunk = ClassMasks<uint64_t>;
__extension__ using u128 = unsigned __int128;

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

// --- stage 1: SSE2, AVX2, AVX-512BW ----------------------------------------
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
    c.whitespace |= bits16(_mm_or_si128(_mm_or_si128(eq16(x, ' '), eq16(x, '\t')),
                                        _mm_or_si128(eq16(x, '\r'), eq16(x, '\n'))),
                           shift);
    c.lbrace |= bits16(eq16(x, '{'), shift);
    c.rbrace |= bits16(eq16(x, '}'), shift);
    c.bracket |= bits16(_mm_or_si128(eq16(x, '['), eq16(x, ']')), shift);
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
  c = Chunk{};
  for (int shift = 0; shift < 64; shift += 32) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + shift));
    const __m256i folded = _mm256_or_si256(x, _mm256_set1_epi8(0x20));
    const __m256i from_zero = _mm256_sub_epi8(x, _mm256_set1_epi8('0'));
    c.quote |= bits32(eq32(x, '"'), shift);
    c.backslash |= bits32(eq32(x, '\\'), shift);
    c.whitespace |= bits32(_mm256_or_si256(_mm256_or_si256(eq32(x, ' '), eq32(x, '\t')),
                                           _mm256_or_si256(eq32(x, '\r'), eq32(x, '\n'))),
                           shift);
    c.lbrace |= bits32(eq32(x, '{'), shift);
    c.rbrace |= bits32(eq32(x, '}'), shift);
    c.bracket |= bits32(_mm256_or_si256(eq32(x, '['), eq32(x, ']')), shift);
    c.colon |= bits32(eq32(x, ':'), shift);
    c.comma |= bits32(eq32(x, ','), shift);
    c.control |= bits32(_mm256_cmpeq_epi8(_mm256_min_epu8(x, _mm256_set1_epi8(0x1F)), x), shift);
    c.high |= bits32(x, shift);
    c.digit |= bits32(_mm256_cmpeq_epi8(_mm256_min_epu8(from_zero, _mm256_set1_epi8(9)), from_zero),
                      shift);
    c.zero |= bits32(eq32(x, '0'), shift);
    c.minus |= bits32(eq32(x, '-'), shift);
    c.plus |= bits32(eq32(x, '+'), shift);
    c.dot |= bits32(eq32(x, '.'), shift);
    c.exponent |= bits32(eq32(folded, 'e'), shift);
    c.literal |=
        bits32(_mm256_or_si256(_mm256_or_si256(eq32(x, 't'), eq32(x, 'f')), eq32(x, 'n')), shift);
  }
}

[[gnu::target("avx512bw"), gnu::always_inline]] inline uint64_t eq64(__m512i x, char c) {
  return _mm512_cmpeq_epi8_mask(x, _mm512_set1_epi8(c));
}

// AVX-512BW compares 64 bytes into a 64-bit mask in one instruction.
[[gnu::target("avx512bw")]] inline void classify_avx512(const char* p, Chunk& c) {
  const __m512i x = _mm512_loadu_si512(p);
  c.quote = eq64(x, '"');
  c.backslash = eq64(x, '\\');
  c.whitespace = eq64(x, ' ') | eq64(x, '\t') | eq64(x, '\r') | eq64(x, '\n');
  c.lbrace = eq64(x, '{');
  c.rbrace = eq64(x, '}');
  c.bracket = eq64(x, '[') | eq64(x, ']');
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

// The last `left` bytes of a chunk moved down to its start; what lies
// beyond the line counts as whitespace.
inline void keep_tail(Chunk& c, size_t left) {
  if (left >= 64) return;
  const unsigned drop = 64 - static_cast<unsigned>(left);
  for (uint64_t* mask : {&c.quote, &c.backslash, &c.whitespace, &c.lbrace, &c.rbrace, &c.bracket,
                         &c.colon, &c.comma, &c.control, &c.high, &c.digit, &c.zero, &c.minus,
                         &c.plus, &c.dot, &c.exponent, &c.literal}) {
    *mask >>= drop;
  }
  c.whitespace |= ~uint64_t{0} << left;
}

// Two chunks as one 128-bit word.
inline ClassMasks<u128> join(const Chunk& low, const Chunk& high) {
  auto both = [](uint64_t lo, uint64_t hi) { return static_cast<u128>(hi) << 64 | lo; };
  return {both(low.quote, high.quote),
          both(low.backslash, high.backslash),
          both(low.whitespace, high.whitespace),
          both(low.lbrace, high.lbrace),
          both(low.rbrace, high.rbrace),
          both(low.bracket, high.bracket),
          both(low.colon, high.colon),
          both(low.comma, high.comma),
          both(low.control, high.control),
          both(low.high, high.high),
          both(low.digit, high.digit),
          both(low.zero, high.zero),
          both(low.minus, high.minus),
          both(low.plus, high.plus),
          both(low.dot, high.dot),
          both(low.exponent, high.exponent),
          both(low.literal, high.literal)};
}

template <typename W>
constexpr int bits_of = static_cast<int>(sizeof(W) * 8);

// Bit i of the result: the XOR of bits 0..i of x. Over the quote mask, it
// is set from an opening quote up to (not including) its closing one.
template <typename W>
inline W prefix_xor(W x) {
  for (int shift = 1; shift < bits_of<W>; shift *= 2) x ^= x << shift;
  return x;
}

// Bit operations across the words of a line: each keeps what carries
// from one word into the next.
template <typename W>
struct ShiftCarry {
  W bit = 0;
  // x one byte on: bit i of the result is bit i-1 of x.
  W operator()(W x) {
    const W shifted = x << 1 | bit;
    bit = x >> (bits_of<W> - 1);
    return shifted;
  }
};
template <typename W>
struct AddCarry {
  bool carry = false;
  W operator()(W a, W b) {
    W sum;
    const bool first = __builtin_add_overflow(a, b, &sum);
    const bool second = __builtin_add_overflow(sum, static_cast<W>(carry), &sum);
    carry = first || second;
    return sum;
  }
};
// The first token after each bit of x (x a subset of the tokens): x + 1
// carried through the bytes up to the next token.
template <typename W>
struct NextToken {
  ShiftCarry<W> shift;
  AddCarry<W> add;
  W operator()(W x, W tokens) { return add(shift(x), ~tokens) & tokens; }
};
// For each run of `runs` holding bits of x (x a subset of runs): the run
// from its first such bit to its end. A second bit of x in the same run is
// not in the result.
template <typename W>
struct RunFrom {
  AddCarry<W> add;
  W operator()(W x, W runs) { return (runs ^ add(runs, x)) & runs; }
};

// What stage 1 leaves for reading the key: per chunk of the line, where
// tokens start, where the quotes are, which bytes belong to numbers and
// literals, where member names start and which bytes are fractions or
// exponents.
struct Masks {
  int chunks = 0;
  bool high_in_string = false;  // non-ASCII bytes inside strings: check UTF-8
  uint64_t token[max_chunks];
  uint64_t quote[max_chunks];
  uint64_t scalar[max_chunks];
  uint64_t names[max_chunks];
  uint64_t real[max_chunks];  // '.', 'e' and 'E' in numbers
};

// A word's masks into the chunks it covers.
template <typename W>
inline void store(uint64_t* masks, int chunk, W word) {
  masks[chunk] = static_cast<uint64_t>(word);
  if constexpr (sizeof(W) > sizeof(uint64_t)) masks[chunk + 1] = static_cast<uint64_t>(word >> 64);
}

// `t`, `f` or `n` starts a literal: it must be exactly true, false or null.
inline bool literal_at(const char* line, size_t n, size_t at) {
  const char* p = line + at;
  const std::string_view word = *p == 't' ? "true" : *p == 'f' ? "false" : "null";
  const size_t end = at + word.size();
  return end <= n && std::memcmp(p, word.data(), word.size()) == 0 &&
         (end == n || is_delimiter(line[end]));
}

// Stage 1 over one word of a line, the state carried between words.
template <typename W>
class Stage1 {
 public:
  // The next word of the line: `offset` is its first byte, `chunk` the
  // first chunk of `m` it fills.
  void add(const ClassMasks<W>& c, const char* line, size_t n, size_t offset, Masks& m, int chunk) {
    const W inside = prefix_xor(c.quote) ^ in_string_;  // opening quotes included
    in_string_ = static_cast<W>(0) - (inside >> (bits_of<W> - 1));
    problems_ |= c.backslash | (c.control & inside);
    high_ |= c.high & inside;
    const W outside = ~inside;
    const W op = c.lbrace | c.rbrace | c.bracket | c.colon | c.comma;
    const W scalar = ~(c.whitespace | op | c.quote | inside);
    const W run_start = scalar & ~previous_scalar_(scalar);
    const W open_quotes = c.quote & inside;
    const W tokens = (op & outside) | open_quotes | run_start;
    store(m.token, chunk, tokens);
    store(m.quote, chunk, c.quote);
    store(m.scalar, chunk, scalar);
    for (W literals = run_start & c.literal; literals != 0; literals &= literals - 1) {
      problems_ |= !literal_at(line, n, offset + static_cast<size_t>(lowest_bit(literals)));
    }

    const W lbrace = c.lbrace & outside;
    const W rbrace = c.rbrace & outside;
    const W colon = c.colon & outside;
    const W comma = c.comma & outside;
    nested_ |= c.bracket & outside;
    lbraces_ += popcount(lbrace);
    rbraces_ += popcount(rbrace);

    // A flat object: { ( name : value ( , name : value )* )? }, a value a
    // string, number or literal. Every token must be one of these, and
    // each is followed only by what may follow it.
    const W after_lbrace = after_lbrace_(lbrace, tokens);
    const W after_comma = after_comma_(comma, tokens);
    const W names = (after_lbrace | after_comma) & open_quotes;
    const W values = after_colon_(colon, tokens);
    store(m.names, chunk, names);
    bad_ |= (after_lbrace & ~(open_quotes | rbrace)) | (after_comma & ~open_quotes) |
            (after_name_(names, tokens) & ~colon) | (values & ~(open_quotes | run_start)) |
            (after_value_(values, tokens) & ~(comma | rbrace)) | after_rbrace_(rbrace, tokens) |
            (tokens & ~(lbrace | rbrace | colon | comma | names | values));

    // Numbers: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?; literals
    // were checked above.
    const W literal_bytes = literal_run_(run_start & c.literal, scalar);
    const W number = scalar & ~literal_bytes;
    const W starts = run_start & number;
    const W digit = c.digit & number;
    const W minus = c.minus & number;
    const W plus = c.plus & number;
    const W dot = c.dot & number;
    const W exponent = c.exponent & number;
    store(m.real, chunk, dot | exponent);
    const W after_digit = after_digit_(digit);
    const W after_exponent = after_exponent_(exponent);
    const W after_minus = after_minus_(starts & minus);
    const W first_digit = (starts | after_minus) & digit;
    const W exponent_part = exponent_part_(exponent, number);
    bad_ |= (number & ~(digit | minus | plus | dot | exponent)) | (starts & ~(digit | minus)) |
            (after_minus & ~digit) | (after_zero_(first_digit & c.zero) & digit) |
            (minus & ~(starts | after_exponent)) | (plus & ~after_exponent) | (dot & ~after_digit) |
            (after_dot_(dot) & ~digit) | (exponent & ~after_digit) |
            (after_exponent & ~(digit | minus | plus)) |
            (after_sign_(after_exponent & (minus | plus)) & ~digit) |
            (dot & ~dot_part_(dot, number)) | (exponent & ~exponent_part) | (dot & exponent_part);
  }

  // After the last word: true if the line is a valid flat object (one
  // object of members whose values are strings, numbers and literals, the
  // only lines the vector scanner decides); false if the scalar scanner
  // must decide. Nested lines are the scalar scanner's: a token walk over
  // them measured slower than it.
  bool finish(Masks& m) const {
    m.high_in_string = high_ != 0;
    const bool flat = nested_ == 0 && lbraces_ == 1 && rbraces_ == 1;
    return flat && bad_ == 0 && problems_ == 0 && in_string_ == 0;
  }

 private:
  static int lowest_bit(W x) {
    if constexpr (sizeof(W) > sizeof(uint64_t)) {
      const auto low = static_cast<uint64_t>(x);
      return low != 0 ? std::countr_zero(low)
                      : 64 + std::countr_zero(static_cast<uint64_t>(x >> 64));
    } else {
      return std::countr_zero(x);
    }
  }
  static int popcount(W x) {
    if constexpr (sizeof(W) > sizeof(uint64_t)) {
      return std::popcount(static_cast<uint64_t>(x)) +
             std::popcount(static_cast<uint64_t>(x >> 64));
    } else {
      return std::popcount(x);
    }
  }

  W in_string_ = 0;  // all ones when the previous word ended inside a string
  W problems_ = 0;
  W high_ = 0;
  W bad_ = 0;
  W nested_ = 0;
  int lbraces_ = 0;
  int rbraces_ = 0;
  ShiftCarry<W> previous_scalar_;
  NextToken<W> after_lbrace_, after_comma_, after_colon_, after_name_, after_value_, after_rbrace_;
  RunFrom<W> literal_run_, dot_part_, exponent_part_;
  ShiftCarry<W> after_digit_, after_exponent_, after_minus_, after_zero_, after_dot_, after_sign_;
};

// False when the line needs the scalar scanner: a backslash (escapes are
// checked there), a control byte inside a string, a string left open, a
// line that is not a flat object, or any error. Bytes past the line's end are never
// read: a last partial chunk is read as the 64 bytes that end the line
// (their masks shifted down), or, in a line shorter than 64 bytes, copied.
template <void (*classify)(const char*, Chunk&)>
[[gnu::always_inline]] inline bool stage1(const char* line, size_t n, Masks& m) {
  m.chunks = static_cast<int>((n + 63) / 64);
  Chunk c;
  if (n <= 64) {
    char copy[64];
    std::memcpy(copy, line, n);
    std::memset(copy + n, ' ', 64 - n);
    classify(copy, c);
    Stage1<uint64_t> stage;
    stage.add(c, line, n, 0, m, 0);
    return stage.finish(m);
  }
  if (n <= 128) {
    Chunk high;
    classify(line, c);
    classify(line + n - 64, high);
    keep_tail(high, n - 64);
    Stage1<u128> stage;
    stage.add(join(c, high), line, n, 0, m, 0);
    return stage.finish(m);
  }
  Stage1<uint64_t> stage;
  for (int i = 0; i < m.chunks; ++i) {
    const size_t offset = 64 * static_cast<size_t>(i);
    const size_t left = n - offset;
    if (left >= 64) {
      classify(line + offset, c);
    } else {
      classify(line + n - 64, c);
      keep_tail(c, left);
    }
    stage.add(c, line, n, offset, m, i);
  }
  return stage.finish(m);
}

#if defined(__x86_64__)
[[gnu::flatten]] bool stage1_sse2(const char* line, size_t n, Masks& m) {
  return stage1<classify_sse2>(line, n, m);
}
[[gnu::target("avx2"), gnu::flatten]] bool stage1_avx2(const char* line, size_t n, Masks& m) {
  return stage1<classify_avx2>(line, n, m);
}
[[gnu::target("avx512bw"), gnu::flatten]] bool stage1_avx512(const char* line, size_t n, Masks& m) {
  return stage1<classify_avx512>(line, n, m);
}
#endif

// --- the key of a flat object ---------------------------------------------

// Positions in a line's masks.
class Cursor {
 public:
  Cursor(const Masks& m, size_t n) : m_(m), n_(n) {}

  // The first token at or after `from`.
  size_t token_from(size_t from) const { return first_set(m_.token, from, false); }
  // The first quote at or after `from` (a string's closing quote: stage 1
  // made sure it exists).
  size_t quote_from(size_t from) const { return first_set(m_.quote, from, false); }
  // Where the number or literal starting at `from` ends.
  size_t scalar_end(size_t from) const { return first_set(m_.scalar, from, true); }

 private:
  // The first bit at or after `from` that is set (or clear, if `clear`),
  // at most n.
  size_t first_set(const uint64_t* masks, size_t from, bool clear) const {
    const uint64_t flip = clear ? ~uint64_t{0} : 0;
    size_t word = from / 64;
    if (word >= static_cast<size_t>(m_.chunks)) return n_;
    uint64_t x = (masks[word] ^ flip) & (~uint64_t{0} << (from % 64));
    while (x == 0) {
      if (++word >= static_cast<size_t>(m_.chunks)) return n_;
      x = masks[word] ^ flip;
    }
    const size_t at = word * 64 + static_cast<size_t>(std::countr_zero(x));
    return at < n_ ? at : n_;
  }

  const Masks& m_;
  const size_t n_;
};

// Whether the string whose opening quote is at `quote` holds exactly
// `want`: without escapes (stage 1 sent those away), the byte after
// `want` is then its closing quote, so the end need not be searched.
inline bool string_is(const char* line, size_t n, size_t quote, std::string_view want) {
  const size_t body = quote + 1;
  const size_t size = want.size();
  if (n - body <= size || line[body + size] != '"') return false;
  if (std::endian::native == std::endian::little && size <= 8 && n - body >= 8) {
    // Most names are short: one load, no call.
    uint64_t have;
    uint64_t wanted = 0;
    std::memcpy(&have, line + body, 8);
    std::memcpy(&wanted, want.data(), size);
    const uint64_t keep = size == 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * size)) - 1;
    return (have & keep) == wanted;
  }
  return std::memcmp(line + body, want.data(), size) == 0;
}

// Whether any of bits [from, to) is set in the chunk masks.
inline bool any_bit(const uint64_t* masks, size_t from, size_t to) {
  for (size_t word = from / 64; word * 64 < to; ++word) {
    uint64_t x = masks[word];
    if (word == from / 64) x &= ~uint64_t{0} << (from % 64);
    if ((word + 1) * 64 > to) x &= ~(~uint64_t{0} << (to % 64));
    if (x != 0) return true;
  }
  return false;
}

// Where the last member named `want` starts (its opening quote), or
// ~0. Only names whose closing quote lies where `want`'s would are
// compared, from the last one back.
inline size_t last_name(const char* line, size_t n, const Masks& m, std::string_view want) {
  const size_t distance = want.size() + 1;  // from the opening quote to the closing one
  for (int i = m.chunks - 1; i >= 0; --i) {
    uint64_t candidates = m.names[i];
    if (distance < 64) {
      const uint64_t next = i + 1 < m.chunks ? m.quote[i + 1] : 0;
      candidates &= m.quote[i] >> distance | next << (64 - distance);
    }
    while (candidates != 0) {
      const int top = 63 - std::countl_zero(candidates);
      const size_t at = 64 * static_cast<size_t>(i) + static_cast<size_t>(top);
      if (string_is(line, n, at, want)) return at;
      candidates &= ~(uint64_t{1} << top);
    }
  }
  return ~size_t{0};
}

// A flat object stage 1 has checked: the key (the member named `*key`; none
// if `key` is null) and the heartbeat flag, the last of each name winning.
void flat_members(const char* line, size_t n, const Masks& m, const std::string* key,
                  std::string_view heartbeat_field, LineScan& out) {
  out = LineScan{};
  out.top_is_object = true;
  constexpr size_t none = ~size_t{0};
  const size_t key_name = key != nullptr ? last_name(line, n, m, *key) : none;
  const size_t heartbeat_name =
      heartbeat_field.empty() ? none : last_name(line, n, m, heartbeat_field);
  const Cursor cursor(m, n);
  // A name's value: the token after the colon after the name.
  auto value_of = [&](size_t name) { return cursor.token_from(cursor.token_from(name + 1) + 1); };
  if (heartbeat_name != none) out.heartbeat = line[value_of(heartbeat_name)] == 't';
  if (key_name == none) return;
  const size_t value = value_of(key_name);
  const char first = line[value];
  if (first == '"') {
    out.key =
        KeyValue{line + value, line + cursor.quote_from(value + 1) + 1, ValueKind::string, false};
    return;
  }
  const size_t end = cursor.scalar_end(value);
  ValueKind kind = first == 't'                   ? ValueKind::true_literal
                   : first == 'f' || first == 'n' ? ValueKind::other
                   : any_bit(m.real, value, end)  ? ValueKind::real
                                                  : ValueKind::integer;
  out.key = KeyValue{line + value, line + end, kind, false};
}

}  // namespace

bool VectorScanner::scan(SimdLevel level, std::string_view line, const std::string* tokens,
                         int token_count, std::string_view heartbeat_field, LineScan& scan) {
  if (line.empty() || line.size() > max_line_bytes) return false;
  Masks m;
  bool ok = false;
  switch (level) {
#if defined(__x86_64__)
    case SimdLevel::avx2:
      ok = stage1_avx2(line.data(), line.size(), m);
      break;
    case SimdLevel::sse2:
      ok = stage1_sse2(line.data(), line.size(), m);
      break;
    case SimdLevel::avx512:
      ok = stage1_avx512(line.data(), line.size(), m);
      break;
#endif
    default:  // the scalar scanner alone
      return false;
  }
  if (!ok) return false;
  // A path of two tokens or more leads into a container, and a flat
  // object has none: its key is missing.
  flat_members(line.data(), line.size(), m, token_count == 1 ? tokens : nullptr, heartbeat_field,
               scan);
  return !m.high_in_string || simdjson::validate_utf8(line.data(), line.size());
}

}  // namespace chronomerge
