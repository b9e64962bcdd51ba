// The "none" dispatcher: tokens are replicated over the world (dp == 1, no SP), so every rank
// computes its experts (or its slice of every expert) for all of them and nothing moves. Each
// rank holds a summand: Partial(tp) when tp > 1, else the complete output.
#include "moe/dispatch/dispatcher.h"
#include "moe/dispatch/token_slots.h"

namespace moerun {
namespace {

class LocalDispatch final : public Dispatcher {
 public:
  explicit LocalDispatch(const ParallelOptions& o) : tp_(o.tp) {}
  Kind kind() const override { return Kind::kNone; }
  const char* name() const override { return "none"; }
  // Tokens are replicated over tp; each rank sums only its experts (or its slice of each).
  StatusOr<std::vector<PlannedCollective>> PlanCollectives(const DispatchPlanShape&) const override {
    return std::vector<PlannedCollective>{};  // tokens are already where the experts are
  }
  ReductionState RoutedState() const override {
    return tp_ > 1 ? ReductionState::Partial(Group::kTp) : ReductionState::Replicated(Group::kTp);
  }
  bool RowsAreOwnTokens() const override { return true; }

  StatusOr<ExpertRows> Dispatch(const RoutedInput& in) override {
    const int64_t t_own = in.x_own.dim(0);
    slots_.Fill(in, in.routing.ids.data(), t_own);
    ExpertRows rows = slots_.Rows(in.x_own.data<float>(), t_own, in.routing.k, in.routing.weights.data());
    rows.sources = Group::kTp;  // every row is this rank's own
    rows.source_rows.assign(static_cast<size_t>(in.layout.GroupSize(Group::kTp)), 0);
    rows.source_rows[static_cast<size_t>(in.layout.GroupRank(Group::kTp))] = t_own;
    return rows;
  }

  StatusOr<MoePart> Combine(const RoutedInput& in, const ExpertRows& rows,
                            const ExpertOutputs& out) override {
    MoePart part = SumTokenSlots(in, RoutedState(), rows, out);
    slots_ = {};  // per-call buffers are not kept between calls
    return part;
  }

 private:
  int tp_;
  TokenSlots slots_;
};

}  // namespace

std::unique_ptr<Dispatcher> MakeLocalDispatch(const ParallelOptions& o) {
  return std::make_unique<LocalDispatch>(o);
}

}  // namespace moerun
