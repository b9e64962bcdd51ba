// AVX-512F SwiGLU rows (kernels/silu.h), built with -mavx512f -mfma -mf16c -ffp-contract=off.
// GCC 12's own intrinsics headers trip -Wmaybe-uninitialized (_mm512_undefined_ps) when inlined.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "kernels/silu.h"
#include "kernels/silu_x86.h"

namespace moerun::internal {

void SwiGluRowAvx512(const float* g, const float* u, float* y, int64_t n) {
  int64_t l = 0;
  for (; l + 16 <= n; l += 16) {
    _mm512_storeu_ps(y + l, _mm512_mul_ps(SiluV<F32x16>(_mm512_loadu_ps(g + l)), _mm512_loadu_ps(u + l)));
  }
  if (l < n) {
    const auto mask = static_cast<__mmask16>((1u << (n - l)) - 1u);
    const __m512 v =
        _mm512_mul_ps(SiluV<F32x16>(_mm512_maskz_loadu_ps(mask, g + l)), _mm512_maskz_loadu_ps(mask, u + l));
    _mm512_mask_storeu_ps(y + l, mask, v);
  }
}

}  // namespace moerun::internal
