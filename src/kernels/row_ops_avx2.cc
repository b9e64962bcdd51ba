// AVX2 + FMA + F16C bodies of kernels/row_ops.h (compiled with -mavx2 -mfma -mf16c
// -ffp-contract=off; called only when cpu_features.h reports HasAvx2Kernels()).
#include <immintrin.h>

#include "kernels/row_ops_x86_impl.h"

namespace moerun::internal {
namespace {

struct Avx2 {
  using Vec = __m256;
  static constexpr int W = 8;
  static Vec Zero() { return _mm256_setzero_ps(); }
  static Vec Set1(float a) { return _mm256_set1_ps(a); }
  static Vec Load(const float* p) { return _mm256_loadu_ps(p); }
  static void Store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  static Vec Add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static Vec Fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  // ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)).
  static float Reduce(Vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float Half(uint16_t h) { return _cvtsh_ss(h); }
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

}  // namespace

void RowsAxpyAvx2(const StoredRowsView& w, const float* x, float* y, RowBatch batch) {
  row_ops::RowsAxpyT<Avx2>(w, x, y, batch);
}
void RowsDotAvx2(const StoredRowsView& w, const float* x, float* y, RowBatch batch) {
  row_ops::RowsDotT<Avx2>(w, x, y, batch);
}

}  // namespace moerun::internal
