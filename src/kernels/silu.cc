// Portable SiLU / SwiGLU (kernels/silu.h): the reference sequence of operations, built with
// -ffp-contract=off.
#include "kernels/silu.h"

#include <bit>
#include <cmath>

namespace moerun {
namespace {

// The vector max / min semantics (the second operand when either is NaN), so a NaN clamps as on
// the SIMD paths.
float MaxPs(float a, float b) { return a > b ? a : b; }
float MinPs(float a, float b) { return a < b ? a : b; }

}  // namespace

float ExpRef(float x) {
  x = MinPs(MaxPs(x, -87.0f), 88.0f);
  const float n = std::nearbyint(x * 1.44269504088896341f);
  float r = std::fma(-n, 0.693359375f, x);
  r = std::fma(-n, -2.12194440e-4f, r);
  float p = 1.0f / 720.0f;
  p = std::fma(p, r, 1.0f / 120.0f);
  p = std::fma(p, r, 1.0f / 24.0f);
  p = std::fma(p, r, 1.0f / 6.0f);
  p = std::fma(p, r, 0.5f);
  p = std::fma(p, r, 1.0f);
  p = std::fma(p, r, 1.0f);
  const auto e = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 127]
  return p * std::bit_cast<float>(e);
}

float SiluRef(float g) { return g / (1.0f + ExpRef(0.0f - g)); }

void SwiGluRowRef(const float* g, const float* u, float* y, int64_t n) {
  for (int64_t l = 0; l < n; ++l) y[l] = SiluRef(g[l]) * u[l];
}

}  // namespace moerun
