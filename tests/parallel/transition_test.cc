// The parallel floor on its own: layout ranges and validation, one split per group per rank, and
// the transition executor (all_reduce, reduce_scatter, token- and column-shard all_gather, labels,
// refusals) on in-process ranks.
#include "parallel/transition.h"

#include <gtest/gtest.h>

#include <mutex>

#include "comm/in_process_comm.h"
#include "parallel/rank_context.h"

namespace moerun {
namespace {

ParallelOptions Opts(int tp, int dp, bool ep = false, bool sp = false) {
  ParallelOptions o;
  o.tp = tp;
  o.dp = dp;
  o.ep = ep;
  o.sp = sp;
  return o;
}

const LayoutDims kDims{.routed_experts = 16,
                       .moe_intermediate = 32,
                       .shared_intermediate = 64,
                       .attention_heads = 4,
                       .v_head_dim = 8,
                       .vocab = 301};

TEST(ParallelLayout, RangesOfEveryRank) {
  // Rank 3 of tp 2 x dp 2: replica 1, TP rank 1.
  ParallelLayout l = ParallelLayout::Describe(Opts(2, 2, true, true), kDims, 4, 3).value();
  EXPECT_EQ(l.dp_rank(), 1);
  EXPECT_EQ(l.tp_rank(), 1);
  EXPECT_EQ(l.Heads().begin, 2);
  EXPECT_EQ(l.Heads().end, 4);
  EXPECT_EQ(l.Vocab().begin, 150);
  EXPECT_EQ(l.Vocab().end, 301);
  EXPECT_EQ(l.Experts().begin, 12);
  EXPECT_EQ(l.Experts().end, 16);
  EXPECT_EQ(l.Intermediate().size(), 32);
  EXPECT_EQ(l.SharedSlice().size(), 64);  // SP replicates the shared experts
  // 37 tokens: replica 1 holds [18, 37), its TP rank 1 the second half [27, 37).
  EXPECT_EQ(l.TokenRange(37).begin, 27);
  EXPECT_EQ(l.TokenRange(37).end, 37);
  EXPECT_EQ(l.SpShard(19, 0).size() + l.SpShard(19, 1).size(), 19);
}

TEST(ParallelLayout, RefusesWithTheValidationMessage) {
  const Status s = ParallelLayout::Describe(Opts(3, 1, true), kDims, 3, 0).status();
  EXPECT_NE(s.message().find("--ep: 3 ranks do not divide 16 routed experts"), std::string::npos)
      << s.message();
  const Status heads = ParallelLayout::Describe(Opts(8, 1, true), kDims, 8, 0).status();
  EXPECT_NE(heads.message().find("--tp 8 does not divide num_attention_heads 4"), std::string::npos)
      << heads.message();
}

TEST(ParallelLayout, SplitsEachGroupOnceAndSharesScratch) {
  const Status s = RunRanks(4, [](Communicator& world) -> Status {
    ASSIGN_OR_RETURN(auto ctx, RankContext::Create(Opts(2, 2, true), kDims, world, nullptr));
    const ParallelLayout& l = ctx->layout();
    EXPECT_EQ(l.Comm(Group::kTp).size(), 2);
    EXPECT_EQ(l.Comm(Group::kDp).size(), 2);
    EXPECT_EQ(l.Comm(Group::kEp).size(), 4);
    EXPECT_EQ(&l.Comm(Group::kTp), &l.Comm(Group::kTp));  // the same communicator for every caller
    int made = 0;
    auto make = [&] {
      ++made;
      return std::make_unique<int>(7);
    };
    EXPECT_EQ(&ctx->Scratch<int>(make), &ctx->Scratch<int>(make));
    EXPECT_EQ(made, 1);
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST(Transition, EveryCollectiveMovesDataAndState) {
  std::mutex mu;
  std::vector<CollectiveRecord> rank0;
  const Status s = RunRanks(2, [&](Communicator& world) -> Status {
    ASSIGN_OR_RETURN(auto l, ParallelLayout::Create(Opts(2, 1), kDims, world));
    const int r = world.rank();
    (void)world.log()->Take();
    // all_reduce: Partial(tp) -> Complete(replicated over tp).
    std::vector<float> p = {1.0f + r, 10.0f * (r + 1)};
    StatedBuffer sum = StatedBuffer::F32(ReductionState::Partial(Group::kTp), 1, 2, p.data());
    RETURN_IF_ERROR(Transition(*l, &sum, ReductionState::Replicated(Group::kTp), "sum"));
    EXPECT_EQ(p, (std::vector<float>{3, 30}));
    EXPECT_EQ(sum.state, ReductionState::Replicated(Group::kTp));
    // reduce_scatter of 3 rows, shards {1, 2}.
    std::vector<float> all = {1, 2, 3}, mine(r == 0 ? 1 : 2);
    StatedBuffer in = StatedBuffer::F32(ReductionState::Partial(Group::kTp), 3, 1, all.data());
    StatedBuffer out = StatedBuffer::F32(ReductionState::Partial(Group::kTp), r == 0 ? 1 : 2, 1, mine.data());
    const std::vector<int64_t> rows = {1, 2};
    RETURN_IF_ERROR(Transition(*l, &in, ReductionState::TokenShard(Group::kTp), "scatter", &out, rows));
    EXPECT_EQ(mine, (r == 0 ? std::vector<float>{2} : std::vector<float>{4, 6}));
    // Column shards: rank 0 holds columns [0, 1), rank 1 [1, 3) of 2 rows; gathered interleaved.
    std::vector<float> cols = r == 0 ? std::vector<float>{0, 3} : std::vector<float>{1, 2, 4, 5}, full(6);
    StatedBuffer shard =
        StatedBuffer::F32(ReductionState::ColumnShard(Group::kTp), 2, r == 0 ? 1 : 2, cols.data());
    StatedBuffer whole = StatedBuffer::F32(ReductionState::ColumnShard(Group::kTp), 2, 3, full.data());
    const std::vector<int64_t> widths = {1, 2};
    RETURN_IF_ERROR(Transition(*l, &shard, ReductionState::Replicated(Group::kTp), "logits", &whole, widths));
    EXPECT_EQ(full, (std::vector<float>{0, 1, 2, 3, 4, 5}));
    EXPECT_EQ(whole.state, ReductionState::Replicated(Group::kTp));
    // Refusals: a second reduction, a sum of token shards; the state is untouched.
    const Status again = AllReduceOrRefuse(*l, &sum, "layer 7 output");
    EXPECT_NE(again.message().find("layer 7 output: all_reduce over tp refused"), std::string::npos);
    EXPECT_NE(again.message().find("multiplies it"), std::string::npos);
    StatedBuffer tokens = StatedBuffer::F32(ReductionState::TokenShard(Group::kTp), 1, 1, mine.data());
    EXPECT_NE(AllReduceOrRefuse(*l, &tokens, "x").message().find("summing token shards"), std::string::npos);
    EXPECT_FALSE(Transition(*l, &tokens, ReductionState::Partial(Group::kTp), "x").ok());
    if (r == 0) {
      std::lock_guard<std::mutex> lock(mu);
      rank0 = world.log()->Take();
    }
    return Status::Ok();
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(rank0.size(), 3u);  // refused transitions issue nothing
  EXPECT_EQ(rank0[0].op, "all_reduce");
  EXPECT_EQ(rank0[0].what, "sum");
  EXPECT_EQ(rank0[0].from, "Partial(tp)");
  EXPECT_EQ(rank0[0].to, "Complete(replicated over tp)");
  EXPECT_EQ(rank0[1].op, "reduce_scatter");
  EXPECT_EQ(rank0[1].to, "Complete(token-shard of tp)");
  EXPECT_EQ(rank0[2].op, "all_gather");
  EXPECT_EQ(rank0[2].from, "Complete(column-shard of tp)");
  EXPECT_EQ(rank0[2].bytes, 2u * sizeof(float));
}

}  // namespace
}  // namespace moerun
