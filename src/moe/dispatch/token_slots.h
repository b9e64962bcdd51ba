// The (token, slot) row layout shared by the local and all-gather dispatchers: row r = t * k + j is
// slot j of token t of a token list (this rank's own, or every owner's after the gather), and the
// per-token combine of their expert outputs in slot order.
// Thread safety: called by the rank's thread; the combine runs its rows on the layer's pool.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "moe/dispatch/dispatcher.h"

namespace moerun {

struct TokenSlots {
  std::vector<int64_t> token;   // [tokens * k] r / k
  std::vector<int32_t> expert;  // [tokens * k] held expert of ids[r], or -1

  // Fills the rows of `tokens` tokens routed to global ids `ids` ([tokens, k]).
  void Fill(const RoutedInput& in, const int32_t* ids, int64_t tokens);
  // The rows over x ([tokens, H]) with their weights wts ([tokens, k]); they ask ExpertCompute
  // for expert order (no fill, no scatter) and may be summed per token by the experts.
  ExpertRows Rows(const float* x, int64_t tokens, int64_t k, const float* wts) const;
};

// Sums, for each of rows.sum_tokens tokens, weight x output over its held slots in slot order (and
// the folded shared terms when in.fold_shared is set) into a part of `state` with that many rows.
// out.y holds the outputs in expert order (row out.order[p] at position p); or out.token_sums
// holds the sums already (deterministic mode), and becomes the part.
MoePart SumTokenSlots(const RoutedInput& in, const ReductionState& state, const ExpertRows& rows,
                      const ExpertOutputs& out);

}  // namespace moerun
