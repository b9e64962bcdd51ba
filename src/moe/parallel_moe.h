// ParallelMoe: the MoE layer, on one rank or split over many (there is no other forward path), with every
// cross-rank reduction derived from declared reduction states (parallel/reduction_state.h) rather than from
// flags.
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
// One rank is the layout tp = dp = 1 (CreateLocal, or Create with default options): the local
// dispatcher, complete states, no collectives.
// Each rank declares three states per call: the routed output's (declared by the dispatch
// strategy bound to the layer, moe/dispatch/dispatcher.h, which also moves the rows and combines
// the results), the shared output's (from its sharding),
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
// Fault injection and test probes are decorators outside this class: layer hooks
// (moe/layer_hook.h, moe/testing/fault_injection.h) and dispatcher decorators
// (moe/testing/dispatch_probe.h).
//
// Thread safety: one ParallelMoe per rank; Forward is called by that rank's thread.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "io/tensor_source.h"
#include "moe/dispatch/dispatcher.h"
#include "moe/layer_hook.h"
#include "moe/moe_config.h"
#include "moe/moe_part.h"
#include "moe/moe_weights.h"
#include "moe/router.h"
#include "parallel/layout.h"
#include "parallel/options.h"
#include "parallel/rank_context.h"
#include "parallel/reduction_state.h"

namespace moerun {

// The sizes of a block that a layout splits (experts, intermediate and shared widths) and the
// K alignment of its down projections' formats (MoeDownAlignment; deterministic K-blocks).
LayoutDims MoeLayoutDims(const MoeConfig& config, const DownAlignment& align = {});

// The other two declarations of docs/reduction-contract.md §4 (the routed one is the dispatcher's,
// MakeDispatcher). ParallelMoe and `moerun plan` both read the states from these.
ReductionState SharedStateFor(const ParallelOptions& options);
ReductionState RequestedStateFor(const ParallelOptions& options);

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
  // A lone block on one rank (tests, benchmarks): owns a world of one; `pool` may be null.
  static StatusOr<std::unique_ptr<ParallelMoe>> CreateLocal(const MoeConfig& config, const TensorSource& ckpt,
                                                            const std::string& prefix,
                                                            std::optional<WeightFormat> weight_format,
                                                            ThreadPool* pool, KernelPolicy kernels = {},
                                                            const ParallelOptions& options = {});
  ~ParallelMoe();

  // Rows [begin, end) of an n-token batch that this rank holds on input and output.
  std::pair<int64_t, int64_t> TokenRange(int64_t n_tokens) const;
  const ParallelLayout& layout() const { return context_->layout(); }
  // Whether this rank writes its token range to the final output (TP rank 0, or every rank under SP).
  // Tokens this rank routed to each expert since load ([n_routed_experts]; the load expert-parallel
  // balancing needs). Any thread may read it while Forward runs.
  std::vector<uint64_t> RoutedTokenCounts() const;
  bool WritesOutput() const;

  // x_own: [T_own, H] f32, this rank's rows. Returns the block output for the same rows.
  // `layer` names the layer in errors. Routing of the own rows is returned through `routing`.
  StatusOr<Tensor> Forward(const Tensor& x_own, int layer, Routing* routing);

  // The declared state of the routed output: an error until a dispatcher is bound (the state is
  // a property of the bound kernel, never cached before it exists).
  StatusOr<ReductionState> RoutedOutputState() const;
  ReductionState SharedOutputState() const;
  ReductionState RequestedState() const;
  const MoeConfig& config() const { return config_; }
  // This rank's packed part of the block.
  const MoeWeights& weights() const { return weights_; }

  // Decorator seams (moe/testing/): replace the bound dispatcher by decorate(bound) (null unbinds
  // it), and add a hook called during Forward (moe/layer_hook.h). Call before Forward.
  void DecorateDispatcher(
      const std::function<std::unique_ptr<Dispatcher>(std::unique_ptr<Dispatcher>)>& decorate);
  void AddHook(std::unique_ptr<MoeLayerHook> hook) { hooks_.push_back(std::move(hook)); }

 private:
  ParallelMoe() = default;
  // The shared experts' outputs for this rank's tokens: y [t_own, nb, H] K-block partials; or,
  // with sums (deterministic mode), g(t) x the output of each token t added into sums[t]
  // ([t_own, H] fixed point) in their down projection's epilogue, and y null.
  struct SharedRows {
    const float* y = nullptr;
    int64_t nb = 0;
  };
  SharedRows ComputeShared(const Tensor& x_own, Fixed128* sums = nullptr);
  // [t_own] each token's shared-expert gate g(t) (1 without a shared gate).
  std::vector<float> SharedGates(const Tensor& x_own) const;
  // How RoutedPart treats the shared experts when the dispatcher's rows are the own tokens.
  enum class SharedFold {
    kNone,       // the shared experts are a separate part (SharedPart)
    kIntoSums,   // deterministic mode: added into the routed experts' fixed-point token sums
    kInCompute,  // computed beside the routed experts in the same parallel loops, summed in Combine
  };
  // The dispatcher's Dispatch, the held experts on its rows, its Combine; the shared experts'
  // terms as `how` says. Deterministic mode sums token-slot rows in the experts' epilogue.
  StatusOr<MoePart> RoutedPart(const Tensor& x_own, const Routing& routing, SharedFold how,
                               const std::string& layer_name);
  StatusOr<MoePart> SharedPart(const Tensor& x_own);
  // Moves a part to `target` through the transition executor (parallel/transition.h).
  Status Reduce(MoePart* part, const ReductionState& target, const std::string& what);
  // Deterministic K-blocks must be whole blocks of the down weights' format (e.g. q8_0: 32 columns).
  Status CheckDeterministicBlocks(const std::string& prefix) const;

  std::unique_ptr<Communicator> own_world_;  // CreateLocal only; outlives the context
  MoeConfig config_;
  ParallelOptions options_;  // = the layout's
  MoeWeights weights_;
  int64_t expert_begin_ = 0, expert_end_ = 0;  // whole experts held (ep) or all (sliced)
  // [n_routed_experts] tokens this rank routed to each expert since load (relaxed atomics).
  std::unique_ptr<std::atomic<uint64_t>[]> routed_counts_;
  std::shared_ptr<RankContext> context_;    // layout, pool, scratch: shared with the other layers
  std::optional<PartOps> parts_;            // on the context's pool and scratch
  std::unique_ptr<Dispatcher> dispatcher_;  // bound in Create (MakeDispatcher)
  std::vector<std::unique_ptr<MoeLayerHook>> hooks_;
};

}  // namespace moerun
