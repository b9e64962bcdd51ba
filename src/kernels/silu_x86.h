// The SIMD bodies of kernels/silu.h's exp and silu, written once over a vector trait
// (kernels/simd_f32_x86.h: F32x8, F32x16), for translation units built for the ISA. Built with
// -ffp-contract=off (silu_avx2.cc, silu_avx512.cc) they give silu.h's reference bits lane by lane;
// the float matmul rows (matmul_avx2.cc, matmul_avx512.cc) use them where the compiler may fuse a
// multiply and an add, so their last bit may differ (float rows are checked against the oracle).
#pragma once

#include <immintrin.h>

#include "kernels/simd_f32_x86.h"

namespace moerun::internal {
namespace {

template <class V>
typename V::Vec ExpV(typename V::Vec x) {
  using Vec = typename V::Vec;
  x = V::Min(V::Max(x, V::Set1(-87.0f)), V::Set1(88.0f));
  const Vec n = V::RoundEven(V::Mul(x, V::Set1(1.44269504088896341f)));
  Vec r = V::Fnma(n, V::Set1(0.693359375f), x);
  r = V::Fnma(n, V::Set1(-2.12194440e-4f), r);
  Vec p = V::Set1(1.0f / 720.0f);
  for (const float c : {1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f})
    p = V::Fma(p, r, V::Set1(c));
  return V::Mul(p, V::Pow2(n));
}

template <class V>
typename V::Vec SiluV(typename V::Vec g) {
  return V::Div(g, V::Add(V::Set1(1.0f), ExpV<V>(V::Sub(V::Zero(), g))));
}

}  // namespace
}  // namespace moerun::internal
