// ReductionState: what a per-rank partial tensor holds relative to the true result.
//
//   Partial(G)              summing it over the ranks of group G gives the true value
//   Complete(replicated G)  the true value for all of its tokens, identical on every rank of G
//   Complete(token-shard G) the true value for this rank's slice of the tokens of G
//   Complete(column-shard G) the true value for this rank's slice of the columns of G (e.g. the
//                           vocabulary-parallel logits)
//
// Legal transitions (each is one collective over G): all_reduce: Partial -> Complete(replicated);
// reduce_scatter: Partial -> Complete(token-shard); all_gather: Complete(token-shard or
// column-shard) -> Complete(replicated). Adding two tensors requires equal states. Anything else is the bug
// class moerun exists to prevent (a double reduction multiplies by |G|; summing token-shards adds unrelated
// tokens), so PlanTransition refuses it with an error naming both states. The executor that performs a
// planned transition: parallel/transition.h. The contract, per layout: docs/reduction-contract.md. Thread
// safety: value types and pure functions.
#pragma once

#include <string>

#include "core/status.h"

namespace moerun {

// The rank groups of a layout (parallel/layout.h): the TP ranks of a replica, the DP ranks with the
// same TP rank, the expert-parallel group (every rank), the whole world.
enum class Group { kTp, kDp, kEp, kWorld };
const char* GroupName(Group g);  // "tp", "dp", "ep", "world"

enum class StateKind { kPartial, kReplicated, kTokenShard, kColumnShard };

// The collective a transition needs; kNone when the state is already the target.
enum class Collective { kNone, kAllReduce, kReduceScatter, kAllGather };
const char* CollectiveName(Collective c);  // "none", "all_reduce", "reduce_scatter", "all_gather"

struct ReductionState {
  StateKind kind = StateKind::kReplicated;
  Group group = Group::kTp;

  static ReductionState Partial(Group g) { return {StateKind::kPartial, g}; }
  static ReductionState Replicated(Group g) { return {StateKind::kReplicated, g}; }
  static ReductionState TokenShard(Group g) { return {StateKind::kTokenShard, g}; }
  static ReductionState ColumnShard(Group g) { return {StateKind::kColumnShard, g}; }

  bool operator==(const ReductionState& o) const { return kind == o.kind && group == o.group; }
  bool operator!=(const ReductionState& o) const { return !(*this == o); }
  // "Partial(tp)", "Complete(replicated over tp)", "Complete(token-shard of tp)",
  // "Complete(column-shard of tp)".
  std::string ToString() const;
};

// The collective that moves `from` to `to` (over from.group), or kNone if already there.
// Anything else (e.g. reducing a Complete tensor, or reducing token shards) is an error naming
// `what` (e.g. "layer 3 shared output") and both states.
StatusOr<Collective> PlanTransition(const ReductionState& from, const ReductionState& to,
                                    const std::string& what);

// Adding requires equal states; the error names `what` and both states.
Status CheckAddable(const ReductionState& a, const ReductionState& b, const std::string& what);

}  // namespace moerun
