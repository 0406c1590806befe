#include "record/simd_level.h"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace chronomerge {

std::string_view to_string(SimdLevel level) {
  switch (level) {
    case SimdLevel::scalar:
      return "scalar";
    case SimdLevel::sse2:
      return "sse2";
    case SimdLevel::avx2:
      return "avx2";
    case SimdLevel::avx512:
      return "avx512";
  }
  return "scalar";
}

std::optional<SimdLevel> simd_level_from(std::string_view name) {
  for (SimdLevel level : {SimdLevel::scalar, SimdLevel::sse2, SimdLevel::avx2, SimdLevel::avx512}) {
    if (name == to_string(level)) return level;
  }
  return std::nullopt;
}

bool simd_level_supported(SimdLevel level) {
  switch (level) {
    case SimdLevel::scalar:
      return true;
#if defined(__x86_64__)
    case SimdLevel::sse2:
      return true;  // part of x86-64
    case SimdLevel::avx2:
      return __builtin_cpu_supports("avx2");
    case SimdLevel::avx512:
      return __builtin_cpu_supports("avx512bw");
#else
    default:
      return false;
#endif
  }
  return false;
}

SimdLevel widest_simd_level() {
  for (SimdLevel level : {SimdLevel::avx512, SimdLevel::avx2, SimdLevel::sse2}) {
    if (simd_level_supported(level)) return level;
  }
  return SimdLevel::scalar;
}

SimdLevel fastest_simd_level() {
  for (SimdLevel level : {SimdLevel::avx512, SimdLevel::avx2}) {
    if (simd_level_supported(level)) return level;
  }
  return SimdLevel::scalar;
}

SimdLevel default_simd_level() {
  static const SimdLevel chosen = [] {
    const char* forced = std::getenv("CHRONOMERGE_SIMD");
    if (forced == nullptr || *forced == '\0') return fastest_simd_level();
    const std::optional<SimdLevel> level = simd_level_from(forced);
    if (!level) {
      std::fprintf(stderr,
                   "chronomerge: CHRONOMERGE_SIMD=%s is not avx512, avx2, sse2 or scalar; using "
                   "%s\n",
                   forced, std::string(to_string(fastest_simd_level())).c_str());
      return fastest_simd_level();
    }
    if (!simd_level_supported(*level)) {
      std::fprintf(stderr, "chronomerge: CHRONOMERGE_SIMD=%s: this CPU cannot; using %s\n", forced,
                   std::string(to_string(fastest_simd_level())).c_str());
      return fastest_simd_level();
    }
    return *level;
  }();
  return chosen;
}

}  // namespace chronomerge
