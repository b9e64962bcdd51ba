// AttentionSoftmaxRow: one row of attention scores made probabilities in place, on one fixed sequence
// of operations shared by every path (portable, AVX2, AVX-512), so each path gives the same bits and
// the vector paths are checked bitwise against the portable one. For s[0 .. n):
//   x_j = s_j * scale                              (f32)
//   m   = max_j x_j
//   e_j = 0 if x_j - m < -87, else exp(x_j - m)    (kernels/silu.h's exp: about 2e-7 relative)
//   sum = the e_j added in f64 as eight running sums (sum l takes j = l, l + 8, l + 16, ... in
//         order), then ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))
//   p_j = e_j * f32(1 / sum), stored as 0 when under the smallest normal float (1.2e-38)
// Weights under e^-87 (1.6e-38 of the row's largest) and probabilities under the smallest normal float
// are exact zeros: kept as subnormals, every multiply by them in the value sum takes a microcode
// assist on Intel cores (a 512-token V2-Lite prefill on an Emerald Rapids Xeon ran 2.2x slower), and
// they reach an f32 output only when their value row is some 2^100 times the others.
// The vector paths run the exp over 8 or 16 positions at a time, where a std::exp per score took
// about 6 us of a Zen 5 core per 1000 positions and head (15 % of a V2-Lite decode step's attention
// at 2000 positions; 1.3 us with this kernel).
// Thread safety: pure function; concurrent calls must not share a row.
#pragma once

#include <cstdint>

#include "kernels/small_gemm.h"

namespace moerun {

// Scores more than 87 below the row's maximum get weight 0.
inline constexpr float kSoftmaxMinExponent = -87.0f;

// s: [n] scores in, probabilities out (n >= 1). `isa`: attention's small-GEMM path (kAuto: the best
// the CPU has; tests force each one).
void AttentionSoftmaxRow(float* s, int64_t n, float scale, SmallGemmIsa isa = SmallGemmIsa::kAuto);

namespace internal {
// The scalar tails of the vector paths: positions [j0, n) with j0 a multiple of 8, into the eight
// sums / from the row maximum as defined above.
void SoftmaxExpTail(float* s, int64_t j0, int64_t n, float m, double* sums);
void SoftmaxNormaliseTail(float* s, int64_t j0, int64_t n, float inv);
double SoftmaxSum(const double* sums);  // the fixed tree over the eight sums
void AttentionSoftmaxRowAvx2(float* s, int64_t n, float scale);
void AttentionSoftmaxRowAvx512(float* s, int64_t n, float scale);
}  // namespace internal

}  // namespace moerun
