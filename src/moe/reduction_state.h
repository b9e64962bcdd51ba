// ReductionState: what a per-rank MoE output holds relative to the true result.
//
//   Partial(G)              summing it over the ranks of group G gives the true value
//   Complete(replicated G)  the true value for all of its tokens, identical on every rank of G
//   Complete(token-shard G) the true value for this rank's slice of the tokens of G
//
// Legal transitions (each is one collective over G): all_reduce: Partial -> Complete(replicated);
// reduce_scatter: Partial -> Complete(token-shard); all_gather: Complete(token-shard) ->
// Complete(replicated). Adding two tensors requires equal states. Anything else is the bug class
// moerun exists to prevent (a double reduction multiplies by |G|; summing token-shards adds
// unrelated tokens), so PlanTransition refuses it with an error naming both states.
// The contract, per layout: docs/reduction-contract.md.
// Thread safety: value types and pure functions.
#pragma once

#include <string>

#include "core/status.h"

namespace moerun {

enum class StateKind { kPartial, kReplicated, kTokenShard };

struct ReductionState {
  StateKind kind = StateKind::kReplicated;
  std::string group = "tp";  // "tp", "dp", "world"

  static ReductionState Partial(std::string g) { return {StateKind::kPartial, std::move(g)}; }
  static ReductionState Replicated(std::string g) { return {StateKind::kReplicated, std::move(g)}; }
  static ReductionState TokenShard(std::string g) { return {StateKind::kTokenShard, std::move(g)}; }

  bool operator==(const ReductionState& o) const { return kind == o.kind && group == o.group; }
  bool operator!=(const ReductionState& o) const { return !(*this == o); }
  // "Partial(tp)", "Complete(replicated over tp)", "Complete(token-shard of tp)".
  std::string ToString() const;
};

// The collective that moves `from` to `to`: "" (already there), "all_reduce", "reduce_scatter"
// or "all_gather" over from.group. Anything else (e.g. reducing a Complete tensor, or reducing
// token shards) is an error naming `what` (e.g. "layer 3 shared output") and both states.
StatusOr<std::string> PlanTransition(const ReductionState& from, const ReductionState& to,
                                     const std::string& what);

// Adding requires equal states; the error names `what` and both states.
Status CheckAddable(const ReductionState& a, const ReductionState& b, const std::string& what);

}  // namespace moerun
