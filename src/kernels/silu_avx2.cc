// AVX2 + FMA SwiGLU rows (kernels/silu.h), built with -mavx2 -mfma -mf16c -ffp-contract=off.
#include <immintrin.h>

#include "kernels/silu.h"
#include "kernels/silu_x86.h"

namespace moerun::internal {

void SwiGluRowAvx2(const float* g, const float* u, float* y, int64_t n) {
  int64_t l = 0;
  for (; l + 8 <= n; l += 8) {
    _mm256_storeu_ps(y + l, _mm256_mul_ps(SiluV<F32x8>(_mm256_loadu_ps(g + l)), _mm256_loadu_ps(u + l)));
  }
  for (; l < n; ++l) y[l] = SiluRef(g[l]) * u[l];
}

}  // namespace moerun::internal
