// AVX-512 intrinsics on a CPU without AVX-512, for tests only: SIMDe (Debian's libsimde-dev,
// https://github.com/simd-everywhere/simde) maps every _mm512_* name to a portable implementation
// built from the AVX2 the test binary is compiled for. SIMDe 0.7.4 lacks four intrinsics the
// quantised dot kernels use; they are defined here lane by lane from their documented semantics
// (Intel Intrinsics Guide): int32 -> f32 with the default rounding, f16 -> f32 (exact, through
// F16C), arithmetic shift right, and a masked store.
//
// Include before any kernel header, in a translation unit compiled with -mavx2 -mfma -mf16c and
// without -mavx512*: SIMDe then aliases the AVX-512 names instead of using the native ones.
#pragma once

#define SIMDE_ENABLE_NATIVE_ALIASES
#include <immintrin.h>
#include <simde/x86/avx512.h>

#include <cstdint>

#if defined(__AVX512F__)
#error "simde_avx512.h emulates AVX-512: compile this translation unit without -mavx512*"
#endif

namespace moerun::simde_shim {

inline simde__m512 Cvtepi32Ps(simde__m512i a) {
  alignas(64) int32_t i[16];
  alignas(64) float f[16];
  simde_mm512_storeu_si512(i, a);
  for (int k = 0; k < 16; ++k) f[k] = static_cast<float>(i[k]);
  return simde_mm512_loadu_ps(f);
}

inline simde__m512 CvtphPs(simde__m256i h) {
  alignas(32) uint16_t x[16];
  alignas(64) float f[16];
  simde_mm256_storeu_si256(x, h);
  _mm256_storeu_ps(f, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x))));
  _mm256_storeu_ps(f + 8, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 8))));
  return simde_mm512_loadu_ps(f);
}

inline simde__m512i SraiEpi32(simde__m512i a, unsigned n) {
  alignas(64) int32_t i[16];
  simde_mm512_storeu_si512(i, a);
  for (int32_t& v : i) v = n > 31 ? (v < 0 ? -1 : 0) : v >> n;
  return simde_mm512_loadu_si512(i);
}

inline void MaskStoreuPs(float* p, uint16_t mask, simde__m512 v) {
  alignas(64) float f[16];
  simde_mm512_storeu_ps(f, v);
  for (int k = 0; k < 16; ++k) {
    if ((mask >> k) & 1u) p[k] = f[k];
  }
}

}  // namespace moerun::simde_shim

#define _mm512_cvtepi32_ps(a) ::moerun::simde_shim::Cvtepi32Ps(a)
#define _mm512_cvtph_ps(a) ::moerun::simde_shim::CvtphPs(a)
#define _mm512_srai_epi32(a, n) ::moerun::simde_shim::SraiEpi32(a, n)
#define _mm512_mask_storeu_ps(p, m, v) ::moerun::simde_shim::MaskStoreuPs(p, m, v)
