#include "kernels/linear.h"

namespace moerun {

void LinearForward(const PackedWeight& w, const float* x, int64_t rows, float* y, const LinearContext& ctx,
                   bool swiglu, int64_t ldy) {
  const MatmulKernel& kernel = SelectKernel(w.format(), rows, *ctx.policy);
  const int64_t k = w.in_features();
  MatmulJob job{.rows = rows,
                .x = ctx.acts->Prepare(kernel.acts, x, rows, k, k, ctx.pool),
                .w = &w,
                .kernel = &kernel,
                .y = y,
                .ldy = ldy > 0 ? ldy : w.out_features(),
                .epilogue = swiglu ? Epilogue::kSwiGlu : Epilogue::kStore};
  RunMatmul(job, ctx.pool);
}

}  // namespace moerun
