#include "engine/stop_strings.h"

#include <algorithm>

namespace moerun {

size_t FindStop(std::string_view text, size_t new_from, const std::vector<std::string>& stops) {
  size_t best = std::string_view::npos;
  for (const std::string& s : stops) {
    if (s.empty() || s.size() > text.size()) continue;
    // A match ending at or after new_from starts at or after new_from - (size - 1).
    const size_t start = new_from + 1 > s.size() ? new_from + 1 - s.size() : 0;
    const size_t at = text.find(s, start);
    if (at != std::string_view::npos) best = std::min(best, at);
  }
  return best;
}

size_t HeldBackBytes(std::string_view text, const std::vector<std::string>& stops) {
  size_t held = 0;
  for (const std::string& s : stops) {
    for (size_t n = std::min(s.size() - (s.empty() ? 0 : 1), text.size()); n > held; --n) {
      if (text.substr(text.size() - n) == std::string_view(s).substr(0, n)) {
        held = n;
        break;
      }
    }
  }
  return held;
}

}  // namespace moerun
