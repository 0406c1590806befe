#include "merge/merge_options.h"

namespace chronomerge {

std::string_view to_string(MergeMode mode) {
  switch (mode) {
    case MergeMode::interleave:
      return "interleave";
    case MergeMode::combine:
      return "combine";
  }
  return "?";
}

std::string_view to_string(LatePolicy policy) {
  switch (policy) {
    case LatePolicy::emit:
      return "emit";
    case LatePolicy::drop:
      return "drop";
    case LatePolicy::deadletter:
      return "deadletter";
  }
  return "?";
}

}  // namespace chronomerge
