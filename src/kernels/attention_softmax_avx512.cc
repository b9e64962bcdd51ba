// AVX-512F body of kernels/attention_softmax.h (built with -mavx512f -mfma -mf16c -ffp-contract=off;
// called only when supported). GCC 12's own intrinsics headers trip -Wmaybe-uninitialized
// (_mm512_undefined_ps) when inlined.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "kernels/attention_softmax_x86_impl.h"

namespace moerun::internal {

void AttentionSoftmaxRowAvx512(float* s, int64_t n, float scale) {
  AttentionSoftmaxRowImpl<F32x16>(s, n, scale);
}

}  // namespace moerun::internal
