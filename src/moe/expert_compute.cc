#include "moe/expert_compute.h"

#include <algorithm>
#include <cassert>
#include <vector>

namespace moerun {
namespace {

// How many of `rows` (indices into token) each token has: [the largest token + 1].
std::vector<int64_t> RowsPerToken(std::span<const int64_t> rows, const int64_t* token) {
  std::vector<int64_t> count;
  for (int64_t r : rows) {
    const auto t = static_cast<size_t>(token[r]);
    if (t >= count.size()) count.resize(t + 1, 0);
    ++count[t];
  }
  return count;
}

}  // namespace

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
  const bool sums = spec.token_sums != nullptr;
  if (!spec.expert_order && !sums) std::fill(y, y + n * nb * h, 0.0f);
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
  float* y_perm = spec.expert_order || sums ? y : y_perm_.Get(static_cast<size_t>(m * nb * h));
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

  // Phase 1: gate/up + SwiGLU. When every down kernel takes 8-bit rows, each gate/up task also
  // quantises the SwiGLU columns it wrote (MatmulJob::quantize_into): the same rows
  // PrepareRowWidths would make after the loop, made on the core that holds the floats. In decode
  // that serial step took a median 4.6 us per layer (V2-Lite Q4_K, AMD Zen 5, 2 threads).
  const bool down_q8_only = down_needs[static_cast<int>(ActFormat::kQ8Block32)] &&
                            !down_needs[static_cast<int>(ActFormat::kF32)] &&
                            !down_needs[static_cast<int>(ActFormat::kBf16Pairs)];
  const Q8Rows down_q8 = down_q8_only ? act_acts_.ReserveQ8(m, i_max) : Q8Rows{};
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
                               .epilogue = Epilogue::kSwiGlu,
                               .quantize_into = down_q8_only ? down_q8.From(r0) : Q8Rows{}});
  }
  RunMatmuls(phase1, pool);
  if (down_q8_only) act_view[static_cast<int>(ActFormat::kQ8Block32)] = ActivationBuffer::ViewOf(down_q8);

  // Phase 2: down, per K-block.
  for (int f = 0; f < 3; ++f) {
    if (down_needs[f] && !down_q8_only)
      act_view[f] = act_acts_.PrepareRowWidths(static_cast<ActFormat>(f), act, row_width, i_max, pool);
  }
  std::vector<int64_t> first_pos;  // the expert-order position of each down job's first row
  for (int64_t e = 0; e < n_experts; ++e) {
    const int64_t r0 = offset[e], rows = offset[e + 1] - r0;
    if (rows == 0) continue;
    first_pos.push_back(r0);
    MatmulJob down{.rows = rows,
                   .x = OffsetRows(act_view[static_cast<int>(down_kernel[e]->acts)], r0),
                   .w = experts[e].down,
                   .kernel = down_kernel[e],
                   .y = sums ? nullptr : y_perm + r0 * nb * h,
                   .ldy = nb * h};
    down.k_blocks = nb;  // K-block b -> y_perm[row, b, :]
    down.block_stride = h;
    phase2.push_back(down);
  }
  if (sums) {
    RunDownIntoSums(spec, phase2, first_pos, pool);
    return;
  }
  RunMatmuls(phase2, pool);

  // Scatter back to row order.
  if (spec.expert_order) return;
  ParallelForRows(pool, m, [&](int64_t p) {
    const float* src = y_perm + p * nb * h;
    std::copy(src, src + nb * h, y + perm_row[p] * nb * h);
  });
}

void ExpertCompute::RunDownIntoSums(const ExpertRowsSpec& spec, std::span<const MatmulJob> down,
                                    std::span<const int64_t> first_pos, ThreadPool* pool) {
  constexpr int64_t kSliceCols = kMatmulGroupBlocks * 16;  // one kernel call's columns
  constexpr int64_t kChunkRows = 32;                       // rows per kernel call: partials stay in L1/L2
  constexpr int64_t kMaxLimbTerms = int64_t{1} << 14;      // FixedLimbs' bound between flushes
  const int64_t h = spec.hidden, nb = spec.k_blocks;
  const int64_t slices = (h + kSliceCols - 1) / kSliceCols;
  // Each token's terms per slice go into int64 limbs, normalised into its 128-bit row once per
  // slice (not once per row of an expert), while they stay within the limbs' bound.
  const std::vector<int64_t> rows_of_token = RowsPerToken(perm_row_, spec.token);
  const auto tokens = static_cast<int64_t>(rows_of_token.size());
  const int64_t most_rows = tokens > 0 ? *std::max_element(rows_of_token.begin(), rows_of_token.end()) : 0;
  const bool use_limbs = most_rows * nb <= kMaxLimbTerms;
  const int threads = pool != nullptr ? pool->size() : 1;
  sum_tiles_.resize(static_cast<size_t>(threads));
  sum_limbs_.resize(static_cast<size_t>(threads));
  for (int i = 0; i < threads; ++i) {
    sum_tiles_[i].resize(static_cast<size_t>(kChunkRows * nb * kSliceCols));
    if (use_limbs)
      sum_limbs_[i].resize(static_cast<size_t>(2 * tokens * kSliceCols), 0);  // zero between tasks
  }
  ParallelForOn(pool, slices, [&](int64_t slice, int thread) {
    const int64_t c0 = slice * kSliceCols, cols = std::min(kSliceCols, h - c0);
    const int64_t b0 = c0 / 16, b1 = (c0 + cols + 15) / 16;
    float* tile = sum_tiles_[static_cast<size_t>(thread)].data();     // [kChunkRows, nb, kSliceCols]
    int64_t* limbs = sum_limbs_[static_cast<size_t>(thread)].data();  // [tokens, 2 (hi, lo), kSliceCols]
    auto limbs_of = [&](int64_t t) -> FixedLimbs {
      if (!use_limbs) return {};
      return {limbs + 2 * t * kSliceCols, limbs + (2 * t + 1) * kSliceCols};
    };
    std::vector<FixedTermRow> terms(static_cast<size_t>(nb));
    for (size_t j = 0; j < down.size(); ++j) {
      for (int64_t m0 = 0; m0 < down[j].rows; m0 += kChunkRows) {
        const int64_t rows = std::min(kChunkRows, down[j].rows - m0);
        MatmulJob part = down[j];
        part.rows = rows;
        part.x = OffsetRows(down[j].x, m0);
        part.y = tile;
        part.y_col0 = c0;
        part.ldy = nb * kSliceCols;
        part.block_stride = kSliceCols;
        RunMatmulBlocks(part, 0, rows, b0, b1);
        for (int64_t i = 0; i < rows; ++i) {
          const int64_t r = perm_row_[static_cast<size_t>(first_pos[j] + m0 + i)], t = spec.token[r];
          for (int64_t b = 0; b < nb; ++b)
            terms[static_cast<size_t>(b)] = {tile + (i * nb + b) * kSliceCols, spec.weight[r]};
          AccumulateFixed(spec.token_sums + t * h + c0, cols, terms, FixedPath::kAuto, limbs_of(t));
        }
      }
    }
    if (!use_limbs) return;
    for (int64_t t = 0; t < tokens; ++t) {
      if (rows_of_token[static_cast<size_t>(t)] > 0)
        FlushFixedLimbs(spec.token_sums + t * h + c0, cols, limbs_of(t));
    }
  });
}

}  // namespace moerun
