// How deep JSON text nests, measured on its bytes without parsing them.
//
// nlohmann/json copies and destroys values recursively, one stack frame
// per level, so a document nested a few hundred thousand levels deep (a
// 400 KB configuration file of '[') exhausts the stack. A configuration
// needs a handful of levels; find_excess_nesting() lets the loader refuse
// such a document before anything recursive is built from it.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace chronomerge {

// The byte offset in `text` of the first '[' or '{' that opens a container
// nested deeper than `max_depth` (the outermost container is at depth 1),
// or nullopt if there is none. One linear pass: brackets inside strings
// (escapes included) do not count, and nothing else is checked, so on text
// that is not JSON the answer is only a guess; the parser reports such
// text anyway.
std::optional<size_t> find_excess_nesting(std::string_view text, size_t max_depth);

}  // namespace chronomerge
