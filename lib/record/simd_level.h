// SimdLevel: which instruction set the record validator uses.
//
// One binary runs on every x86-64: the vector scanner (vector_scanner.h) is
// compiled for AVX-512BW, AVX2 and SSE2 with per-function target attributes
// (no -march in release builds), and a level the CPU lacks is never used.
// The scalar level (the scalar scanner alone, on every architecture) is the
// reference the others are tested against. By default the widest of
// AVX-512BW and AVX2 the CPU has is used, else scalar: SSE2 measured slower
// than scalar (bench/README.md, "Validation"). CHRONOMERGE_SIMD=avx512|avx2|
// sse2|scalar chooses a level (one the CPU lacks falls back to the
// default, with a warning on stderr).
#pragma once

#include <optional>
#include <string_view>

namespace chronomerge {

enum class SimdLevel { scalar, sse2, avx2, avx512 };

std::string_view to_string(SimdLevel level);
std::optional<SimdLevel> simd_level_from(std::string_view name);

// Whether this CPU can run `level`.
bool simd_level_supported(SimdLevel level);
// The widest vector level this CPU supports, or scalar.
SimdLevel widest_simd_level();
// The level used unless CHRONOMERGE_SIMD says otherwise: avx512, else
// avx2, else scalar.
SimdLevel fastest_simd_level();
// CHRONOMERGE_SIMD if set (and supported), else fastest_simd_level(); read
// once per process.
SimdLevel default_simd_level();

}  // namespace chronomerge
