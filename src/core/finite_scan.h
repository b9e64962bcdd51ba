// FirstNonFinite: where the first NaN or ±Inf of an f32 array is, cheaply enough to run on every
// layer's output of every forward pass.
//
// The scan tests the exponent bits (all ones means NaN or Inf) with integer operations, which the
// compiler vectorises without -ffast-math; a hit is then located by a second, scalar pass over the
// 1024-element block that held it. Cost: one read of the array (a decode step's residual stream is
// a few KB per token, far below one layer's weight reads).
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"

namespace moerun {

// True if any of x[0, n) is NaN or ±Inf.
inline bool AnyNonFinite(const float* x, size_t n) {
  uint32_t hit = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, x + i, sizeof bits);
    hit |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return hit != 0;
}

// The index of the first NaN or ±Inf of x[0, n), or nullopt when every value is finite.
inline std::optional<size_t> FirstNonFinite(const float* x, size_t n) {
  constexpr size_t kBlock = 1024;
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t len = n - b < kBlock ? n - b : kBlock;
    if (!AnyNonFinite(x + b, len)) continue;
    for (size_t i = b; i < b + len; ++i) {
      uint32_t bits;
      std::memcpy(&bits, x + i, sizeof bits);
      if ((bits & 0x7f800000u) == 0x7f800000u) return i;
    }
  }
  return std::nullopt;
}

// "nan", "inf" or "-inf" (for messages naming the value found).
inline std::string NonFiniteName(float v) {
  if (v != v) return "nan";
  return v > 0 ? "inf" : "-inf";
}

// The first non-finite element of a row-major [rows, cols] matrix.
struct NonFiniteAt {
  int64_t row = 0, col = 0;
  float value = 0;
};
inline std::optional<NonFiniteAt> FindNonFinite(const float* x, int64_t rows, int64_t cols) {
  const std::optional<size_t> i = FirstNonFinite(x, static_cast<size_t>(rows * cols));
  if (!i) return std::nullopt;
  const int64_t at = static_cast<int64_t>(*i);
  return NonFiniteAt{at / cols, at % cols, x[*i]};
}

// OK, or InvalidArgument "<what>: nan at token 3, column 17" for the first NaN/Inf of the matrix.
inline Status CheckRowsFinite(const float* x, int64_t rows, int64_t cols, std::string_view what) {
  const std::optional<NonFiniteAt> bad = FindNonFinite(x, rows, cols);
  if (!bad) return Status::Ok();
  return InvalidArgument("{}: {} at token {}, column {}", what, NonFiniteName(bad->value), bad->row,
                         bad->col);
}

}  // namespace moerun
