// Stop strings (the OpenAI `stop` field) over text that grows one token at a time.
//
// FindStop returns where the earliest stop string begins in `text`, looking only at matches that
// end at or after `new_from` (the text before it was searched when it arrived), or npos.
// HeldBackBytes is how many bytes at the end of `text` could still begin a stop string (the
// longest suffix that is a proper prefix of one): streamed text stops before them until the next
// token decides. Empty stop strings are ignored.
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace moerun {

size_t FindStop(std::string_view text, size_t new_from, const std::vector<std::string>& stops);
size_t HeldBackBytes(std::string_view text, const std::vector<std::string>& stops);

}  // namespace moerun
