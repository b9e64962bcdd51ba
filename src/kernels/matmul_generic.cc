// Portable matmul task: scalar loops over the packed layout, f32 accumulation in k order.
#include <algorithm>

#include "kernels/matmul_impl.h"

namespace moerun::internal {
namespace {

// acc[16] = sum_k x[k] * block[k][lane] for one 16-column block.
void DotBlock(const PackedWeight& w, int64_t block, const float* x, int64_t k_begin, int64_t k_len,
              float acc[16]) {
  std::fill(acc, acc + 16, 0.0f);
  if (w.dtype() == DType::kBF16) {
    const uint16_t* b = w.bf16_block(block);
    for (int64_t k = k_begin; k < k_len; ++k) {
      const uint16_t* lanes = b + (k / 2) * 32 + (k % 2);
      for (int l = 0; l < 16; ++l) acc[l] += x[k] * Bf16ToF32(lanes[2 * l]);
    }
  } else {
    const float* b = w.f32_block(block);
    for (int64_t k = k_begin; k < k_len; ++k) {
      for (int l = 0; l < 16; ++l) acc[l] += x[k] * b[k * 16 + l];
    }
  }
}

void Put(const MatmulJob& job, int64_t m, int64_t col, float v) {
  if (job.y_f32 != nullptr) {
    job.y_f32[m * job.ldy + col] = v;
  } else {
    job.y_bf16[m * job.ldy + col] = F32ToBf16(v);
  }
}

}  // namespace

void MatmulTaskGeneric(const MatmulJob& job, int64_t m0, int64_t m1, int64_t b0, int64_t b1) {
  const PackedWeight& w = *job.w;
  const int64_t n = w.out_features();
  float acc[16], up[16];
  for (int64_t m = m0; m < m1; ++m) {
    const float* x = job.x_f32 + m * job.ldx;
    if (job.epilogue == Epilogue::kStore) {
      for (int64_t b = b0; b < b1; ++b) {
        DotBlock(w, b, x, job.k_begin, job.KEnd(), acc);
        for (int l = 0; l < 16 && b * 16 + l < n; ++l) Put(job, m, b * 16 + l, acc[l]);
      }
    } else {
      for (int64_t b = b0; b < b1; b += 2) {
        DotBlock(w, b, x, job.k_begin, job.KEnd(), acc);
        DotBlock(w, b + 1, x, job.k_begin, job.KEnd(), up);
        const int64_t col0 = (b / 2) * 16;
        for (int l = 0; l < 16 && col0 + l < n; ++l) Put(job, m, col0 + l, Silu(acc[l]) * up[l]);
      }
    }
  }
}

}  // namespace moerun::internal
