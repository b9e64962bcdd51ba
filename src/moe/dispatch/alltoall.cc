// The all-to-all dispatcher (needs --ep): each (token, slot) row goes to the rank holding its
// expert (all_to_all over ep: the counts, the rows, the expert ids), is computed there, and its
// output comes back to the token's rank (a fourth all_to_all), where the combine sums the slots in
// order. The result is complete for the source's tokens: the TP group's shared tokens
// (replicated) or, under SP, this rank's shard. All-to-all moves rows, it reduces nothing: the
// collectives are labelled for --stats with the rows' positions, not states.
#include <cstring>

#include "moe/dispatch/dispatcher.h"

namespace moerun {
namespace {

std::vector<size_t> BytesOf(const std::vector<uint64_t>& n, size_t unit) {
  std::vector<size_t> b(n.size());
  for (size_t i = 0; i < n.size(); ++i) b[i] = n[i] * unit;
  return b;
}

class AllToAllDispatch final : public Dispatcher {
 public:
  explicit AllToAllDispatch(const ParallelOptions& o) : sp_(o.sp) {}
  Kind kind() const override { return Kind::kAllToAll; }
  const char* name() const override { return "alltoall"; }
  ReductionState RoutedState() const override {
    return sp_ ? ReductionState::TokenShard(Group::kTp) : ReductionState::Replicated(Group::kTp);
  }

  StatusOr<std::vector<PlannedCollective>> PlanCollectives(const DispatchPlanShape& s) const override {
    const std::string d = s.layer + " alltoall dispatch", from = "rows at their token's rank",
                      to = "rows at their expert's rank";
    const auto move = [](uint64_t bytes, std::string what, std::string f, std::string t, bool data = false) {
      return PlannedCollective{Collective::kNone, "all_to_all", Group::kEp,   bytes,
                               std::move(what),   std::move(f), std::move(t), data};
    };
    std::vector<PlannedCollective> out;
    out.push_back(move(static_cast<uint64_t>(s.layout.world_size()) * 8, d, from, to));    // counts
    out.push_back(move(static_cast<uint64_t>(s.rows * s.k * s.hidden * 4), d, from, to));  // rows
    out.push_back(move(static_cast<uint64_t>(s.rows * s.k * 4), d, from, to));             // expert ids
    // Expected: what this rank computes for others equals, on average, what it sends.
    out.push_back(move(static_cast<uint64_t>(s.rows * s.k * s.layout.ExpertBlocks() * s.hidden * 4),
                       s.layer + " alltoall combine", "expert outputs at their expert's rank",
                       "expert outputs at their token's rank", /*data=*/true));
    return out;
  }

