// AVX-512F bodies of kernels/small_gemm.h (compiled with -mavx512f; called only when supported).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "kernels/small_gemm.h"
#include "kernels/small_gemm_x86_impl.h"

namespace moerun::internal {
namespace {

struct Avx512Vec {
  using T = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kTileNT = 4;  // 4 x 4 accumulators
  static T Zero() { return _mm512_setzero_ps(); }
  static T Load(const float* p) { return _mm512_loadu_ps(p); }
  static __mmask16 Mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static T LoadPartial(const float* p, int n) { return _mm512_maskz_loadu_ps(Mask(n), p); }
  static void StorePartial(float* p, T v, int n) { _mm512_mask_storeu_ps(p, Mask(n), v); }
  static T Broadcast(float x) { return _mm512_set1_ps(x); }
  static T Fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static float Sum(T v) {  // fixed tree: 16 -> 8 -> 4 -> 2 -> 1
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

}  // namespace

void GemmNTAvx512(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                  float* c, int64_t ldc) {
  GemmNTImpl<Avx512Vec>(m, n, k, a, lda, b, ldb, c, ldc);
}

void GemmNNAvx512(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                  float* c, int64_t ldc) {
  GemmNNImpl<Avx512Vec>(m, n, k, a, lda, b, ldb, c, ldc);
}

}  // namespace moerun::internal
