#include "parallel/layout.h"

namespace moerun {

StatusOr<ParallelLayout> ParallelLayout::Describe(const ParallelOptions& options, const LayoutDims& dims,
                                                  int world_size, int rank) {
  RETURN_IF_ERROR(options.Validate(dims, world_size));
  if (rank < 0 || rank >= world_size)
    return OutOfRange("rank {} is outside the world [0, {})", rank, world_size);
  ParallelLayout l;
  l.options_ = options;
  l.dims_ = dims;
  l.rank_ = rank;
  return l;
}

StatusOr<std::unique_ptr<ParallelLayout>> ParallelLayout::Create(const ParallelOptions& options,
                                                                 const LayoutDims& dims,
                                                                 Communicator& world) {
  ASSIGN_OR_RETURN(ParallelLayout described, Describe(options, dims, world.size(), world.rank()));
  std::unique_ptr<ParallelLayout> l(new ParallelLayout(std::move(described)));
  l->world_ = &world;
  // The only splits of the run: every layer shares these groups.
  ASSIGN_OR_RETURN(l->tp_, world.Split(l->dp_rank(), l->tp_rank(), "tp"));
  ASSIGN_OR_RETURN(l->dp_, world.Split(l->tp_rank(), l->dp_rank(), "dp"));
  ASSIGN_OR_RETURN(l->ep_, world.Split(0, world.rank(), options.ep ? "ep" : "world"));
  return l;
}

int ParallelLayout::GroupSize(Group g) const {
  switch (g) {
    case Group::kTp:
      return options_.tp;
    case Group::kDp:
      return options_.dp;
    case Group::kEp:
    case Group::kWorld:
      return options_.world();
  }
  return 1;
}

int ParallelLayout::GroupRank(Group g) const {
  switch (g) {
    case Group::kTp:
      return tp_rank();
    case Group::kDp:
      return dp_rank();
    case Group::kEp:
    case Group::kWorld:
      return rank_;
  }
  return 0;
}

Communicator& ParallelLayout::Comm(Group g) const {
  switch (g) {
    case Group::kTp:
      return *tp_;
    case Group::kDp:
      return *dp_;
    case Group::kEp:
      return *ep_;
    case Group::kWorld:
      return *world_;
  }
  return *world_;
}

Range ParallelLayout::TokenRange(int64_t n) const {
  const Range replica = Part(n, options_.dp, dp_rank());
  if (!options_.sp) return replica;
  const Range shard = SpShard(replica.size());
  return {replica.begin + shard.begin, replica.begin + shard.end};
}

Range ParallelLayout::Experts() const {
  if (!options_.ep) return {0, dims_.routed_experts};
  return Part(dims_.routed_experts, options_.world(), rank_);
}

Range ParallelLayout::Intermediate() const {
  if (options_.ep) return {0, dims_.moe_intermediate};
  return Part(dims_.moe_intermediate, options_.world(), rank_);
}

Range ParallelLayout::SharedSlice() const {
  if (!options_.SharedSharded()) return {0, dims_.shared_intermediate};
  return Part(dims_.shared_intermediate, options_.tp, tp_rank());
}

int64_t ParallelLayout::ExpertBlocks() const {
  if (!options_.deterministic) return 1;
  const int64_t b = DeterministicBlocks(dims_.moe_intermediate, dims_.routed_down_align);
  return options_.ep ? b : b / options_.world();
}

int64_t ParallelLayout::SharedBlocks() const {
  if (!options_.deterministic) return 1;
  const int64_t b = DeterministicBlocks(dims_.shared_intermediate, dims_.shared_down_align);
  return options_.SharedSharded() ? b / options_.tp : b;
}

}  // namespace moerun
