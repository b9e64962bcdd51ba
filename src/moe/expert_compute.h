// ExpertCompute: runs SwiGLU expert MLPs over arbitrary rows, grouped by expert.
//
// Given hidden states x [T, H] and n rows, each naming a source token and an expert, it gathers
// the rows expert by expert (stable order), runs one gate/up matmul with a fused SwiGLU epilogue
// and one down matmul per expert over all its rows (all experts' tasks in one parallel loop per
// phase), and writes y in row order, or in expert order (what the MoE's dispatchers ask for: no
// zero fill or scatter). The down projection can be cut into `k_blocks` fixed
// K-blocks whose partial sums are returned separately, or, for deterministic mode, weighted and
// added exactly into 128-bit fixed-point token rows in the down projection's epilogue (no f32
// partials written to memory and read back: at 128 tokens of a V2-Lite layer, 59 MB per call).
// Used by the MoE layer (ParallelMoe) on every layout, one rank included; experts may be whole or a TP slice
// of the intermediate dimension.
//
// Thread safety: Run is not reentrant on one ExpertCompute (it owns scratch buffers).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/fixed_point.h"
#include "core/scratch_buffer.h"
#include "core/thread_pool.h"
#include "kernels/kernel_table.h"
#include "kernels/packed_weight.h"

namespace moerun {

struct ExpertWeightsRef {
  const PackedWeight* gate_up = nullptr;  // [I_local (gate|up interleaved), H]
  const PackedWeight* down = nullptr;     // [H, I_local]
};

struct ExpertRowsSpec {
  const float* x = nullptr;         // [T, H] source hidden states
  int64_t hidden = 0;               // H
  int64_t n_rows = 0;               // rows to compute
  const int64_t* token = nullptr;   // [n_rows] source row of x
  const int32_t* expert = nullptr;  // [n_rows] index into the experts span, or -1 (skip, y = 0)
  int64_t k_blocks = 1;             // split the down projection's K into this many equal blocks
                                    // (each a multiple of the weight format's K alignment)
  // Write y in expert order (position p holds row RowsInExpertOrder()[p]; skipped rows are
  // absent) instead of row order, saving the zero fill and the scatter of y.
  bool expert_order = false;
  // Fixed-point token sums instead of y (deterministic mode): when set, every K-block partial of
  // row r, times weight[r], is added exactly into token_sums[token[r]] (the integers AccumulateFixed
  // would give from y: core/fixed_point.h), and y is not written.
  Fixed128* token_sums = nullptr;  // [T, H], rows not zeroed by Run
  const float* weight = nullptr;   // [n_rows] each row's weight in its token's sum, e.g. 0.21
};

class ExpertCompute {
 public:
  explicit ExpertCompute(KernelPolicy policy) : policy_(std::move(policy)) {}

  // y: [n_rows, k_blocks, H] f32 (block b = partial sum over K-block b of the down projection);
  // unused (may be null) with spec.token_sums.
  // REQUIRES: with k_blocks > 1, every expert's I_local / k_blocks is a multiple of its down
  // weight's K alignment (2 for bf16).
  void Run(const ExpertRowsSpec& spec, std::span<const ExpertWeightsRef> experts, ThreadPool* pool, float* y);

  const KernelPolicy& policy() const { return policy_; }
  // The row of each output position of the last Run (rows with expert >= 0, stably by expert).
  std::span<const int64_t> RowsInExpertOrder() const { return perm_row_; }

 private:
  KernelPolicy policy_;
  std::vector<int64_t> perm_token_;  // [m]: the token of each row in expert order
  std::vector<int64_t> row_width_;   // [m]: each row's expert's I (its down input width), e.g. 1408
  ScratchBuffer<float> act_;         // [n, I_max] SwiGLU activations; unspecified beyond an expert's I
  ScratchBuffer<float> y_perm_;      // [n, k_blocks, H] outputs in expert order
  ActivationBuffer x_acts_;          // the tokens' rows in expert order, in the gate/up kernels' formats
  ActivationBuffer act_acts_;        // act_ in the down kernels' formats
  std::vector<int64_t> perm_row_;    // permuted position -> row, of the last Run
  std::vector<std::vector<float>> sum_tiles_;  // per pool thread: [chunk rows, k_blocks, 64] partials
  // Per pool thread: [tokens, 2, 64] int64 limbs of the token sums' slice (core/fixed_point.h),
  // all zero between tasks.
  std::vector<std::vector<int64_t>> sum_limbs_;

  // Phase 2 with spec.token_sums: one task per 64-column slice of H runs every expert's down
  // projection for those columns and adds the weighted partials into the token rows' slice.
  void RunDownIntoSums(const ExpertRowsSpec& spec, std::span<const MatmulJob> down,
                       std::span<const int64_t> first_pos, ThreadPool* pool);
};

// Runs fn(row) for every row in [0, n) in blocks of `rows_per_task` rows per pool task (inline if
// no pool).
void ParallelForRows(ThreadPool* pool, int64_t n, const std::function<void(int64_t)>& fn,
                     int64_t rows_per_task = 16);

}  // namespace moerun
