#include "kernels/linear.h"

namespace moerun {

void LinearForward(const PackedWeight& w, const float* x, int64_t rows, float* y, ThreadPool* pool,
                   ActivationPrecision precision, ScratchBuffer<uint16_t>* scratch, bool swiglu) {
  const int64_t k = w.in_features(), k_pad = k + (k % 2);
  MatmulJob job{.rows = rows,
                .x_f32 = x,
                .ldx = k,
                .w = &w,
                .y_f32 = y,
                .ldy = w.out_features(),
                .epilogue = swiglu ? Epilogue::kSwiGlu : Epilogue::kStore,
                .path = ChooseMatmulPath(w.dtype(), rows, precision)};
  if (job.path == MatmulPath::kAvx512Bf16Dot) {
    uint16_t* xb = scratch->Get(static_cast<size_t>(rows * k_pad));
    for (int64_t r = 0; r < rows; ++r) ConvertRowToBf16(x + r * k, k, xb + r * k_pad, k_pad);
    job.x_bf16 = xb;
    job.ldx = k_pad;
  }
  RunMatmul(job, pool);
}

}  // namespace moerun
