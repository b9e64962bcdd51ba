// f32 vector traits for kernels written once over a vector type: F32x8 (AVX2 + FMA + F16C, 8
// lanes) and, in translation units compiled with -mavx512f, F32x16 (16 lanes). Each trait has the
// vector type Vec, its width W, loads and stores (whole, or the first n lanes with the rest zero),
// Set1, Add, Sub, Mul, Div, Fma / Fnma, Min / Max, RoundEven, Pow2, FromI8Lanes, Reduce (a fixed tree: halves
// added pairwise down to one lane, so a sum's bits depend only on the vector), ReduceMax,
// ZeroWhereLess, eight f64 running sums fed lane by lane (Doubles8: lane l of a 16-lane vector goes to
// sum l % 8, the low half first), and f16 / bf16 widening.
// Include only from the *_avx2.cc / *_avx512.cc translation units: everything here has internal
// linkage, so each ISA's copy is compiled with its own flags (no cross-ISA ODR merging).
// Thread safety: pure functions.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "core/dtype.h"

namespace moerun::internal {
namespace {

struct F32x8 {
  using Vec = __m256;
  static constexpr int W = 8;
  static Vec Zero() { return _mm256_setzero_ps(); }
  static Vec Set1(float a) { return _mm256_set1_ps(a); }
  static Vec Load(const float* p) { return _mm256_loadu_ps(p); }
  static void Store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  static __m256i Mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static Vec LoadPartial(const float* p, int n) { return _mm256_maskload_ps(p, Mask(n)); }
  static void StorePartial(float* p, Vec v, int n) { _mm256_maskstore_ps(p, Mask(n), v); }
  static Vec Add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static Vec Mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
  static Vec Fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static Vec Fnma(Vec a, Vec b, Vec c) { return _mm256_fnmadd_ps(a, b, c); }  // c - a * b, one rounding
  static Vec Sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
  static Vec Div(Vec a, Vec b) { return _mm256_div_ps(a, b); }
  static Vec Min(Vec a, Vec b) { return _mm256_min_ps(a, b); }  // b when either is NaN
  static Vec Max(Vec a, Vec b) { return _mm256_max_ps(a, b); }  // b when either is NaN
  static Vec RoundEven(Vec v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // 2^n for integer-valued lanes n in [-126, 127] (built in the exponent bits).
  static Vec Pow2(Vec n) {
    return _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
  }
  // v with 0 in the lanes where a < b (a NaN in a or b keeps v's lane).
  static Vec ZeroWhereLess(Vec v, Vec a, Vec b) { return _mm256_and_ps(_mm256_cmp_ps(a, b, _CMP_NLT_UQ), v); }
  // Eight f64 running sums; AddToDoubles adds lanes 0..7 of v to sums 0..7.
  struct Doubles8 {
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  };
  static void AddToDoubles(Doubles8& d, Vec v) {
    d.lo = _mm256_add_pd(d.lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    d.hi = _mm256_add_pd(d.hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  }
  static void StoreDoubles(double* out, const Doubles8& d) {
    _mm256_storeu_pd(out, d.lo);
    _mm256_storeu_pd(out + 4, d.hi);
  }
  static float ReduceMax(Vec v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
  }
  // ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)).
  static float Reduce(Vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float Half(uint16_t h) { return _cvtsh_ss(h); }
  // The low W int8 lanes of v as f32 (exact).
  static Vec FromI8Lanes(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }
  static void WidenF16(const uint16_t* s, float* d, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
    for (; i < n; ++i) d[i] = _cvtsh_ss(s[i]);
  }
  static void WidenBf16(const uint16_t* s, float* d, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
      _mm256_storeu_ps(d + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    }
    for (; i < n; ++i) d[i] = Bf16ToF32(s[i]);
  }
};

#ifdef __AVX512F__
struct F32x16 {
  using Vec = __m512;
  static constexpr int W = 16;
  static Vec Zero() { return _mm512_setzero_ps(); }
  static Vec Set1(float a) { return _mm512_set1_ps(a); }
  static Vec Load(const float* p) { return _mm512_loadu_ps(p); }
  static void Store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static __mmask16 Mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static Vec LoadPartial(const float* p, int n) { return _mm512_maskz_loadu_ps(Mask(n), p); }
  static void StorePartial(float* p, Vec v, int n) { _mm512_mask_storeu_ps(p, Mask(n), v); }
  static Vec Add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static Vec Mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
  static Vec Fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static Vec Fnma(Vec a, Vec b, Vec c) { return _mm512_fnmadd_ps(a, b, c); }
  static Vec Sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
  static Vec Div(Vec a, Vec b) { return _mm512_div_ps(a, b); }
  static Vec Min(Vec a, Vec b) { return _mm512_min_ps(a, b); }
  static Vec Max(Vec a, Vec b) { return _mm512_max_ps(a, b); }
  static Vec RoundEven(Vec v) {
    return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static Vec Pow2(Vec n) {
    return _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
  }
  static Vec ZeroWhereLess(Vec v, Vec a, Vec b) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a, b, _CMP_NLT_UQ), v);
  }
  // Lanes 0..7 of v are added to sums 0..7, then lanes 8..15 to the same sums.
  struct Doubles8 {
    __m512d v = _mm512_setzero_pd();
  };
  static void AddToDoubles(Doubles8& d, Vec v) {
    d.v = _mm512_add_pd(d.v, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    d.v =
        _mm512_add_pd(d.v, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
  }
  static void StoreDoubles(double* out, const Doubles8& d) { _mm512_storeu_pd(out, d.v); }
  static float ReduceMax(Vec v) { return _mm512_reduce_max_ps(v); }
  // Halves added pairwise: 512 -> 256 -> 128 -> 64 -> 32 bits.
  static float Reduce(Vec v) {
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                                   _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    return F32x8::Reduce(h);
  }
  static float Half(uint16_t h) { return _cvtsh_ss(h); }
  // The low W int8 lanes of v as f32 (exact).
  static Vec FromI8Lanes(__m128i v) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v)); }
  static void WidenF16(const uint16_t* s, float* d, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
      _mm512_storeu_ps(d + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i))));
    for (; i < n; ++i) d[i] = _cvtsh_ss(s[i]);
  }
  static void WidenBf16(const uint16_t* s, float* d, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i)));
      _mm512_storeu_ps(d + i, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
    }
    for (; i < n; ++i) d[i] = Bf16ToF32(s[i]);
  }
};
#endif

}  // namespace
}  // namespace moerun::internal
