// AVX2 + FMA bodies of kernels/vector_ops.h (compiled with -mavx2 -mfma; called only when
// cpu_features.h reports HasAvx2Kernels()).
#include <immintrin.h>

#include <algorithm>

#include "kernels/vector_ops.h"

namespace moerun::internal {

float VecDotAvx2(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  if (i < n) {  // zero-padded tail
    alignas(32) float ta[8] = {}, tb[8] = {};
    std::copy(a + i, a + n, ta);
    std::copy(b + i, b + n, tb);
    acc1 = _mm256_fmadd_ps(_mm256_load_ps(ta), _mm256_load_ps(tb), acc1);
  }
  const __m256 v = _mm256_add_ps(acc0, acc1);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

void VecAxpyAvx2(float alpha, const float* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  if (i < n) {
    alignas(32) float tx[8] = {}, ty[8] = {};
    std::copy(x + i, x + n, tx);
    std::copy(y + i, y + n, ty);
    _mm256_store_ps(ty, _mm256_fmadd_ps(va, _mm256_load_ps(tx), _mm256_load_ps(ty)));
    std::copy(ty, ty + (n - i), y + i);
  }
}

}  // namespace moerun::internal
