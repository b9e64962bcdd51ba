// 128-bit fixed-point accumulation: exact, order-independent sums of f32 terms.
//
// A term v is mapped to round_toward_minus_inf(v * 2^kFixedFracBits) as a signed 128-bit integer
// (exact for |v| >= 2^-56, i.e. for every f32 term that matters to an f32 result; smaller terms
// are floored deterministically). Integer addition is associative, so a sum of such terms has the
// same bits whatever the order or grouping in which ranks and threads add them. That is what makes
// deterministic mode bitwise identical across parallel layouts. Range: |sum| < 2^47.
// Thread safety: pure functions.
#pragma once

#include <cmath>
#include <cstdint>

namespace moerun {

__extension__ typedef __int128 Fixed128;  // NOLINT(modernize-use-using): __extension__ silences -Wpedantic
inline constexpr int kFixedFracBits = 80;

inline Fixed128 ToFixed(float v) {
  if (!std::isfinite(v)) {
    if (std::isnan(v)) return 0;
    return v > 0 ? (Fixed128{1} << 126) : -(Fixed128{1} << 126);
  }
  if (v == 0.0f) return 0;
  int exp = 0;
  const float m = std::frexp(v, &exp);                        // v = m * 2^exp, 0.5 <= |m| < 1
  const auto mant = static_cast<int64_t>(std::ldexp(m, 24));  // exact: 24 significant bits
  const int shift = exp - 24 + kFixedFracBits;
  if (shift >= 0) {
    if (shift > 100) return mant > 0 ? (Fixed128{1} << 126) : -(Fixed128{1} << 126);  // saturate
    return static_cast<Fixed128>(mant) * (Fixed128{1} << shift);
  }
  if (shift <= -63) return mant < 0 ? -1 : 0;
  return static_cast<Fixed128>(mant >> -shift);  // arithmetic shift: floor
}

inline float FromFixed(Fixed128 f) {
  return static_cast<float>(std::ldexp(static_cast<long double>(f), -kFixedFracBits));
}

}  // namespace moerun
