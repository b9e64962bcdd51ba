// Portable reference and run-time dispatch of kernels/attention_softmax.h (built with
// -ffp-contract=off: each operation rounds once, as on the vector paths).
#include "kernels/attention_softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/silu.h"

namespace moerun {
namespace internal {

void SoftmaxExpTail(float* s, int64_t j0, int64_t n, float m, double* sums) {
  for (int64_t j = j0; j < n; ++j) {
    const float d = s[j] - m;
    s[j] = d < kSoftmaxMinExponent ? 0.0f : ExpRef(d);
    sums[j % 8] += s[j];
  }
}

void SoftmaxNormaliseTail(float* s, int64_t j0, int64_t n, float inv) {
  for (int64_t j = j0; j < n; ++j) {
    const float p = s[j] * inv;
    s[j] = p < std::numeric_limits<float>::min() ? 0.0f : p;
  }
}

double SoftmaxSum(const double* sums) {
  return ((sums[0] + sums[4]) + (sums[2] + sums[6])) + ((sums[1] + sums[5]) + (sums[3] + sums[7]));
}

}  // namespace internal

namespace {

void AttentionSoftmaxRowRef(float* s, int64_t n, float scale) {
  float m = -INFINITY;
  for (int64_t j = 0; j < n; ++j) m = std::max(m, s[j] *= scale);
  double sums[8] = {};
  internal::SoftmaxExpTail(s, 0, n, m, sums);
  internal::SoftmaxNormaliseTail(s, 0, n, static_cast<float>(1.0 / internal::SoftmaxSum(sums)));
}

}  // namespace

void AttentionSoftmaxRow(float* s, int64_t n, float scale, SmallGemmIsa isa) {
  switch (ResolveSmallGemmIsa(isa)) {
    case SmallGemmIsa::kAvx512:
      return internal::AttentionSoftmaxRowAvx512(s, n, scale);
    case SmallGemmIsa::kAvx2:
      return internal::AttentionSoftmaxRowAvx2(s, n, scale);
    default:
      return AttentionSoftmaxRowRef(s, n, scale);
  }
}

}  // namespace moerun
