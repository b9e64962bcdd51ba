// The one executor of state transitions. Every cross-rank reduction or gather of a partial result
// in the model (attention o_proj, MoE outputs and the dispatch combine, the SP all-gather of MoE
// token shards, the vocabulary-parallel logits) is a call to Transition: it plans the collective
// from the buffer's state and the target (parallel/reduction_state.h), refuses an illegal one with
// an error naming `what` and both states, performs it on the right group of the layout, labels
// it in the rank's CollectiveLog (what, from, to: `--stats` prints them), and updates the state.
//
//   Partial(G)         -> Complete(replicated over G)  all_reduce over G, in place
//   Partial(G)         -> Complete(token-shard of G)   reduce_scatter over G into `out`
//   Complete(token-shard of G)  -> Complete(replicated over G)  all_gather over G into `out`
//   Complete(column-shard of G) -> Complete(replicated over G)  all_gather, columns interleaved
//
// `shards[q]` is the size along the sharded dimension held by rank q of G (rows for token shards
// and reduce_scatter, columns for column shards). A group of one rank needs no collective; the
// data is copied and the state still changes. Payloads are f32 (fast mode) or 128-bit fixed point
// (deterministic mode: exact integer sums, the same bits in any order).
//
// AllReduceOrRefuse is what a runner that "just all-reduces" a part gets: allowed only on a
// Partial part, refused otherwise (the double reduction and the sum of token shards of vLLM
// #40560). With the layout's disable_state_checks (fault injection only), it sums the rows the
// ranks have in common and keeps the declared state, reproducing the silent wrong sum.
//
// Thread safety: called by the rank's own thread only (it issues collectives).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "core/fixed_point.h"
#include "parallel/layout.h"
#include "parallel/reduction_state.h"

namespace moerun {

// A row-major [rows, cols] buffer of one rank with its state: f32 (fast mode) or 128-bit fixed
// point (deterministic mode). `data` may be null when the buffer is empty (a rank without tokens).
struct StatedBuffer {
  ReductionState state;
  int64_t rows = 0, cols = 0;
  void* data = nullptr;
  ReduceType type = ReduceType::kF32Sum;

  static StatedBuffer F32(ReductionState s, int64_t rows, int64_t cols, float* data) {
    return {s, rows, cols, data, ReduceType::kF32Sum};
  }
  static StatedBuffer Fixed(ReductionState s, int64_t rows, int64_t cols, Fixed128* data) {
    return {s, rows, cols, data, ReduceType::kI128Sum};
  }
  size_t elem_bytes() const { return ReduceTypeSize(type); }
};

// Moves `buf` to `target`. all_reduce works in place (`out` unused); reduce_scatter and all_gather
// write `out` (sized by the caller: own shard rows, or the sum of the shards) and set its state.
Status Transition(const ParallelLayout& layout, StatedBuffer* buf, const ReductionState& target,
                  const std::string& what, StatedBuffer* out = nullptr, std::span<const int64_t> shards = {});

// An explicitly requested all-reduce over buf->state.group (see above).
Status AllReduceOrRefuse(const ParallelLayout& layout, StatedBuffer* buf, const std::string& what);

}  // namespace moerun
