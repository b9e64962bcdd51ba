// GqaKvHeads (model/gqa_attention.h): which KV heads each TP rank holds — split when tp divides
// num_key_value_heads, one replicated head per group of tp / nkv ranks when nkv divides tp, an
// error naming both counts otherwise. Checked against the rule that query head h uses KV head
// h / (nh / nkv): every rank's query heads must find their KV heads in its range.
#include <gtest/gtest.h>

#include "model/gqa_attention.h"

namespace moerun {
namespace {

ModelConfig Config(int64_t heads, int64_t kv_heads) {
  ModelConfig c;
  c.model_type = "qwen3_moe";
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  return c;
}

TEST(GqaKvHeads, EveryRanksQueryHeadsFindTheirKvHeads) {
  for (const auto& [nh, nkv] : std::vector<std::pair<int64_t, int64_t>>{{8, 4}, {32, 4}, {16, 16}, {8, 1}}) {
    const ModelConfig c = Config(nh, nkv);
    for (int tp = 1; tp <= nh; tp *= 2) {
      for (int rank = 0; rank < tp; ++rank) {
        StatusOr<Range> kv = GqaKvHeads(c, tp, rank);
        ASSERT_TRUE(kv.ok()) << kv.status().ToString();
        const int64_t q0 = rank * nh / tp, q1 = (rank + 1) * nh / tp;
        for (int64_t h = q0; h < q1; ++h) {
          const int64_t g = h / (nh / nkv);
          EXPECT_TRUE(g >= kv->begin && g < kv->end) << nh << "/" << nkv << " tp " << tp << " rank " << rank;
        }
        // Exactly the KV heads those query heads use: nothing extra is loaded or cached.
        EXPECT_EQ(kv->size(), std::max<int64_t>(1, nkv / tp));
      }
      EXPECT_EQ(GqaKvReplicas(c, tp), tp > nkv ? tp / nkv : 1);
    }
  }
}

TEST(GqaKvHeads, NeitherDividesIsAnError) {
  StatusOr<Range> kv = GqaKvHeads(Config(12, 4), 6, 0);
  ASSERT_FALSE(kv.ok());
  EXPECT_NE(kv.status().message().find("--tp 6 and num_key_value_heads 4"), std::string::npos)
      << kv.status().ToString();
}

}  // namespace
}  // namespace moerun
