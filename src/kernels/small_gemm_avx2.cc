// AVX2 + FMA bodies of kernels/small_gemm.h (compiled with -mavx2 -mfma; called only when supported).
#include <immintrin.h>

#include "kernels/small_gemm.h"
#include "kernels/small_gemm_x86_impl.h"

namespace moerun::internal {
namespace {

struct Avx2Vec {
  using T = __m256;
  static constexpr int kLanes = 8;
  static constexpr int kTileNT = 3;  // 3 x 3 accumulators + 3 + 1 loads fit the 16 ymm registers
  static T Zero() { return _mm256_setzero_ps(); }
  static T Load(const float* p) { return _mm256_loadu_ps(p); }
  static __m256i Mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static T LoadPartial(const float* p, int n) { return _mm256_maskload_ps(p, Mask(n)); }
  static void StorePartial(float* p, T v, int n) { _mm256_maskstore_ps(p, Mask(n), v); }
  static T Broadcast(float x) { return _mm256_set1_ps(x); }
  static T Fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static float Sum(T v) {  // fixed tree: 8 -> 4 -> 2 -> 1
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

}  // namespace

void GemmNTAvx2(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                float* c, int64_t ldc) {
  GemmNTImpl<Avx2Vec>(m, n, k, a, lda, b, ldb, c, ldc);
}

void GemmNNAvx2(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                float* c, int64_t ldc) {
  GemmNNImpl<Avx2Vec>(m, n, k, a, lda, b, ldb, c, ldc);
}

}  // namespace moerun::internal
