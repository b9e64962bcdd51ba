#include "moe/dispatch/token_slots.h"

namespace moerun {

void TokenSlots::Fill(const RoutedInput& in, const int32_t* ids, int64_t tokens) {
  const int64_t k = in.routing.k, n = tokens * k;
  token.resize(static_cast<size_t>(n));
  expert.resize(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    token[r] = r / k;
    expert[r] = in.Local(ids[r]);
  }
}

ExpertRows TokenSlots::Rows(const float* x, int64_t tokens, int64_t k, const float* wts) const {
  ExpertRows rows;
  rows.x = x;
  rows.n = tokens * k;
  rows.token = token.data();
  rows.expert = expert.data();
  rows.expert_order = true;  // SumTokenSlots reads y where the experts wrote it
  rows.sum_tokens = tokens;
  rows.weight = wts;
  return rows;
}

MoePart SumTokenSlots(const RoutedInput& in, const ReductionState& state, const ExpertRows& rows,
                      const ExpertOutputs& out) {
  const int64_t h = in.x_own.dim(1), k = in.routing.k, nb = in.k_blocks, tokens = rows.sum_tokens;
  if (out.token_sums != nullptr) {  // the experts summed the rows (deterministic mode)
    MoePart part = std::move(*out.token_sums);
    part.state = state;
    return part;
  }
  const float *y = out.y, *wts = rows.weight;
  const std::span<const int64_t> order = out.order;
  // In expert order the partials are read where the experts wrote them: no zero fill of y and no
  // scatter of it to row order (at a 512-token V2-Lite prefill: 2 x 29 MB per layer).
  // Positions of rows past rows.n (the shared rows ParallelMoe folds in, in.fold_shared) are not
  // the routed rows'.
  std::vector<int64_t> pos_of(static_cast<size_t>(rows.n));  // row -> output position
  for (size_t p = 0; p < order.size(); ++p) {
    if (order[p] < rows.n) pos_of[static_cast<size_t>(order[p])] = static_cast<int64_t>(p);
  }
  MoePart part = in.parts.Make(state, tokens, h, /*zeroed=*/false);
  in.parts.AccumulateRows(
      &part,
      [&](int64_t t, std::vector<SlotOutput>* slots) {
        for (int64_t j = 0; j < k; ++j) {
          if (rows.expert[t * k + j] >= 0)
            slots->push_back({y + pos_of[t * k + j] * nb * h, wts[t * k + j], nb});
        }
        if (in.fold_shared != nullptr) {  // rows are own tokens: row t is own token t
          slots->push_back({in.fold_shared + t * in.fold_nb * h,
                            SharedGateValue(*in.shared_weights, rows.x + t * h, h), in.fold_nb});
        }
      },
      /*first=*/true);
  return part;
}

}  // namespace moerun
