// 128-bit fixed-point accumulation: exact, order-independent sums of f32 terms.
//
// A term v is mapped to trunc(v * 2^kFixedFracBits) as a signed 128-bit integer (exact for
// |v| >= 2^-56, i.e. for every f32 term that matters to an f32 result; smaller terms are
// truncated deterministically). Integer addition is associative, so a sum of such terms has the
// same bits whatever the order or grouping in which ranks and threads add them. That is what makes
// deterministic mode bitwise identical across parallel layouts. Range: |sum| < 2^47.
// NaN and ±Inf terms are not dropped: they become kFixedPoison (2^118, always positive, so two
// cannot cancel, and up to 512 of them fit in a sum). FromFixedChecked turns a sum of magnitude
// >= 2^117 back into NaN: a sum holding a poisoned term stays there while its finite terms total
// less than 2^37 (activations are far smaller), so a layer boundary still sees the NaN.
// Thread safety: pure functions.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>

namespace moerun {

__extension__ typedef __int128 Fixed128;  // NOLINT(modernize-use-using): __extension__ silences -Wpedantic
inline constexpr int kFixedFracBits = 80;
inline constexpr Fixed128 kFixedPoison = Fixed128{1} << 118;  // what a NaN / ±Inf term adds

// Exact for |v| >= 2^-56; smaller magnitudes are truncated toward zero. Bit manipulation only
// (this runs once per term in deterministic mode).
inline Fixed128 ToFixed(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  const uint32_t biased = (bits >> 23) & 0xffu;
  const bool negative = (bits >> 31) != 0;
  constexpr Fixed128 kSaturated = Fixed128{1} << 126;
  if (biased == 0xffu) return kFixedPoison;  // inf or NaN
  // v = mant * 2^(exp - 150) with a 24-bit mant (subnormals: exp 1, no implicit bit).
  const int64_t mant = biased == 0 ? (bits & 0x7fffffu) : ((bits & 0x7fffffu) | 0x800000u);
  const int shift = (biased == 0 ? 1 : static_cast<int>(biased)) - 150 + kFixedFracBits;
  Fixed128 magnitude;
  if (shift >= 0) {
    magnitude = shift > 100 ? kSaturated : static_cast<Fixed128>(mant) << shift;
  } else {
    magnitude = shift <= -24 ? 0 : static_cast<Fixed128>(mant >> -shift);
  }
  return negative ? -magnitude : magnitude;
}

__extension__ typedef unsigned __int128 UFixed128;  // NOLINT(modernize-use-using)

// f * 2^-80 rounded to float as by static_cast<float>(ldexp(long double(f), -80)): the 128-bit
// integer rounded to a 64-bit significand (nearest even), then to float (nearest even); integer
// arithmetic only (no x87 or libm calls).
inline float FromFixed(Fixed128 f) {
  const bool negative = f < 0;
  const UFixed128 u = negative ? UFixed128{0} - static_cast<UFixed128>(f) : static_cast<UFixed128>(f);
  const uint64_t hi = static_cast<uint64_t>(u >> 64);
  int shift = 0;  // u ~ m * 2^shift
  uint64_t m = static_cast<uint64_t>(u);
  if (hi != 0) {
    shift = 64 - __builtin_clzll(hi);
    m = static_cast<uint64_t>(u >> shift);
    const UFixed128 rem = u & ((UFixed128{1} << shift) - 1), half = UFixed128{1} << (shift - 1);
    if (rem > half || (rem == half && (m & 1) != 0)) {
      if (++m == 0) {  // carried out of 64 bits: 2^64
        m = uint64_t{1} << 63;
        ++shift;
      }
    }
  }
  // m < 2^64 converts with one rounding; the scale 2^(shift - 80) is in [2^-80, 2^48], so the
  // product is exact (no subnormal or overflowing result).
  const float scale = std::bit_cast<float>(static_cast<uint32_t>(127 + shift - kFixedFracBits) << 23);
  const float r = static_cast<float>(m) * scale;
  return negative ? -r : r;
}

// FromFixed, or NaN for a sum holding a NaN / ±Inf term (|f| >= kFixedPoison / 2; finite sums of
// |sum| >= 2^37 land there too, far outside any activation).
inline float FromFixedChecked(Fixed128 f) {
  constexpr Fixed128 kBound = kFixedPoison / 2;
  if (f >= kBound || f <= -kBound) return std::numeric_limits<float>::quiet_NaN();
  return FromFixed(f);
}

// One row of weighted terms for AccumulateFixed: the terms weight * y[c], c < n.
struct FixedTermRow {
  const float* y = nullptr;
  float weight = 0;
};

// How AccumulateFixed runs. Every path computes the same integers (bitwise).
enum class FixedPath {
  kAuto,    // the fastest path this CPU supports
  kScalar,  // portable: one ToFixed per term
  kAvx512,  // AVX-512 F/DQ: exact two-limb int64 sums per lane, normalised once per call
  kAvx2,    // AVX2 + FMA: the same split computed in double precision
};
const char* FixedPathName(FixedPath path);
bool FixedPathSupported(FixedPath path);

// Per-column partial sums of terms held as two int64 limbs, value hi[c] * 2^48 + lo[c] in the
// 2^-80 fixed point, for callers that add a few terms at a time to many rows (the fused
// deterministic down projection: 8 per call). The vector paths add a call's terms into the limbs
// instead of normalising them into the 128-bit dst on every call; FlushFixedLimbs does that once.
// Arrays of n columns, zero before the first term; at most 2^14 terms per column between flushes.
struct FixedLimbs {
  int64_t* hi = nullptr;
  int64_t* lo = nullptr;
};

// dst[c] += sum over rows r of ToFixed(rows[r].weight * rows[r].y[c]), for c in [0, n).
// The f32 product is rounded as in scalar code (no FMA), then converted exactly; the integer
// result is the same for every path, order and grouping of rows. REQUIRES: FixedPathSupported.
// With limbs (columns [0, n) of them), some or all of the sum may go into the limbs instead of
// dst: dst + the limbs' value is the same integer.
void AccumulateFixed(Fixed128* dst, int64_t n, std::span<const FixedTermRow> rows,
                     FixedPath path = FixedPath::kAuto, FixedLimbs limbs = {});
// dst[c] += hi[c] * 2^48 + lo[c] for c in [0, n), and the limbs back to zero.
void FlushFixedLimbs(Fixed128* dst, int64_t n, FixedLimbs limbs);

namespace internal {
// The value of a column's two limbs, hi * 2^48 + lo (FixedLimbs; the vector paths' per-lane sums).
inline Fixed128 FromLimbs(int64_t hi, int64_t lo) {
  return Fixed128{hi} * (Fixed128{1} << 48) + Fixed128{lo};
}
// The AVX-512 kernel (core/fixed_point_avx512.cc); call only when the CPU supports it.
void AccumulateFixedAvx512(Fixed128* dst, int64_t n, const FixedTermRow* rows, int64_t n_rows,
                           FixedLimbs limbs);
// The AVX2 kernel (core/fixed_point_avx2.cc); likewise.
void AccumulateFixedAvx2(Fixed128* dst, int64_t n, const FixedTermRow* rows, int64_t n_rows,
                         FixedLimbs limbs);
void AccumulateFixedScalar(Fixed128* dst, int64_t begin, int64_t end, const FixedTermRow* rows,
                           int64_t n_rows);
}  // namespace internal

}  // namespace moerun
