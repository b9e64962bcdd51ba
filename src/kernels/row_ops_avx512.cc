// AVX-512 bodies of kernels/row_ops.h (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq
// -mfma -mf16c -ffp-contract=off; called only when cpu_features.h reports those features).
// GCC 12's own intrinsics headers trip -W(maybe-)uninitialized (_mm512_undefined_*) when inlined.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "kernels/row_ops_x86_impl.h"

namespace moerun::internal {
namespace {

struct Avx512 {
  using Vec = __m512;
  static constexpr int W = 16;
  static Vec Zero() { return _mm512_setzero_ps(); }
  static Vec Set1(float a) { return _mm512_set1_ps(a); }
  static Vec Load(const float* p) { return _mm512_loadu_ps(p); }
  static void Store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static Vec Add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static Vec Fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  // Halves added pairwise: 512 -> 256 -> 128 -> 64 -> 32 bits.
  static float Reduce(Vec v) {
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                                   _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float Half(uint16_t h) { return _cvtsh_ss(h); }
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

}  // namespace

void RowsAxpyAvx512(const StoredRowsView& w, const float* x, float* y, RowBatch batch) {
  row_ops::RowsAxpyT<Avx512>(w, x, y, batch);
}
void RowsDotAvx512(const StoredRowsView& w, const float* x, float* y, RowBatch batch) {
  row_ops::RowsDotT<Avx512>(w, x, y, batch);
}

}  // namespace moerun::internal
