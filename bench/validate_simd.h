// The validator's instruction-set levels, as the validator benchmark
// (validate_bench.cc) sees them.
//
// With lib/record/simd_level.h in the tree, this is that header, and a
// RecordParser is built for a given level. Without it (the scalar
// validator only), a stand-in declares the same names, with scalar as the
// only level the CPU "supports", and make_parser() builds the one parser
// there is. The benchmark is therefore the same program before and after
// the vector validator; once it is in, this stand-in can go.
#pragma once

#include <string_view>
#include <utility>

#include "record/record_parser.h"

#if __has_include("record/simd_level.h")
#include "record/simd_level.h"
#define CHRONOMERGE_BENCH_HAVE_SIMD_LEVEL 1
#else
#define CHRONOMERGE_BENCH_HAVE_SIMD_LEVEL 0

namespace chronomerge {

enum class SimdLevel { scalar, sse2, avx2 };

inline std::string_view to_string(SimdLevel level) {
  switch (level) {
    case SimdLevel::scalar:
      return "scalar";
    case SimdLevel::sse2:
      return "sse2";
    case SimdLevel::avx2:
      return "avx2";
  }
  return "unknown";
}

// Only the scalar validator exists.
inline bool simd_level_supported(SimdLevel level) { return level == SimdLevel::scalar; }
inline SimdLevel default_simd_level() { return SimdLevel::scalar; }

}  // namespace chronomerge

#endif

namespace chronomerge::bench {

// Every level, in the order the benchmark runs them: the reference first.
inline constexpr SimdLevel all_simd_levels[] = {SimdLevel::scalar, SimdLevel::sse2,
                                                SimdLevel::avx2};

// Whether the parsers use the requested level, or there is only one parser.
inline constexpr bool simd_levels_real = CHRONOMERGE_BENCH_HAVE_SIMD_LEVEL != 0;

inline RecordParser make_parser(KeySpec spec, [[maybe_unused]] SimdLevel level) {
#if CHRONOMERGE_BENCH_HAVE_SIMD_LEVEL
  return RecordParser(std::move(spec), level);
#else
  return RecordParser(std::move(spec));
#endif
}

}  // namespace chronomerge::bench
