#include "kernels/linear.h"

#include <cassert>
#include <optional>
#include <vector>

namespace moerun {

void LinearForward(const PackedWeight& w, const float* x, int64_t rows, float* y, const LinearContext& ctx,
                   bool swiglu, int64_t ldy, int64_t ldx) {
  const MatmulKernel& kernel = SelectKernel(w.format(), rows, *ctx.policy);
  const int64_t k = w.in_features();
  MatmulJob job{.rows = rows,
                .x = ctx.acts->Prepare(kernel.acts, x, rows, k, ldx > 0 ? ldx : k, ctx.pool),
                .w = &w,
                .kernel = &kernel,
                .y = y,
                .ldy = ldy > 0 ? ldy : w.out_features(),
                .epilogue = swiglu ? Epilogue::kSwiGlu : Epilogue::kStore};
  RunMatmul(job, ctx.pool);
}

void LinearForwardSameInput(std::span<const LinearOutput> outs, const float* x, int64_t rows,
                            const LinearContext& ctx) {
  if (outs.empty()) return;
  const int64_t k = outs[0].w->in_features();
  std::optional<ActView> view[3];  // by ActFormat, prepared on first use
  std::vector<MatmulJob> jobs;
  for (const LinearOutput& o : outs) {
    assert(o.w->in_features() == k);
    const MatmulKernel& kernel = SelectKernel(o.w->format(), rows, *ctx.policy);
    std::optional<ActView>& v = view[static_cast<int>(kernel.acts)];
    if (!v) v = ctx.acts->Prepare(kernel.acts, x, rows, k, k, ctx.pool);
    jobs.push_back(
        MatmulJob{.rows = rows, .x = *v, .w = o.w, .kernel = &kernel, .y = o.y, .ldy = o.w->out_features()});
  }
  RunMatmuls(jobs, ctx.pool);
}

void LinearForwardRowPerWeight(std::span<const PackedWeight> weights, const float* x, int64_t ldx, float* y,
                               int64_t ldy, const LinearContext& ctx) {
  if (weights.empty()) return;
  const PackedWeight& w0 = weights[0];
  const MatmulKernel& kernel = SelectKernel(w0.format(), 1, *ctx.policy);
  const auto n = static_cast<int64_t>(weights.size());
  const ActView rows = ctx.acts->Prepare(kernel.acts, x, n, w0.in_features(), ldx, nullptr);
  std::vector<MatmulJob> jobs;
  jobs.reserve(weights.size());
  for (int64_t i = 0; i < n; ++i) {
    const PackedWeight& w = weights[static_cast<size_t>(i)];
    assert(w.format() == w0.format() && w.in_features() == w0.in_features());
    jobs.push_back(MatmulJob{.rows = 1,
                             .x = OffsetRows(rows, i),
                             .w = &w,
                             .kernel = &kernel,
                             .y = y + i * ldy,
                             .ldy = w.out_features()});
  }
  RunMatmulsOnThisThread(jobs);
}

}  // namespace moerun
