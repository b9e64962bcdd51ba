// Checked size arithmetic for every size derived from untrusted input.
//
// Each helper returns OutOfRange naming `what` instead of wrapping. Check the final sum that
// sizes an allocation, not only its parts (the lesson of CVE-2026-27940 in gguf).
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "core/status.h"

namespace moerun {

inline StatusOr<uint64_t> CheckedMul(uint64_t a, uint64_t b, std::string_view what) {
  uint64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) {
    return OutOfRange("{}: {} * {} overflows 64 bits", what, a, b);
  }
  return r;
}

inline StatusOr<uint64_t> CheckedAdd(uint64_t a, uint64_t b, std::string_view what) {
  uint64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) {
    return OutOfRange("{}: {} + {} overflows 64 bits", what, a, b);
  }
  return r;
}

// Product of all dims (1 for a rank-0 shape), checked.
inline StatusOr<uint64_t> CheckedProduct(std::span<const int64_t> dims, std::string_view what) {
  uint64_t n = 1;
  for (int64_t d : dims) {
    if (d < 0) return OutOfRange("{}: negative dimension {}", what, d);
    ASSIGN_OR_RETURN(n, CheckedMul(n, static_cast<uint64_t>(d), what));
  }
  return n;
}

}  // namespace moerun
