// x86 body of kernels/attention_softmax.h, written once over a vector trait V (kernels/simd_f32_x86.h:
// F32x8, F32x16). Include only from attention_softmax_avx2.cc / _avx512.cc, built with
// -ffp-contract=off: each lane runs the portable path's operations (the exp of kernels/silu_x86.h),
// and the positions past the last whole vector run the portable tails themselves.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/attention_softmax.h"
#include "kernels/silu_x86.h"

namespace moerun::internal {
namespace {

template <typename V>
void AttentionSoftmaxRowImpl(float* s, int64_t n, float scale) {
  using Vec = typename V::Vec;
  const int64_t whole = n / V::W * V::W;  // a multiple of 8: the tails start on sum 0
  const Vec vscale = V::Set1(scale);
  Vec vmax = V::Set1(-INFINITY);
  for (int64_t j = 0; j < whole; j += V::W) {
    const Vec x = V::Mul(V::Load(s + j), vscale);
    V::Store(s + j, x);
    vmax = V::Max(x, vmax);
  }
  float m = whole > 0 ? V::ReduceMax(vmax) : -INFINITY;
  for (int64_t j = whole; j < n; ++j) m = std::max(m, s[j] *= scale);

  const Vec vm = V::Set1(m), floor = V::Set1(kSoftmaxMinExponent);
  typename V::Doubles8 acc;
  for (int64_t j = 0; j < whole; j += V::W) {
    const Vec d = V::Sub(V::Load(s + j), vm);
    const Vec e = V::ZeroWhereLess(ExpV<V>(d), d, floor);
    V::Store(s + j, e);
    V::AddToDoubles(acc, e);
  }
  double sums[8];
  V::StoreDoubles(sums, acc);
  SoftmaxExpTail(s, whole, n, m, sums);

  const float inv = static_cast<float>(1.0 / SoftmaxSum(sums));
  const Vec vinv = V::Set1(inv), min_normal = V::Set1(std::numeric_limits<float>::min());
  for (int64_t j = 0; j < whole; j += V::W) {
    const Vec p = V::Mul(V::Load(s + j), vinv);
    V::Store(s + j, V::ZeroWhereLess(p, p, min_normal));
  }
  SoftmaxNormaliseTail(s, whole, n, inv);
}

}  // namespace
}  // namespace moerun::internal
