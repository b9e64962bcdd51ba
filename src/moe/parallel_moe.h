// ParallelMoe: one MoE block split over ranks, with every cross-rank reduction derived from
// declared reduction states (parallel/reduction_state.h) rather than from flags.
//
// Layouts (world = tp x dp; rank r is DP replica r / tp, TP rank r % tp):
//   --tp T          experts' intermediate dim sharded over all T x D ranks (or whole experts
//                   spread over them with --ep); shared experts TP-sharded or replicated.
//   --dp D          each replica owns a contiguous slice of the tokens.
//   --ep            whole experts, E / (T x D) per rank.
//   --sp            sequence-parallel MoE: each TP rank owns 1/T of its replica's tokens; shared
//                   experts replicated; the caller all-gathers afterwards.
//   --dispatch      how tokens reach experts when ranks hold different tokens: allgather
//                   (all-gather tokens, reduce-scatter results) or alltoall (send each (token,
//                   slot) row to its expert's rank and back; needs --ep).
// Each rank declares three states per call: the routed output's (declared by the dispatch
// strategy bound to the layer, read only after Bind), the shared output's (from its sharding),
// and the one the caller needs (Complete(replicated over tp), or Complete(token-shard of tp)
// under SP). The runner plans the collectives from them: a single all_reduce of (routed +
// shared) when both are Partial(tp); the shared output alone when the combine already completed
// the routed output; nothing under SP. An impossible plan is an error naming layer and states.
// The rank's coordinates, groups and slices come from its ParallelLayout (made once per rank and
// shared by every layer through a RankContext); every reduction, the all-gather dispatch's token
// gather and its reduce-scatter combine are performed by the transition executor
// (parallel/transition.h), which labels them for --stats.
// Who reduces what on every layout, and the bug class this prevents: docs/reduction-contract.md.
//
// Deterministic mode sums every term w_j * y_{j,b} (slot j, fixed K-block b of 8) in 128-bit
// fixed point (core/fixed_point.h): exact, so results are bitwise identical across layouts and
// thread counts. Collectives then move 16-byte integers instead of floats. All terms of one
// output row (every slot's K-blocks, and without dispatch the shared experts' too) go through one
// AccumulateFixed call (AVX-512 / AVX2 / scalar, the same integers on each), reading the expert
// outputs in the order ExpertCompute wrote them.
//
// Thread safety: one ParallelMoe per rank; Forward is called by that rank's thread.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "core/fixed_point.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "io/checkpoint.h"
#include "moe/expert_compute.h"
#include "moe/moe_block.h"
#include "moe/moe_config.h"
#include "moe/moe_weights.h"
#include "moe/router.h"
#include "parallel/layout.h"
#include "parallel/options.h"
#include "parallel/rank_context.h"
#include "parallel/reduction_state.h"
#include "parallel/transition.h"

namespace moerun {

// The sizes of a block that a layout splits (experts, intermediate and shared widths).
LayoutDims MoeLayoutDims(const MoeConfig& config);

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

// How routed tokens reach their experts on this layout; declares the state of its result.
class Dispatcher {
 public:
  enum class Kind {
    kNone,       // tokens already on every rank that needs them (TP, TP+EP without DP/SP)
    kAllGather,  // all-gather tokens over their owners, reduce-scatter the results back
    kAllToAll,   // send (token, slot) rows to the expert's rank and the results back
  };
  virtual ~Dispatcher() = default;
  virtual Kind kind() const = 0;
  virtual const char* name() const = 0;
  // The state of the routed output this dispatcher returns, for the layout it was built for.
  virtual ReductionState RoutedState() const = 0;
};

// The dispatcher a layout binds (none when tokens are already on every rank: dp == 1, no SP), and
// the other two declarations of docs/reduction-contract.md §4. ParallelMoe and `moerun plan` both
// read the states from these, so the plan is the runner's.
std::unique_ptr<Dispatcher> MakeDispatcher(const ParallelOptions& options);
ReductionState SharedStateFor(const ParallelOptions& options);
ReductionState RequestedStateFor(const ParallelOptions& options);

// Scratch of one rank shared by every MoE layer of a model (RankContext::Scratch): layers run one
// after another on a rank, so a 27-layer model holds one set of expert buffers (sized by the
// largest batch), not 27.
// Thread safety: used by one layer's Forward at a time.
struct MoeRankScratch {
  explicit MoeRankScratch(KernelPolicy policy) : compute(std::move(policy)) {}
  ExpertCompute compute;                           // expert MLP buffers and prepared activations
  ScratchBuffer<float> y;                          // routed expert outputs [rows, nb, H]
  ScratchBuffer<float> y_shared;                   // shared expert outputs [tokens, nb, H]
  std::vector<std::vector<Fixed128>> spare_fixed;  // released part buffers (deterministic mode)
};

class ParallelMoe {
 public:
  // Loads this rank's part of the block for the rank's layout (made once per rank, shared by every
  // layer: parallel/rank_context.h). The layout must have been validated against this block's
  // sizes (MoeLayoutDims); the MoE scratch is the context's.
  static StatusOr<std::unique_ptr<ParallelMoe>> Create(const MoeConfig& config, const TensorSource& ckpt,
                                                       const std::string& prefix,
                                                       std::shared_ptr<RankContext> context,
                                                       std::optional<WeightFormat> weight_format,
                                                       KernelPolicy kernels = {});
  // A lone block (moe-layer, bench-moe, tests): makes a context of its own from the options.
  static StatusOr<std::unique_ptr<ParallelMoe>> Create(const MoeConfig& config, const TensorSource& ckpt,
                                                       const std::string& prefix,
                                                       const ParallelOptions& options, Communicator& world,
                                                       std::optional<WeightFormat> weight_format,
                                                       ThreadPool* pool, KernelPolicy kernels = {});
  ~ParallelMoe();

