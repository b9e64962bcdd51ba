// Dispatcher: how an MoE layer's routed (token, slot) rows reach the experts that compute them and
// how the expert outputs come back, on one layout, together with the declaration of the state the
// result is in. The declaration lives in the same class as the code that makes it true:
//
//   Dispatch   which rows this rank's experts compute and where their hidden states come from
//              (own tokens; every token owner's, all-gathered; rows sent by all-to-all)
//   Combine    the expert outputs weighted, summed per token and brought back to the token owners
//              (nothing; a reduce_scatter through the transition executor; an all-to-all), into a
//              part whose state is RoutedState()
//   RoutedState  that state, for the options the dispatcher was made for
//
// The strategies, one file each: local.cc ("none": tokens already on every rank that needs them),
// allgather.cc, alltoall.cc. MakeDispatcher (dispatcher.cc) is the only place that looks at the
// layout to pick one; `moerun plan` calls it too, so the plan's states are the runner's. Decorators
// (moe/testing/) wrap a dispatcher and keep its kind and declaration.
// Contract and per-layout table: docs/reduction-contract.md §4.
//
// Thread safety: one dispatcher per layer per rank; Dispatch and Combine are called by the rank's
// thread, Dispatch then Combine, and may keep per-call state between the two.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "moe/moe_part.h"
#include "moe/moe_weights.h"
#include "moe/router.h"
#include "parallel/layout.h"
#include "parallel/options.h"
#include "parallel/reduction_state.h"

namespace moerun {

// What the layer gives its dispatcher on each call.
struct RoutedInput {
  const ParallelLayout& layout;
  const PartOps& parts;
  const Tensor& x_own;       // [t_own, H] this rank's tokens
  const Routing& routing;    // their top-k ids and weights
  int64_t expert_begin = 0;  // experts held here: [begin, end) (global ids)
  int64_t expert_end = 0;
  int64_t k_blocks = 1;      // K-blocks of each expert output (layout.ExpertBlocks())
  const std::string& layer;  // "layer 3": names collectives and errors
  // Dispatchers whose rows are this rank's own tokens in order (RowsAreOwnTokens), set before
  // Combine: the shared experts' outputs y [t_own, nb, H], summed into each row after its routed
  // terms with the shared gate (SharedGateValue(*shared_weights, ...)); null: no shared terms.
  const float* fold_shared = nullptr;
  int64_t fold_nb = 0;
  const MoeWeights* shared_weights = nullptr;

  // The held expert's index for global id `id`, or -1.
  int32_t Local(int32_t id) const {
    return id >= expert_begin && id < expert_end ? static_cast<int32_t>(id - expert_begin) : -1;
  }
};

// The rows this rank's experts compute: row r reads x[token[r]] and runs local expert expert[r]
// (-1: not held here, skipped).
struct ExpertRows {
  const float* x = nullptr;
  int64_t n = 0;
  const int64_t* token = nullptr;
  const int32_t* expert = nullptr;
  // ExpertCompute writes y in expert order (ExpertRowsSpec::expert_order): token-slot rows (the
  // none and allgather dispatchers, TokenSlots::Rows) ask for it, alltoall reads y in row order.
  bool expert_order = false;
  // Where x's rows came from: source_rows[g] consecutive rows of x from rank g of `sources`, in
  // order (for observers: moe/testing/dispatch_probe.h).
  Group sources = Group::kTp;
  std::vector<int64_t> source_rows;
  // Token-slot rows (the none and allgather dispatchers): row r counts weight[r] times in the sum
  // of token token[r] < sum_tokens, so the layer may have the experts sum them itself
  // (ExpertOutputs::token_sums). 0: only Combine knows where the rows go (alltoall).
  int64_t sum_tokens = 0;
  const float* weight = nullptr;  // [n] each row's routing weight, e.g. 0.21
};

// What the experts made of a dispatch's rows, for Combine.
struct ExpertOutputs {
  // [rows.n, k_blocks, H] outputs as ExpertCompute wrote them (rows.expert_order: row order[p] at
  // position p), or null when token_sums holds them.
  const float* y = nullptr;
  std::span<const int64_t> order;
  // Deterministic mode, token-slot rows: [rows.sum_tokens, H] fixed-point sums of weight x output
  // per token, made by the layer (its state is for Combine to set), folded shared terms included.
  MoePart* token_sums = nullptr;
};

// One collective a dispatch issues, as `moerun plan` lists it (the same fields --stats logs).
struct PlannedCollective {
  Collective op = Collective::kNone;  // kNone with `op_name`: a data move (all_to_all)
  const char* op_name = nullptr;      // e.g. "all_to_all" when op is kNone
  Group group = Group::kTp;
  uint64_t bytes = 0;  // sent by this rank
  std::string what, from, to;
  bool data_dependent = false;  // bytes depend on the routing (an expectation)
};
// What a dispatch plan depends on: this rank's rows, their width, and the layout.
struct DispatchPlanShape {
  const ParallelLayout& layout;
  int64_t rows = 0;            // this rank's tokens entering the layer
  int64_t all_owner_rows = 0;  // every owner's rows together (all replicas' tokens)
  int64_t hidden = 0;          // H
  int64_t k = 0;               // num_experts_per_tok
  int64_t elem = 4;            // bytes per output element (16 in deterministic fixed point)
  std::string layer;           // e.g. "layer 3"
};

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
  // The state of the routed output Combine returns, for the options the dispatcher was made for.
  virtual ReductionState RoutedState() const = 0;
  // Whether the rows are this rank's own tokens, in order (then Combine can fold the shared terms).
  virtual bool RowsAreOwnTokens() const { return false; }

  // The collectives Dispatch and Combine issue for `shape` (the declaration of the traffic lives
  // with the code that makes it, like RoutedState): `moerun plan` lists them; a test checks
  // them against --stats.
  virtual StatusOr<std::vector<PlannedCollective>> PlanCollectives(const DispatchPlanShape& shape) const = 0;

  // Moves rows to the experts; the returned pointers stay valid until Combine returns.
  virtual StatusOr<ExpertRows> Dispatch(const RoutedInput& in) = 0;
  // Returns this rank's [t_own, H] routed part in state RoutedState(), from the expert outputs of
  // Dispatch's rows (token_sums only for rows with sum_tokens > 0).
  virtual StatusOr<MoePart> Combine(const RoutedInput& in, const ExpertRows& rows,
                                    const ExpertOutputs& out) = 0;
};

// The dispatcher a layout binds: none when tokens are already on every rank (dp == 1, no SP), else
// --dispatch. Needs only the options (`moerun plan` runs it without communicators).
std::unique_ptr<Dispatcher> MakeDispatcher(const ParallelOptions& options);

// The strategies (dispatch/{local,allgather,alltoall}.cc); MakeDispatcher chooses among them.
std::unique_ptr<Dispatcher> MakeLocalDispatch(const ParallelOptions& options);
std::unique_ptr<Dispatcher> MakeAllGatherDispatch(const ParallelOptions& options);
std::unique_ptr<Dispatcher> MakeAllToAllDispatch(const ParallelOptions& options);

}  // namespace moerun
