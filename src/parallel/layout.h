// ParallelLayout: one rank's place in a layout, made once per rank. It validates the options once
// (ParallelOptions::Validate), splits the world into the tp, dp and ep groups once (every layer
// uses the same communicators), and answers every coordinate and range a layer needs: the tokens
// a rank holds (DP slices, SP shards), its attention heads, experts, expert intermediate slice,
// shared-expert slice and vocabulary rows.
//
// world = tp x dp; rank r is DP replica r / tp and TP rank r % tp. Ranges are [begin, end) and
// split as evenly as integer division allows: part q of n over p is [q n / p, (q + 1) n / p).
// Describe() gives the same answers without communicators (for `moerun plan`, which runs nothing).
//
// Thread safety: coordinates are immutable; Comm() hands out the rank's communicators, which only
// the rank's own thread may use (comm/communicator.h).
#pragma once

#include <cstdint>
#include <memory>
#include <utility>

#include "comm/communicator.h"
#include "parallel/options.h"
#include "parallel/reduction_state.h"

namespace moerun {

struct Range {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

class ParallelLayout {
 public:
  // Validates, then splits `world` (which must outlive the layout) into the tp, dp and ep groups.
  static StatusOr<std::unique_ptr<ParallelLayout>> Create(const ParallelOptions& options,
                                                          const LayoutDims& dims, Communicator& world);
  // The same checks and coordinates for rank `rank` of `world_size`, without communicators.
  static StatusOr<ParallelLayout> Describe(const ParallelOptions& options, const LayoutDims& dims,
                                           int world_size, int rank);

  const ParallelOptions& options() const { return options_; }
  const LayoutDims& dims() const { return dims_; }
  int world_rank() const { return rank_; }
  int world_size() const { return options_.world(); }
  int tp_rank() const { return rank_ % options_.tp; }
  int dp_rank() const { return rank_ / options_.tp; }
  int GroupSize(Group g) const;
  int GroupRank(Group g) const;
  bool connected() const { return world_ != nullptr; }
  // The rank's communicator of a group. REQUIRES connected() (Create; a described layout has none).
  Communicator& Comm(Group g) const;
  CollectiveLog* log() const { return world_ ? world_->log() : nullptr; }

  // Part q of n over p parts.
  static Range Part(int64_t n, int64_t p, int64_t q) { return {q * n / p, (q + 1) * n / p}; }

  // Rows [begin, end) of an n-token batch split over the whole world (a lone MoE layer): the DP
  // replica's slice, and under SP this TP rank's shard of it.
  Range TokenRange(int64_t n) const;
  // Under SP, TP rank q's shard of a replica's n tokens (the model's MoE input and all-gather).
  Range SpShard(int64_t n, int q) const { return Part(n, options_.tp, q); }
  Range SpShard(int64_t n) const { return SpShard(n, tp_rank()); }
  // Attention heads of this TP rank.
  Range Heads() const { return Part(dims_.attention_heads, options_.tp, tp_rank()); }
  // Vocabulary rows of TP rank q (vocab-parallel lm_head).
  Range Vocab(int q) const { return Part(dims_.vocab, options_.tp, q); }
  Range Vocab() const { return Vocab(tp_rank()); }
  // Routed experts held whole: E / world of them under --ep, all of them otherwise.
  Range Experts() const;
  // Slice of every held expert's intermediate dimension: all of it under --ep, else 1 / world.
  Range Intermediate() const;
  // Slice of the shared experts' width: 1 / tp when TP-sharded, else all of it.
  Range SharedSlice() const;
  // Deterministic K-blocks per expert held (all DeterministicBlocks of a whole expert, 1 / world of
  // them when sliced) and per shared expert (1 / tp when TP-sharded); 1 in fast mode.
  int64_t ExpertBlocks() const;
  int64_t SharedBlocks() const;

 private:
  ParallelLayout() = default;
  ParallelOptions options_;
  LayoutDims dims_;
  int rank_ = 0;
  Communicator* world_ = nullptr;
  std::unique_ptr<Communicator> tp_, dp_, ep_;
};

}  // namespace moerun
