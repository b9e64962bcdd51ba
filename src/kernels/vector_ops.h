// Small vector kernels (dot product, axpy) with run-time AVX-512 and AVX2 + FMA paths, for
// attention. Each uses one fixed accumulation order per machine (the best path the CPU supports:
// AVX-512 16 lanes, else AVX2 8 lanes, else scalar in order), so results do not depend on batch
// size, thread count or layout. Thread safety: pure functions.
#pragma once

#include <cstdint>

namespace moerun {

// sum_i a[i] * b[i]
float VecDot(const float* a, const float* b, int64_t n);
// y[i] += alpha * x[i]
void VecAxpy(float alpha, const float* x, float* y, int64_t n);

namespace internal {
float VecDotAvx512(const float* a, const float* b, int64_t n);
void VecAxpyAvx512(float alpha, const float* x, float* y, int64_t n);
float VecDotAvx2(const float* a, const float* b, int64_t n);
void VecAxpyAvx2(float alpha, const float* x, float* y, int64_t n);
}  // namespace internal

}  // namespace moerun
