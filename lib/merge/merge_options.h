// The merge's vocabulary: how records of equal keys are combined, what
// happens to late records, and the default sizes of the queues between
// the stages. Plain types, shared by the merger, the configuration and the
// one-shot command; the only place the defaults are written down.
#pragma once

#include <cstddef>
#include <string_view>

namespace chronomerge {

enum class MergeMode { interleave, combine };
enum class LatePolicy { emit, drop, deadletter };

std::string_view to_string(MergeMode mode);
std::string_view to_string(LatePolicy policy);

// A feed's queue pauses its transport at the high-water mark and resumes
// it at the low one (bytes).
inline constexpr size_t default_feed_high_water_mark = 1 << 20;
inline constexpr size_t default_feed_low_water_mark = 256 << 10;
// The merged output stops the merge at this many bytes not yet written.
inline constexpr size_t default_output_high_water_mark = 1 << 20;
// Longer lines are malformed.
inline constexpr size_t default_max_line_bytes = 1 << 20;

}  // namespace chronomerge
