#include "moe/expert_compute.h"

#include <algorithm>
#include <cassert>
#include <vector>

namespace moerun {
namespace {

// Runs every task of every job in one parallel loop.
void RunJobs(const std::vector<MatmulJob>& jobs, ThreadPool* pool) {
  std::vector<int64_t> first_task(jobs.size() + 1, 0);
  for (size_t j = 0; j < jobs.size(); ++j) first_task[j + 1] = first_task[j] + MatmulTaskCount(jobs[j]);
  auto run = [&](int64_t task, int) {
    const size_t j = static_cast<size_t>(std::upper_bound(first_task.begin(), first_task.end(), task) -
                                         first_task.begin() - 1);
    RunMatmulTask(jobs[j], task - first_task[j]);
  };
  if (pool == nullptr) {
    for (int64_t t = 0; t < first_task.back(); ++t) run(t, 0);
  } else {
    pool->ParallelFor(first_task.back(), run);
  }
}

}  // namespace

void ParallelForRows(ThreadPool* pool, int64_t n, const std::function<void(int64_t)>& fn,
                     int64_t rows_per_task) {
  const int64_t blocks = (n + rows_per_task - 1) / rows_per_task;
  auto run = [&](int64_t b, int) {
    for (int64_t r = b * rows_per_task; r < std::min(n, (b + 1) * rows_per_task); ++r) fn(r);
  };
  if (pool == nullptr) {
    for (int64_t b = 0; b < blocks; ++b) run(b, 0);
  } else {
    pool->ParallelFor(blocks, run);
  }
}

MatmulPath ExpertCompute::PathFor(DType wdtype, int64_t rows) const {
  if (force_generic_) return MatmulPath::kGeneric;
  return ChooseMatmulPath(wdtype, rows, precision_);
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

  // Per expert: its path and activation width; buffers sized for the widest expert.
  std::vector<MatmulPath> path(static_cast<size_t>(n_experts));
  int64_t i_max = 0;
  bool any_dot = false;
  for (int64_t e = 0; e < n_experts; ++e) {
    const int64_t rows = offset[e + 1] - offset[e];
    if (rows == 0) continue;
    path[e] = PathFor(experts[e].down->dtype(), rows);
    any_dot |= path[e] == MatmulPath::kAvx512Bf16Dot;
    i_max = std::max(i_max, experts[e].down->in_features());
    assert(nb == 1 || experts[e].down->in_features() % (2 * nb) == 0);
  }
  const int64_t h_pad = h + (h % 2), i_pad = i_max + (i_max % 2);
  float* x_perm = x_perm_.Get(static_cast<size_t>(m * h));
  uint16_t* x_bf16 = any_dot ? x_bf16_.Get(static_cast<size_t>(m * h_pad)) : nullptr;
  float* act = act_.Get(static_cast<size_t>(m * i_max));
  uint16_t* act_bf16 = any_dot ? act_bf16_.Get(static_cast<size_t>(m * i_pad)) : nullptr;
  float* y_perm = spec.expert_order ? y : y_perm_.Get(static_cast<size_t>(m * nb * h));
  // The pad column of an odd width must read as zero in the bf16-dot down projection.
  if (any_dot && i_pad != i_max) std::fill(act_bf16, act_bf16 + m * i_pad, uint16_t{0});

  std::vector<char> dot_row(static_cast<size_t>(m), 0);
  for (int64_t e = 0; e < n_experts; ++e) {
    if (path[e] == MatmulPath::kAvx512Bf16Dot)
      std::fill(dot_row.begin() + offset[e], dot_row.begin() + offset[e + 1], 1);
  }
  ParallelForRows(pool, m, [&](int64_t p) {
    const float* src = spec.x + spec.token[perm_row[p]] * h;
    std::copy(src, src + h, x_perm + p * h);
    if (dot_row[p]) ConvertRowToBf16(src, h, x_bf16 + p * h_pad, h_pad);
  });

  // Phase 1: gate/up + SwiGLU. Phase 2: down, per K-block.
  std::vector<MatmulJob> phase1, phase2;
  for (int64_t e = 0; e < n_experts; ++e) {
    const int64_t r0 = offset[e], rows = offset[e + 1] - r0;
    if (rows == 0) continue;
    const bool dot = path[e] == MatmulPath::kAvx512Bf16Dot;
    const int64_t i_size = experts[e].down->in_features();
    MatmulJob up{.rows = rows, .w = experts[e].gate_up, .epilogue = Epilogue::kSwiGlu, .path = path[e]};
    if (dot) {
      up.x_bf16 = x_bf16 + r0 * h_pad;
      up.ldx = h_pad;
      up.y_bf16 = act_bf16 + r0 * i_pad;
      up.ldy = i_pad;
    } else {
      up.x_f32 = x_perm + r0 * h;
      up.ldx = h;
      up.y_f32 = act + r0 * i_max;
      up.ldy = i_max;
    }
    phase1.push_back(up);
    for (int64_t b = 0; b < nb; ++b) {
      MatmulJob down{.rows = rows,
                     .x_f32 = up.y_f32,
                     .x_bf16 = up.y_bf16,
                     .ldx = up.ldy,
                     .w = experts[e].down,
                     .y_f32 = y_perm + r0 * nb * h + b * h,
                     .ldy = nb * h,
                     .path = path[e]};
      down.k_begin = b * (i_size / nb);
      down.k_end = nb == 1 ? -1 : (b + 1) * (i_size / nb);
      phase2.push_back(down);
    }
  }
  RunJobs(phase1, pool);
  RunJobs(phase2, pool);

  // Scatter back to row order.
  if (spec.expert_order) return;
  ParallelForRows(pool, m, [&](int64_t p) {
    const float* src = y_perm + p * nb * h;
    std::copy(src, src + nb * h, y + perm_row[p] * nb * h);
  });
}

}  // namespace moerun
