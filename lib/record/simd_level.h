// SimdLevel: which instruction set the record validator uses.
//
// One binary runs on every x86-64: the vector code is compiled for
// AVX-512BW, AVX2 and SSE2 with per-function target attributes (no -march
// in release builds) and chosen at run time from what the CPU supports.
// The scalar level (the scalar scanner alone, on every architecture) is
// the reference the others are tested against. SSE2 measured slower than
// the scalar scanner, so it is never chosen by itself; it stays for tests
// and for CHRONOMERGE_SIMD=avx512|avx2|sse2|scalar, which forces a level
// (one the CPU lacks falls back to the best it has, with a warning on
// stderr).
#pragma once

#include <optional>
#include <string_view>

namespace chronomerge {

enum class SimdLevel { scalar, sse2, avx2, avx512 };

std::string_view to_string(SimdLevel level);
std::optional<SimdLevel> simd_level_from(std::string_view name);

// The fastest level this CPU supports: avx512, avx2, else scalar.
SimdLevel best_simd_level();
// Whether this CPU can run `level`.
bool simd_level_supported(SimdLevel level);
// CHRONOMERGE_SIMD if set (and supported), else best_simd_level(); read
// once per process.
SimdLevel default_simd_level();

}  // namespace chronomerge