  StatusOr<ExpertRows> Dispatch(const RoutedInput& in) override {
    const ParallelLayout& lay = in.layout;
    const Routing& routing = in.routing;
    const int64_t h = in.x_own.dim(1), k = routing.k, t_own = in.x_own.dim(0);
    Communicator& ep = lay.Comm(Group::kEp);
    const int64_t w = ep.size(), per_rank = (in.expert_end - in.expert_begin);
    std::vector<std::vector<int64_t>> rows_to(static_cast<size_t>(w));  // (t * k + j) per destination
    for (int64_t r = 0; r < t_own * k; ++r)
      rows_to[static_cast<size_t>(routing.ids[r] / per_rank)].push_back(r);
    send_n_.assign(static_cast<size_t>(w), 0);
    recv_n_.assign(static_cast<size_t>(w), 0);
    for (int64_t d = 0; d < w; ++d) send_n_[d] = rows_to[d].size();
    // Token movement, not a reduction: labelled for --stats, the states are those of the rows.
    CollectiveLabel label(lay.log(), in.layer + " alltoall dispatch", "rows at their token's rank",
                          "rows at their expert's rank");
    std::vector<size_t> count_bytes(static_cast<size_t>(w), sizeof(uint64_t));
    RETURN_IF_ERROR(ep.AllToAll(send_n_.data(), count_bytes, recv_n_.data(), count_bytes));
    n_send_ = 0;
    int64_t n_recv = 0;
    for (int64_t d = 0; d < w; ++d) {
      n_send_ += static_cast<int64_t>(send_n_[d]);
      n_recv += static_cast<int64_t>(recv_n_[d]);
    }
    std::vector<float> send_x(static_cast<size_t>(n_send_ * h));
    std::vector<int32_t> send_id(static_cast<size_t>(n_send_)), recv_id(static_cast<size_t>(n_recv));
    recv_x_.resize(static_cast<size_t>(n_recv * h));
    send_row_.resize(static_cast<size_t>(n_send_));  // slot row of each sent row
    int64_t pos = 0;
    for (int64_t d = 0; d < w; ++d) {
      for (int64_t r : rows_to[d]) {
        std::memcpy(&send_x[pos * h], in.x_own.data<float>() + (r / k) * h,
                    static_cast<size_t>(h) * sizeof(float));
        send_id[pos] = routing.ids[r];
        send_row_[pos] = r;
        ++pos;
      }
    }
    RETURN_IF_ERROR(ep.AllToAll(send_x.data(), BytesOf(send_n_, h * sizeof(float)), recv_x_.data(),
                                BytesOf(recv_n_, h * sizeof(float))));
    RETURN_IF_ERROR(ep.AllToAll(send_id.data(), BytesOf(send_n_, sizeof(int32_t)), recv_id.data(),
                                BytesOf(recv_n_, sizeof(int32_t))));
    token_.resize(static_cast<size_t>(n_recv));
    expert_.resize(static_cast<size_t>(n_recv));
    for (int64_t r = 0; r < n_recv; ++r) {
      token_[r] = r;
      expert_[r] = in.Local(recv_id[r]);
      if (expert_[r] < 0)
        return Internal("{}: all_to_all delivered expert {} to rank {}, which holds experts [{}, {})",
                        in.layer, recv_id[r], ep.rank(), in.expert_begin, in.expert_end);
    }
    ExpertRows rows;
    rows.x = recv_x_.data();
    rows.n = n_recv;
    rows.token = token_.data();
    rows.expert = expert_.data();
    rows.sources = Group::kEp;
    rows.source_rows.assign(recv_n_.begin(), recv_n_.end());
    return rows;
  }

  StatusOr<MoePart> Combine(const RoutedInput& in, const ExpertRows& rows,
                            const ExpertOutputs& out) override {
    const float* y = out.y;  // in row order (rows.expert_order is false)
    const ParallelLayout& lay = in.layout;
    const int64_t h = in.x_own.dim(1), k = in.routing.k, t_own = in.x_own.dim(0), nb = in.k_blocks;
    float* y_back = in.parts.scratch().y_back.Get(static_cast<size_t>(n_send_ * nb * h));
    (void)rows;
    {
      CollectiveLabel label(lay.log(), in.layer + " alltoall combine",
                            "expert outputs at their expert's rank", "expert outputs at their token's rank");
      RETURN_IF_ERROR(lay.Comm(Group::kEp)
                          .AllToAll(y, BytesOf(recv_n_, nb * h * sizeof(float)), y_back,
                                    BytesOf(send_n_, nb * h * sizeof(float))));
    }
    // Combine at the source in slot order: row r = t * k + j came back at position pos_of[r].
    MoePart part = in.parts.Make(RoutedState(), t_own, h, /*zeroed=*/false);
    std::vector<int64_t> pos_of(static_cast<size_t>(t_own * k));
    for (int64_t p = 0; p < n_send_; ++p) pos_of[send_row_[p]] = p;
    in.parts.AccumulateRows(
        &part,
        [&](int64_t t, std::vector<SlotOutput>* slots) {
          for (int64_t j = 0; j < k; ++j)
            slots->push_back({y_back + pos_of[t * k + j] * nb * h, in.routing.weights[t * k + j], nb});
        },
        /*first=*/true);
    recv_x_ = {};  // per-call buffers are not kept between calls (one dispatcher per layer)
    token_ = {};
    expert_ = {};
    send_row_ = {};
    return part;
  }

 private:
  bool sp_;
  // Per call, from Dispatch to Combine.
  std::vector<uint64_t> send_n_, recv_n_;
  int64_t n_send_ = 0;
  std::vector<float> recv_x_;
  std::vector<int64_t> token_, send_row_;
  std::vector<int32_t> expert_;
};

}  // namespace

std::unique_ptr<Dispatcher> MakeAllToAllDispatch(const ParallelOptions& o) {
  return std::make_unique<AllToAllDispatch>(o);
}

}  // namespace moerun
