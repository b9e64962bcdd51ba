#include "moe/testing/dispatch_probe.h"

namespace moerun {
namespace {

// World rank of rank g of group `group` seen from this rank (world = tp x dp, rank = dp_rank * tp + tp_rank).
int WorldRankOf(const ParallelLayout& layout, Group group, int g) {
  const int tp = layout.GroupSize(Group::kTp);
  switch (group) {
    case Group::kTp:
      return layout.dp_rank() * tp + g;
    case Group::kDp:
      return g * tp + layout.tp_rank();
    case Group::kEp:
    case Group::kWorld:
      return g;
  }
  return g;
}

class Probed final : public Dispatcher {
 public:
  Probed(std::unique_ptr<Dispatcher> inner, DispatchProbe probe)
      : inner_(std::move(inner)), probe_(std::move(probe)) {}
  Kind kind() const override { return inner_->kind(); }
  const char* name() const override { return inner_->name(); }
  ReductionState RoutedState() const override { return inner_->RoutedState(); }
  bool RowsAreOwnTokens() const override { return inner_->RowsAreOwnTokens(); }
  StatusOr<std::vector<PlannedCollective>> PlanCollectives(const DispatchPlanShape& s) const override {
    return inner_->PlanCollectives(s);
  }

  StatusOr<ExpertRows> Dispatch(const RoutedInput& in) override {
    ASSIGN_OR_RETURN(ExpertRows rows, inner_->Dispatch(in));
    const int64_t h = in.x_own.dim(1);
    std::vector<int> source;  // world rank of each row of rows.x
    for (size_t g = 0; g < rows.source_rows.size(); ++g)
      source.insert(source.end(), static_cast<size_t>(rows.source_rows[g]),
                    WorldRankOf(in.layout, rows.sources, static_cast<int>(g)));
    for (int64_t r = 0; r < rows.n; ++r) {
      if (rows.expert[r] < 0) continue;
      const int64_t x_row = rows.token[r];
      probe_(source[static_cast<size_t>(x_row)], rows.x + x_row * h,
             static_cast<int32_t>(rows.expert[r] + in.expert_begin));
    }
    return rows;
  }
  StatusOr<MoePart> Combine(const RoutedInput& in, const ExpertRows& rows,
                            const ExpertOutputs& out) override {
    return inner_->Combine(in, rows, out);
  }

 private:
  std::unique_ptr<Dispatcher> inner_;
  DispatchProbe probe_;
};

}  // namespace

std::unique_ptr<Dispatcher> ProbeDispatcher(std::unique_ptr<Dispatcher> inner, DispatchProbe probe) {
  return std::make_unique<Probed>(std::move(inner), std::move(probe));
}

void InstallDispatchProbe(ParallelMoe& layer, DispatchProbe probe) {
  layer.DecorateDispatcher(
      [&](std::unique_ptr<Dispatcher> inner) { return ProbeDispatcher(std::move(inner), std::move(probe)); });
}

void UnbindDispatcher(ParallelMoe& layer) {
  layer.DecorateDispatcher([](std::unique_ptr<Dispatcher>) { return std::unique_ptr<Dispatcher>(); });
}

}  // namespace moerun
