// The all-gather dispatcher: tokens are split over their owners (the DP group, or every rank under
// SP), so each rank all-gathers every owner's tokens (hidden state, expert ids, weights: two
// collectives, the row counts then the rows), computes its experts (or slices) for all of them,
// and the combine reduce-scatters the per-owner partial sums back through the transition executor:
// Partial(owners) -> Complete(token-shard of owners). What remains is the declaration: the
// token-shard of tp under SP (the owners are all ranks), else Partial(tp) when tp > 1 (the TP
// peers hold slices), else complete.
#include <cstring>

#include "moe/dispatch/dispatcher.h"
#include "moe/dispatch/token_slots.h"
#include "parallel/transition.h"

namespace moerun {
namespace {

class AllGatherDispatch final : public Dispatcher {
 public:
  explicit AllGatherDispatch(const ParallelOptions& o) : tp_(o.tp), sp_(o.sp) {}
  Kind kind() const override { return Kind::kAllGather; }
  const char* name() const override { return "allgather"; }
  ReductionState RoutedState() const override {
    if (sp_) return ReductionState::TokenShard(Group::kTp);
    return tp_ > 1 ? ReductionState::Partial(Group::kTp) : ReductionState::Replicated(Group::kTp);
  }

  StatusOr<std::vector<PlannedCollective>> PlanCollectives(const DispatchPlanShape& s) const override {
    const Group owners = sp_ ? Group::kEp : Group::kDp;
    std::vector<PlannedCollective> out;
    out.push_back({Collective::kAllGather, nullptr, owners, 8, s.layer + " dispatch row counts", "", ""});
    // The token rows: hidden state, then k expert ids and k weights as floats.
    const ReductionState shard = ReductionState::TokenShard(owners), all = ReductionState::Replicated(owners);
    ASSIGN_OR_RETURN(Collective gather, PlanTransition(shard, all, s.layer + " dispatch token rows"));
    out.push_back({gather, nullptr, owners, static_cast<uint64_t>(s.rows * (s.hidden + 2 * s.k) * 4),
                   s.layer + " dispatch token rows", shard.ToString(), all.ToString()});
    const ReductionState partial = ReductionState::Partial(owners);
    ASSIGN_OR_RETURN(Collective scatter, PlanTransition(partial, shard, s.layer + " routed combine"));
    out.push_back({scatter, nullptr, owners, static_cast<uint64_t>(s.all_owner_rows * s.hidden * s.elem),
                   s.layer + " routed combine", partial.ToString(), shard.ToString()});
    return out;
  }

  StatusOr<ExpertRows> Dispatch(const RoutedInput& in) override {
    RETURN_IF_ERROR(GatherTokens(in));
    const int64_t h = in.x_own.dim(1), total = static_cast<int64_t>(x_.size()) / h;
    slots_.Fill(in, ids_.data(), total);
    ExpertRows rows = slots_.Rows(x_.data(), total, in.routing.k, wts_.data());
    rows.sources = Owners();
    rows.source_rows = rows_of_rank_;
    return rows;
  }

  StatusOr<MoePart> Combine(const RoutedInput& in, const ExpertRows& rows,
                            const ExpertOutputs& out) override {
    const int64_t h = in.x_own.dim(1);
    const bool det = in.parts.deterministic();
    MoePart all = SumTokenSlots(in, ReductionState::Partial(Owners()), rows, out);
    // Reduce-scatter the partial sums back to their owners: Partial over the owners -> their token
    // shards. What remains (a Partial over tp, or complete) is this dispatcher's declaration.
    MoePart part = in.parts.Make(RoutedState(), in.x_own.dim(0), h);
    StatedBuffer sum = all.View(det), mine = part.View(det);
    RETURN_IF_ERROR(Transition(in.layout, &sum, ReductionState::TokenShard(Owners()),
                               in.layer + " routed combine", &mine, rows_of_rank_));
    part.state = RoutedState();
    in.parts.Release(&all);
    x_ = {};  // per-call buffers are not kept between calls (one dispatcher per layer)
    ids_ = {};
    wts_ = {};
    slots_ = {};
    return part;
  }

 private:
  // Token owners: every rank under SP (ep), else the ranks with this TP rank (dp).
  Group Owners() const { return sp_ ? Group::kEp : Group::kDp; }

  // Gathers every owner's tokens (x, ids, weights packed per row) in two collectives: the row
  // counts, then the rows (Complete(token-shard of owners) -> Complete(replicated over owners),
  // through the transition executor).
  Status GatherTokens(const RoutedInput& in) {
    const ParallelLayout& layout = in.layout;
    const Group owners = Owners();
    const Routing& r = in.routing;
    const int64_t n = in.x_own.dim(0), h = in.x_own.dim(1), k = r.k, row_floats = h + 2 * k;
    const float* x = in.x_own.data<float>();
    std::vector<uint64_t> counts{static_cast<uint64_t>(n)};
    if (layout.GroupSize(owners) > 1) {
      CollectiveLabel label(layout.log(), in.layer + " dispatch row counts");
      ASSIGN_OR_RETURN(counts, layout.Comm(owners).AllGatherValue(static_cast<uint64_t>(n)));
    }
    std::vector<float> send(static_cast<size_t>(n * row_floats));
    for (int64_t t = 0; t < n; ++t) {
      float* row = send.data() + t * row_floats;
      std::memcpy(row, x + t * h, static_cast<size_t>(h) * sizeof(float));
      std::memcpy(row + h, r.ids.data() + t * k, static_cast<size_t>(k) * sizeof(int32_t));
      std::memcpy(row + h + k, r.weights.data() + t * k, static_cast<size_t>(k) * sizeof(float));
    }
    rows_of_rank_.clear();
    int64_t total = 0;
    for (uint64_t c : counts) {
      rows_of_rank_.push_back(static_cast<int64_t>(c));
      total += static_cast<int64_t>(c);
    }
    std::vector<float> all(static_cast<size_t>(total * row_floats));
    StatedBuffer mine = StatedBuffer::F32(ReductionState::TokenShard(owners), n, row_floats, send.data());
    StatedBuffer gathered =
        StatedBuffer::F32(ReductionState::TokenShard(owners), total, row_floats, all.data());
    RETURN_IF_ERROR(Transition(layout, &mine, ReductionState::Replicated(owners),
                               in.layer + " dispatch token rows", &gathered, rows_of_rank_));
    x_.resize(static_cast<size_t>(total * h));
    ids_.resize(static_cast<size_t>(total * k));
    wts_.resize(static_cast<size_t>(total * k));
    for (int64_t t = 0; t < total; ++t) {
      const float* row = all.data() + t * row_floats;
      std::memcpy(x_.data() + t * h, row, static_cast<size_t>(h) * sizeof(float));
      std::memcpy(ids_.data() + t * k, row + h, static_cast<size_t>(k) * sizeof(int32_t));
      std::memcpy(wts_.data() + t * k, row + h + k, static_cast<size_t>(k) * sizeof(float));
    }
    return Status::Ok();
  }

  int tp_;
  bool sp_;
  // Per call, from Dispatch to Combine: every owner's tokens and their rows per owner.
  std::vector<float> x_;      // [total, H]
  std::vector<int32_t> ids_;  // [total, k]
  std::vector<float> wts_;    // [total, k]
  std::vector<int64_t> rows_of_rank_;
  TokenSlots slots_;
};

}  // namespace

std::unique_ptr<Dispatcher> MakeAllGatherDispatch(const ParallelOptions& o) {
  return std::make_unique<AllGatherDispatch>(o);
}

}  // namespace moerun
