// MoePart and PartOps: one rank's piece of an MoE layer's output with its reduction state, and the
// arithmetic the layer and its dispatchers do on pieces (make, accumulate weighted expert outputs,
// add, release). A part is f32 in fast mode and 128-bit fixed point in deterministic mode
// (core/fixed_point.h: exact sums, the same bits in any order); View() hands it to the transition
// executor (parallel/transition.h).
//
// Invariants: a part's state is set by whoever made the data true (the dispatcher for the routed
// part, the layer for the shared part, the executor after a collective); PartOps never changes it.
// MoeRankScratch is the expert and part scratch of one rank, shared by every MoE layer of a model
// (RankContext::Scratch): layers run one after another, so a 27-layer model holds one set.
//
// Thread safety: PartOps and the scratch are used by the rank's own thread; Accumulate may run on
// pool tasks for distinct rows.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/fixed_point.h"
#include "core/scratch_buffer.h"
#include "core/thread_pool.h"
#include "kernels/kernel_table.h"
#include "moe/expert_compute.h"
#include "parallel/reduction_state.h"
#include "parallel/transition.h"

namespace moerun {

// One rank's MoE output part with its reduction state (f32 in fast mode, fixed point otherwise).
struct MoePart {
  ReductionState state;
  int64_t rows = 0, cols = 0;
  std::vector<float> f32;       // [rows, cols] fast mode
  std::vector<Fixed128> fixed;  // [rows, cols] deterministic mode
  // The part as the transition executor sees it (parallel/transition.h).
  StatedBuffer View(bool deterministic) {
    return deterministic ? StatedBuffer::Fixed(state, rows, cols, fixed.data())
                         : StatedBuffer::F32(state, rows, cols, f32.data());
  }
};

// Scratch of one rank shared by every MoE layer of a model. Used by one layer's Forward at a time.
struct MoeRankScratch {
  explicit MoeRankScratch(KernelPolicy policy) : compute(std::move(policy)) {}
  ExpertCompute compute;                           // expert MLP buffers and prepared activations
  ScratchBuffer<float> y;                          // routed expert outputs [rows, nb, H]
  ScratchBuffer<float> y_back;                     // expert outputs returned by an all-to-all combine
  ScratchBuffer<float> y_shared;                   // shared expert outputs [tokens, nb, H]
  std::vector<int64_t> merged_token;               // routed rows + one shared row per own token
  std::vector<int32_t> merged_expert;              // (shared experts in the routed loops), their experts
  std::vector<float> merged_weight;                // and weights (deterministic token sums)
  std::vector<std::vector<Fixed128>> spare_fixed;  // released part buffers (deterministic mode)
};

// One output row's term: weight x y, y [nb, H] K-block partials (fast mode: nb = 1, an f32 sum;
// deterministic: every block term summed exactly in fixed point).
struct SlotOutput {
  const float* y = nullptr;
  float weight = 0;
  int64_t nb = 1;
};

class PartOps {
  // Columns [c0, c1) of one row: the slots' terms added in order.
  void AccumulateColumns(MoePart* part, int64_t row, int64_t c0, int64_t c1,
                         std::span<const SlotOutput> slots, bool first) const;

 public:
  PartOps(bool deterministic, ThreadPool* pool, MoeRankScratch* scratch)
      : deterministic_(deterministic), pool_(pool), scratch_(scratch) {}

  bool deterministic() const { return deterministic_; }
  ThreadPool* pool() const { return pool_; }
  MoeRankScratch& scratch() const { return *scratch_; }

  // A zeroed part (deterministic mode reuses released fixed-point buffers). zeroed = false
  // (deterministic parts only): rows are left unspecified for Accumulate(first = true).
  MoePart Make(ReductionState state, int64_t rows, int64_t cols, bool zeroed = true) const;
  // Keeps a finished part's buffer for the next call.
  void Release(MoePart* part) const;
  // Fills the slots of output row `row` (cleared before the call), in summation order.
  using SlotsOfRow = std::function<void(int64_t row, std::vector<SlotOutput>* slots)>;
  // Adds every row's slot terms into the part, rows [0, part->rows) in parallel; with few rows
  // the columns are split too, so a decode step's accumulation uses every thread. Each element
  // sees its terms in slot order whatever the split (deterministic: one exact fixed-point sum).
  // first: the rows hold garbage and are overwritten (deterministic parts made unzeroed).
  void AccumulateRows(MoePart* part, const SlotsOfRow& slots_of, bool first = false) const;
  // dst += src element-wise (equal shapes; the caller checked the states).
  void Add(MoePart* dst, const MoePart& src) const;

 private:
  bool deterministic_;
  ThreadPool* pool_;
  MoeRankScratch* scratch_;
};

}  // namespace moerun
