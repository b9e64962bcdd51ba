#include "moe/expert_compute.h"

#include <algorithm>
#include <cassert>
#include <vector>

namespace moerun {
void ParallelForRows(ThreadPool* pool, int64_t n, const std::function<void(int64_t)>& fn,
                     int64_t rows_per_task) {
  const int64_t blocks = (n + rows_per_task - 1) / rows_per_task;
  auto run = [&](int64_t b, int) {
    for (int64_t r = b * rows_per_task; r < std::min(n, (b + 1) * rows_per_task); ++r) fn(r);
  };
  ParallelForOn(pool, blocks, run);
}

void ExpertCompute::Run(const ExpertRowsSpec& spec, std::span<const ExpertWeightsRef> experts,
                        ThreadPool* pool, float* y) {
  const int64_t n = spec.n_rows, h = spec.hidden, nb = spec.k_blocks;
  const int64_t n_experts = static_cast<int64_t>(experts.size());
  if (!spec.expert_order) std::fill(y, y + n * nb * h, 0.0f);
  perm_row_.clear();
  if (n == 0) return;

  // Stable counting sort of the rows by expert; skipped rows (-1) are left out.
  std::vector<int64_t> offset(static_cast<size_t>(n_experts + 1), 0);
  for (int64_t r = 0; r < n; ++r) {
    if (spec.expert[r] >= 0) ++offset[static_cast<size_t>(spec.expert[r]) + 1];
  }
  for (int64_t e = 0; e < n_experts; ++e) offset[e + 1] += offset[e];
  const int64_t m = offset.back();
  std::vector<int64_t>& perm_row = perm_row_;  // permuted position -> row
  perm_row.resize(static_cast<size_t>(m));
  {
    std::vector<int64_t> fill(offset.begin(), offset.end() - 1);
    for (int64_t r = 0; r < n; ++r) {
      if (spec.expert[r] >= 0) perm_row[fill[static_cast<size_t>(spec.expert[r])]++] = r;
    }
  }

  // Per expert: the kernel rows for its batch size; buffers sized for the widest expert.
  std::vector<const MatmulKernel*> up_kernel(static_cast<size_t>(n_experts), nullptr);
  std::vector<const MatmulKernel*> down_kernel(static_cast<size_t>(n_experts), nullptr);
  bool up_needs[3] = {}, down_needs[3] = {};
  int64_t i_max = 0;
  for (int64_t e = 0; e < n_experts; ++e) {
    const int64_t rows = offset[e + 1] - offset[e];
    if (rows == 0) continue;
    up_kernel[e] = &SelectKernel(experts[e].gate_up->format(), rows, policy_);
    down_kernel[e] = &SelectKernel(experts[e].down->format(), rows, policy_);
    up_needs[static_cast<int>(up_kernel[e]->acts)] = true;
    down_needs[static_cast<int>(down_kernel[e]->acts)] = true;
    i_max = std::max(i_max, experts[e].down->in_features());
    assert(experts[e].down->in_features() % (nb * Traits(experts[e].down->format()).k_alignment) == 0 ||
           nb == 1);
  }
  float* act = act_.Get(static_cast<size_t>(m * i_max));
  float* y_perm = spec.expert_order ? y : y_perm_.Get(static_cast<size_t>(m * nb * h));
  // The gate/up inputs in expert order, each token's row converted once however many experts it
  // goes to (a decoded token: once, not once per expert).
  std::vector<int64_t>& perm_token = perm_token_;
  perm_token.resize(static_cast<size_t>(m));
  for (int64_t p = 0; p < m; ++p) perm_token[p] = spec.token[perm_row[p]];
  // Each row's down input width (routed experts narrower than a shared expert beside them): the
  // down activations are prepared for all rows at once, each over its own width only.
  std::vector<int64_t>& row_width = row_width_;
  row_width.resize(static_cast<size_t>(m));
  for (int64_t e = 0; e < n_experts; ++e) {
    for (int64_t p = offset[e]; p < offset[e + 1]; ++p) row_width[p] = experts[e].down->in_features();
  }
  ActView x_view[3], act_view[3];
  for (int f = 0; f < 3; ++f) {
    if (up_needs[f])
      x_view[f] = x_acts_.PrepareGathered(static_cast<ActFormat>(f), spec.x, perm_token, h, h, pool);
  }

  // Phase 1: gate/up + SwiGLU.
  std::vector<MatmulJob> phase1, phase2;
  for (int64_t e = 0; e < n_experts; ++e) {
    const int64_t r0 = offset[e], rows = offset[e + 1] - r0;
    if (rows == 0) continue;
    phase1.push_back(MatmulJob{.rows = rows,
                               .x = OffsetRows(x_view[static_cast<int>(up_kernel[e]->acts)], r0),
                               .w = experts[e].gate_up,
                               .kernel = up_kernel[e],
                               .y = act + r0 * i_max,
                               .ldy = i_max,
                               .epilogue = Epilogue::kSwiGlu});
  }
  RunMatmuls(phase1, pool);

  // Phase 2: down, per K-block.
  for (int f = 0; f < 3; ++f) {
    if (down_needs[f])
      act_view[f] = act_acts_.PrepareRowWidths(static_cast<ActFormat>(f), act, row_width, i_max, pool);
  }
  for (int64_t e = 0; e < n_experts; ++e) {
    const int64_t r0 = offset[e], rows = offset[e + 1] - r0;
    if (rows == 0) continue;
    MatmulJob down{.rows = rows,
                   .x = OffsetRows(act_view[static_cast<int>(down_kernel[e]->acts)], r0),
                   .w = experts[e].down,
                   .kernel = down_kernel[e],
                   .y = y_perm + r0 * nb * h,
                   .ldy = nb * h};
    down.k_blocks = nb;  // K-block b -> y_perm[row, b, :]
    down.block_stride = h;
    phase2.push_back(down);
  }
  RunMatmuls(phase2, pool);

  // Scatter back to row order.
  if (spec.expert_order) return;
  ParallelForRows(pool, m, [&](int64_t p) {
    const float* src = y_perm + p * nb * h;
    std::copy(src, src + nb * h, y + perm_row[p] * nb * h);
  });
}

}  // namespace moerun
