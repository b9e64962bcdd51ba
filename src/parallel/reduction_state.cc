#include "parallel/reduction_state.h"

namespace moerun {

const char* GroupName(Group g) {
  switch (g) {
    case Group::kTp:
      return "tp";
    case Group::kDp:
      return "dp";
    case Group::kEp:
      return "ep";
    case Group::kWorld:
      return "world";
  }
  return "?";
}

const char* CollectiveName(Collective c) {
  switch (c) {
    case Collective::kNone:
      return "none";
    case Collective::kAllReduce:
      return "all_reduce";
    case Collective::kReduceScatter:
      return "reduce_scatter";
    case Collective::kAllGather:
      return "all_gather";
  }
  return "?";
}

std::string ReductionState::ToString() const {
  const std::string g = GroupName(group);
  switch (kind) {
    case StateKind::kPartial:
      return "Partial(" + g + ")";
    case StateKind::kReplicated:
      return "Complete(replicated over " + g + ")";
    case StateKind::kTokenShard:
      return "Complete(token-shard of " + g + ")";
    case StateKind::kColumnShard:
      return "Complete(column-shard of " + g + ")";
  }
  return "?";
}

StatusOr<Collective> PlanTransition(const ReductionState& from, const ReductionState& to,
                                    const std::string& what) {
  if (from == to) return Collective::kNone;
  if (from.group == to.group) {
    if (from.kind == StateKind::kPartial && to.kind == StateKind::kReplicated) return Collective::kAllReduce;
    if (from.kind == StateKind::kPartial && to.kind == StateKind::kTokenShard)
      return Collective::kReduceScatter;
    if ((from.kind == StateKind::kTokenShard || from.kind == StateKind::kColumnShard) &&
        to.kind == StateKind::kReplicated)
      return Collective::kAllGather;
  }
  const char* why = from.kind == StateKind::kPartial      ? "a partial sum over a different group"
                    : from.kind == StateKind::kTokenShard ? "reducing token shards would add unrelated tokens"
                    : from.kind == StateKind::kColumnShard
                        ? "reducing column shards would add unrelated columns"
                        : "it is already complete: reducing again multiplies it";
  return InvalidArgument("{}: cannot turn {} into {} ({})", what, from.ToString(), to.ToString(), why);
}

Status CheckAddable(const ReductionState& a, const ReductionState& b, const std::string& what) {
  if (a == b) return Status::Ok();
  return InvalidArgument("{}: cannot add {} to {} (states differ)", what, a.ToString(), b.ToString());
}

}  // namespace moerun
