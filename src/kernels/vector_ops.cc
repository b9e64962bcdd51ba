#include "kernels/vector_ops.h"

#include "core/cpu_features.h"

namespace moerun {
namespace {

bool UseAvx512() {
  static const bool use = GetCpuFeatures().HasAvx512Bf16Kernels();
  return use;
}

bool UseAvx2() {
  static const bool use = GetCpuFeatures().HasAvx2Kernels();
  return use;
}

}  // namespace

float VecDot(const float* a, const float* b, int64_t n) {
  if (UseAvx512()) return internal::VecDotAvx512(a, b, n);
  if (UseAvx2()) return internal::VecDotAvx2(a, b, n);
  float acc = 0.0f;
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

void VecAxpy(float alpha, const float* x, float* y, int64_t n) {
  if (UseAvx512()) {
    internal::VecAxpyAvx512(alpha, x, y, n);
    return;
  }
  if (UseAvx2()) {
    internal::VecAxpyAvx2(alpha, x, y, n);
    return;
  }
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

}  // namespace moerun
