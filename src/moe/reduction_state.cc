#include "moe/reduction_state.h"

namespace moerun {

std::string ReductionState::ToString() const {
  switch (kind) {
    case StateKind::kPartial:
      return "Partial(" + group + ")";
    case StateKind::kReplicated:
      return "Complete(replicated over " + group + ")";
    case StateKind::kTokenShard:
      return "Complete(token-shard of " + group + ")";
  }
  return "?";
}

StatusOr<std::string> PlanTransition(const ReductionState& from, const ReductionState& to,
                                     const std::string& what) {
  if (from == to) return std::string();
  if (from.group == to.group) {
    if (from.kind == StateKind::kPartial && to.kind == StateKind::kReplicated)
      return std::string("all_reduce");
    if (from.kind == StateKind::kPartial && to.kind == StateKind::kTokenShard)
      return std::string("reduce_scatter");
    if (from.kind == StateKind::kTokenShard && to.kind == StateKind::kReplicated)
      return std::string("all_gather");
  }
  const char* why = from.kind == StateKind::kPartial ? "a partial sum over a different group"
                    : from.kind == StateKind::kTokenShard
                        ? "reducing token shards would add unrelated tokens"
                        : "it is already complete: reducing again multiplies it";
  return InvalidArgument("{}: cannot turn {} into {} ({})", what, from.ToString(), to.ToString(), why);
}

Status CheckAddable(const ReductionState& a, const ReductionState& b, const std::string& what) {
  if (a == b) return Status::Ok();
  return InvalidArgument("{}: cannot add {} to {} (states differ)", what, a.ToString(), b.ToString());
}

}  // namespace moerun
