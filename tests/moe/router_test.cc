// Hand-made routing cases: ties, group limits, bias-only-for-choice, normalisation and scaling.
#include "moe/router.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

namespace moerun {
namespace {

MoeConfig Greedy(int64_t e, int64_t k) {
  MoeConfig c;
  c.model_type = "deepseek_v2";
  c.hidden_size = 4;
  c.moe_intermediate_size = 4;
  c.n_routed_experts = e;
  c.num_experts_per_tok = k;
  c.scale_after_norm = false;
  return c;
}

std::vector<float> Softmax(const std::vector<float>& l) {
  const float m = *std::max_element(l.begin(), l.end());
  std::vector<float> p(l.size());
  double s = 0;
  for (size_t i = 0; i < l.size(); ++i) s += p[i] = std::exp(l[i] - m);
  for (float& v : p) v = static_cast<float>(v / s);
  return p;
}

TEST(RouterTest, GreedyPicksLargestBestFirst) {
  const MoeConfig c = Greedy(6, 2);
  const std::vector<float> logits = {0.1f, 2.0f, -1.0f, 3.0f, 0.0f, 1.0f};
  const Routing r = RouteTokens(c, logits, 1, {});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{3, 1}));
  const std::vector<float> p = Softmax(logits);
  EXPECT_FLOAT_EQ(r.weights[0], p[3]);  // V2-Lite: raw softmax probabilities, no renormalisation
  EXPECT_FLOAT_EQ(r.weights[1], p[1]);
}

TEST(RouterTest, TiesGoToTheLowestExpertId) {
  const MoeConfig c = Greedy(8, 3);
  const std::vector<float> logits = {0, 1, 0, 5, 1, 5, 1, 0};
  const Routing r = RouteTokens(c, logits, 1, {});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{3, 5, 1}));
  const std::vector<float> flat(8, 0.25f);
  EXPECT_EQ(RouteTokens(c, flat, 1, {}).ids, (std::vector<int32_t>{0, 1, 2}));
}

TEST(RouterTest, GroupLimitedGreedyKeepsBestGroupsByMax) {
  MoeConfig c = Greedy(8, 2);
  c.topk_method = TopkMethod::kGroupLimitedGreedy;
  c.n_group = 4;  // groups {0,1} {2,3} {4,5} {6,7}
  c.topk_group = 1;
  // Group 1 has the single best expert (3); group 3 has the 2nd and 3rd best overall (6, 7)
  // but a lower max. Only group 1 is kept, so the choice is {3, 2} although 6 and 7 beat 2.
  const std::vector<float> logits = {0, 0, 1, 9, 0, 0, 8, 8};
  const Routing r = RouteTokens(c, logits, 1, {});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{3, 2}));
  c.topk_group = 2;  // groups 1 and 3: {3, 6}
  EXPECT_EQ(RouteTokens(c, logits, 1, {}).ids, (std::vector<int32_t>{3, 6}));
}

TEST(RouterTest, GroupLimitedScalesWithoutRenormalising) {
  MoeConfig c = Greedy(8, 2);
  c.topk_method = TopkMethod::kGroupLimitedGreedy;
  c.n_group = 2;
  c.topk_group = 1;
  c.routed_scaling_factor = 16.0f;
  const std::vector<float> logits = {0, 1, 2, 3, 0, 0, 0, 0};
  const Routing r = RouteTokens(c, logits, 1, {});
  const std::vector<float> p = Softmax(logits);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{3, 2}));
  EXPECT_FLOAT_EQ(r.weights[0], 16.0f * p[3]);
  EXPECT_FLOAT_EQ(r.weights[1], 16.0f * p[2]);
}

TEST(RouterTest, NoauxTcUsesBiasForChoiceOnlyAndGroupsByTopTwoSum) {
  MoeConfig c = Greedy(8, 2);
  c.model_type = "deepseek_v3";
  c.topk_method = TopkMethod::kNoauxTc;
  c.scoring_func = ScoringFunc::kSigmoid;
  c.n_group = 2;  // groups {0..3} {4..7}
  c.topk_group = 1;
  c.norm_topk_prob = true;
  c.scale_after_norm = true;
  c.routed_scaling_factor = 2.5f;
  // Group 0 holds the single largest score (expert 0) but group 1 has the larger top-2 sum.
  const std::vector<float> logits = {3.0f, -3.0f, -3.0f, -3.0f, 2.0f, 2.0f, -3.0f, -3.0f};
  std::vector<float> bias(8, 0.0f);
  Routing r = RouteTokens(c, logits, 1, bias);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{4, 5}));
  // A bias on expert 7 makes it chosen, but its weight is still its unbiased sigmoid score.
  bias[7] = 10.0f;
  r = RouteTokens(c, logits, 1, bias);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{7, 4}));
  const float s7 = 1.0f / (1.0f + std::exp(3.0f)), s4 = 1.0f / (1.0f + std::exp(-2.0f));
  EXPECT_NEAR(r.weights[0], 2.5f * s7 / (s7 + s4), 1e-6f);
  EXPECT_NEAR(r.weights[1], 2.5f * s4 / (s7 + s4), 1e-6f);
}

TEST(RouterTest, NormTopkProbDeepseekV2DoesNotScaleButQwenAndV3Do) {
  MoeConfig c = Greedy(4, 2);
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 3.0f;
  const std::vector<float> logits = {1, 2, 3, 4};
  Routing r = RouteTokens(c, logits, 1, {});
  EXPECT_NEAR(r.weights[0] + r.weights[1], 1.0f, 1e-6f);
  c.scale_after_norm = true;
  r = RouteTokens(c, logits, 1, {});
  EXPECT_NEAR(r.weights[0] + r.weights[1], 3.0f, 1e-6f);
}

TEST(RouterTest, ManyTokensAreIndependent) {
  const MoeConfig c = Greedy(5, 2);
  const std::vector<float> logits = {5, 4, 0, 0, 0, 0, 0, 0, 4, 5};
  const Routing r = RouteTokens(c, logits, 2, {});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1, 4, 3}));
}

}  // namespace
}  // namespace moerun
