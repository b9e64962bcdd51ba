// AVX2 + FMA bodies of kernels/small_gemm.h (compiled with -mavx2 -mfma; called only when supported).
#include <immintrin.h>

#include "kernels/simd_f32_x86.h"
#include "kernels/small_gemm.h"
#include "kernels/small_gemm_x86_impl.h"

namespace moerun::internal {

void GemmNTAvx2(int64_t m, int64_t j0, int64_t j1, int64_t k, const float* a, int64_t lda, const PagedRows& b,
                float* c, int64_t ldc) {
  GemmNTImpl<F32x8, 3>(m, j0, j1, k, a, lda, b, c, ldc);
}

void GemmNNAvx2(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const PagedRows& b, float* c,
                int64_t ldc, bool accumulate) {
  GemmNNImpl<F32x8, 6>(m, n, k, a, lda, b, c, ldc, accumulate);
}

}  // namespace moerun::internal