  // Rows [begin, end) of an n-token batch that this rank holds on input and output.
  std::pair<int64_t, int64_t> TokenRange(int64_t n_tokens) const;
  const ParallelLayout& layout() const { return context_->layout(); }
  // Whether this rank writes its token range to the final output (TP rank 0, or every rank under SP).
  bool WritesOutput() const;

  // x_own: [T_own, H] f32, this rank's rows. Returns the block output for the same rows.
  // `layer` names the layer in errors. Routing of the own rows is returned through `routing`.
  StatusOr<Tensor> Forward(const Tensor& x_own, int layer, Routing* routing);

  // The declared state of the routed output: an error until a dispatcher is bound (the state is
  // a property of the bound kernel, never cached before it exists).
  StatusOr<ReductionState> RoutedOutputState() const;
  ReductionState SharedOutputState() const;
  ReductionState RequestedState() const;
  // This rank's packed part of the block.
  const MoeWeights& weights() const { return weights_; }

  // Test hooks. Unbind the dispatcher; force a (wrong) shared-output declaration; reduce the
  // finished output once more (the double reduction vLLM #40560 introduced and #40673 fixed, or under SP a
  // sum of token shards); observe every dispatched row as it reaches the rank computing its expert.
  void UnbindForTest();
  void DeclareSharedStateForTest(ReductionState s) { shared_state_override_ = std::move(s); }
  void ReduceOutputAgainForTest(bool on) { reduce_again_ = on; }
  // probe(source world rank, the row's hidden state, global expert id)
  using ProbeFn = std::function<void(int, const float*, int32_t)>;
  void SetProbeForTest(ProbeFn probe) { probe_ = std::move(probe); }

 private:
  ParallelMoe() = default;
  Status Bind();
  // The shared experts' outputs for this rank's tokens: y [t_own, nb, H] K-block partials.
  struct SharedRows {
    const float* y = nullptr;
    int64_t nb = 0;
  };
  SharedRows ComputeShared(const Tensor& x_own);
  // `fold` (deterministic mode, no dispatch): also sum the shared experts' terms into each row.
  StatusOr<MoePart> RoutedPart(const Tensor& x_own, const Routing& routing, const SharedRows* fold,
                               const std::string& layer_name);
  StatusOr<MoePart> SharedPart(const Tensor& x_own);
  // Moves a part to `target` through the transition executor (parallel/transition.h).
  Status Reduce(MoePart* part, const ReductionState& target, const std::string& what);
  // Deterministic K-blocks must be whole blocks of the down weights' format (e.g. q8_0: 32 columns).
  Status CheckDeterministicBlocks(const std::string& prefix) const;

  // Adds sum over slots of weight x y into one part row, slots in order. y: [nb, H] K-block
  // partials (fast mode: nb = 1, an f32 sum; deterministic: every block term summed exactly in
  // fixed point, all terms of the row in one AccumulateFixed call).
  struct SlotOutput {
    const float* y = nullptr;
    float weight = 0;
    int64_t nb = 1;
  };
  // first: the row holds garbage (a part made with zeroed = false); deterministic mode zeroes it
  // here, on the pool, instead of in MakePart.
  void Accumulate(MoePart* part, int64_t part_row, std::span<const SlotOutput> slots,
                  bool first = false) const;
  int64_t AccumulateRowsPerTask() const;
  // A zeroed part (deterministic mode reuses released fixed-point buffers); ReleasePart keeps a
  // finished part's buffer for the next call.
  // zeroed = false (deterministic parts only): rows are left unspecified for Accumulate(first).
  MoePart MakePart(ReductionState state, int64_t rows, int64_t cols, bool zeroed = true);
  void ReleasePart(MoePart* part);
  void AddParts(MoePart* dst, const MoePart& src)
      const;  // dst += src element-wise  // fixed-point accumulation is costlier: finer tasks

  MoeConfig config_;
  ParallelOptions options_;  // = the layout's
  MoeWeights weights_;
  int64_t expert_begin_ = 0, expert_end_ = 0;  // whole experts held (ep) or all (sliced)
  std::shared_ptr<RankContext> context_;       // layout, pool, scratch: shared with the other layers
  ThreadPool* pool_ = nullptr;
  MoeRankScratch* scratch_ = nullptr;       // the context's
  std::unique_ptr<Dispatcher> dispatcher_;  // bound in Bind()
  std::optional<ReductionState> shared_state_override_;
  bool reduce_again_ = false;
  ProbeFn probe_;
};

}  // namespace moerun
