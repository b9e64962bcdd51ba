// AVX2 + FMA body of kernels/attention_softmax.h (built with -mavx2 -mfma -mf16c -ffp-contract=off;
// called only when supported).
#include <immintrin.h>

#include "kernels/attention_softmax_x86_impl.h"

namespace moerun::internal {

void AttentionSoftmaxRowAvx2(float* s, int64_t n, float scale) {
  AttentionSoftmaxRowImpl<F32x8>(s, n, scale);
}

}  // namespace moerun::internal
