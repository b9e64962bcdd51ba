// Internal: the per-path task bodies behind kernels/matmul.h. Each computes rows [m0, m1) and
// 16-column blocks [b0, b1) of `job` (b0, b1 in stored-block units; even for gate/up weights).
#pragma once

#include "kernels/matmul.h"

namespace moerun::internal {

void MatmulTaskGeneric(const MatmulJob& job, int64_t m0, int64_t m1, int64_t b0, int64_t b1);
void MatmulTaskAvx512F32(const MatmulJob& job, int64_t m0, int64_t m1, int64_t b0, int64_t b1);
void MatmulTaskAvx512Bf16Dot(const MatmulJob& job, int64_t m0, int64_t m1, int64_t b0, int64_t b1);

inline float Silu(float g) { return g / (1.0f + __builtin_expf(-g)); }

}  // namespace moerun::internal
