// SwiGLU's activation, y = silu(g) * u with silu(g) = g / (1 + exp(-g)), on one fixed sequence of
// f32 operations shared by every path, so the portable code, AVX2 and AVX-512 give the same bits
// (what lets every kernel row of a block format match the reference row bit for bit):
//   exp(x): x clamped to [-87, 88] (a NaN becomes -87, as vmaxps does); n = round-to-nearest-even
//           of x * log2(e); r = x - n * ln2 (two fmas, Cody-Waite split 0.693359375 +
//           -2.12194440e-4); p = the degree-6 Taylor polynomial of exp(r) by Horner fmas; the
//           result is p * 2^n (2^n built in the exponent bits). About 2e-7 relative.
//   silu(g) = g / (1 + exp(0 - g)), then one multiply by u.
// Each operation is a single IEEE rounding; the translation units are built with
// -ffp-contract=off so no compiler-chosen fusion changes them.
// Thread safety: pure functions.
#pragma once

#include <cstdint>

namespace moerun {

// The scalar definitions above (ExpRef is also attention's softmax exp, kernels/attention_softmax.h).
float ExpRef(float x);
float SiluRef(float g);

// y[l] = silu(g[l]) * u[l] for l < n. y may alias g or u.
using SwiGluRowFn = void (*)(const float* g, const float* u, float* y, int64_t n);
void SwiGluRowRef(const float* g, const float* u, float* y, int64_t n);

namespace internal {
void SwiGluRowAvx2(const float* g, const float* u, float* y, int64_t n);    // AVX2 + FMA
void SwiGluRowAvx512(const float* g, const float* u, float* y, int64_t n);  // AVX-512F
}  // namespace internal

}  // namespace moerun
