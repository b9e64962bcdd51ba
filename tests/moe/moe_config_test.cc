#include "moe/moe_config.h"

#include <gtest/gtest.h>

#include <string>

#include "moe/moe_weights.h"

namespace moerun {
namespace {

// The MoE fields of the real DeepSeek-V2-Lite config.json (docs/models.md §1.1).
constexpr const char* kV2Lite = R"({
  "model_type": "deepseek_v2", "hidden_size": 2048, "moe_intermediate_size": 1408,
  "n_routed_experts": 64, "n_shared_experts": 2, "num_experts_per_tok": 6, "topk_method": "greedy",
  "n_group": 1, "topk_group": 1, "norm_topk_prob": false, "routed_scaling_factor": 1.0,
  "scoring_func": "softmax", "q_lora_rank": null})";

TEST(MoeConfigTest, ParsesDeepseekV2Lite) {
  const MoeConfig c = MoeConfig::FromJson(kV2Lite, "config.json").value();
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.n_routed_experts, 64);
  EXPECT_EQ(c.shared_intermediate_size, 2816);
  EXPECT_EQ(c.topk_method, TopkMethod::kGreedy);
  EXPECT_FALSE(c.scale_after_norm);
}

TEST(MoeConfigTest, ParsesV3AndQwenFamilies) {
  const MoeConfig v3 = MoeConfig::FromJson(R"({"model_type": "deepseek_v3", "hidden_size": 7168,
      "moe_intermediate_size": 2048, "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8,
      "topk_method": "noaux_tc", "scoring_func": "sigmoid", "n_group": 8, "topk_group": 4,
      "norm_topk_prob": true, "routed_scaling_factor": 2.5})",
                                           "v3")
                           .value();
  EXPECT_EQ(v3.topk_method, TopkMethod::kNoauxTc);
  EXPECT_EQ(v3.scoring_func, ScoringFunc::kSigmoid);
  EXPECT_TRUE(v3.scale_after_norm);
  const MoeConfig q2 = MoeConfig::FromJson(R"({"model_type": "qwen2_moe", "hidden_size": 2048,
      "moe_intermediate_size": 1408, "num_experts": 60, "num_experts_per_tok": 4,
      "shared_expert_intermediate_size": 5632})",
                                           "q2")
                           .value();
  EXPECT_TRUE(q2.shared_expert_gated);
  EXPECT_EQ(q2.shared_intermediate_size, 5632);
  const MoeConfig q3 = MoeConfig::FromJson(R"({"model_type": "qwen3_moe", "hidden_size": 2048,
      "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8, "norm_topk_prob": true})",
                                           "q3")
                           .value();
  EXPECT_EQ(q3.shared_intermediate_size, 0);
  EXPECT_TRUE(q3.norm_topk_prob);
}

// Mixtral and OLMoE: experts of width intermediate_size; Mixtral's names and its fixed
// renormalisation, OLMoE's norm_topk_prob as configured.
TEST(MoeConfigTest, ParsesMixtralAndOlmoe) {
  const MoeConfig mx = MoeConfig::FromJson(R"({"model_type": "mixtral", "hidden_size": 4096,
      "intermediate_size": 14336, "num_local_experts": 8, "num_experts_per_tok": 2})",
                                           "mixtral")
                           .value();
  EXPECT_EQ(mx.n_routed_experts, 8);
  EXPECT_EQ(mx.moe_intermediate_size, 14336);
  EXPECT_TRUE(mx.norm_topk_prob);
  EXPECT_EQ(mx.shared_intermediate_size, 0);
  EXPECT_EQ(ExpertTensorName(mx, 3, ExpertMatrix::kGate), "experts.3.w1.weight");
  EXPECT_EQ(ExpertTensorName(mx, 3, ExpertMatrix::kUp), "experts.3.w3.weight");
  EXPECT_EQ(ExpertTensorName(mx, 3, ExpertMatrix::kDown), "experts.3.w2.weight");
  const MoeConfig ol = MoeConfig::FromJson(R"({"model_type": "olmoe", "hidden_size": 2048,
      "intermediate_size": 1024, "num_experts": 64, "num_experts_per_tok": 8, "norm_topk_prob": false})",
                                           "olmoe")
                           .value();
  EXPECT_EQ(ol.n_routed_experts, 64);
  EXPECT_EQ(ol.moe_intermediate_size, 1024);
  EXPECT_FALSE(ol.norm_topk_prob);
  EXPECT_EQ(ExpertTensorName(ol, 0, ExpertMatrix::kDown), "experts.0.down_proj.weight");
  const Status top1 = MoeConfig::FromJson(R"({"model_type": "mixtral", "hidden_size": 64,
      "intermediate_size": 32, "num_local_experts": 8, "num_experts_per_tok": 1})",
                                          "config.json")
                          .status();
  EXPECT_NE(top1.message().find("num_experts_per_tok 1 with norm_topk_prob true is not supported"),
            std::string::npos)
      << top1.ToString();
}

void ExpectError(const std::string& json, const std::string& needle) {
  const Status s = MoeConfig::FromJson(json, "config.json").status();
  ASSERT_FALSE(s.ok()) << json;
  EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("config.json"), std::string::npos) << s.message();
}

std::string V2LiteWith(const std::string& key, const std::string& value) {
  std::string j = kV2Lite;
  const size_t at = j.find("\"" + key + "\"");
  const size_t colon = j.find(':', at), end = j.find_first_of(",}", colon);
  return j.substr(0, colon + 1) + " " + value + j.substr(end);
}

TEST(MoeConfigTest, RejectionsNameTheFieldAndBound) {
  ExpectError(V2LiteWith("topk_method", "\"best\""), "unknown topk_method 'best'");
  ExpectError(V2LiteWith("scoring_func", "\"relu\""), "scoring_func 'relu'");
  ExpectError(V2LiteWith("num_experts_per_tok", "65"),
              "num_experts_per_tok = 65 exceeds the 64 routed experts");
  ExpectError(V2LiteWith("n_group", "3"), "n_group = 3 does not divide 64");
  ExpectError(V2LiteWith("hidden_size", "-5"), "'hidden_size' = -5 must be >= 1");
  ExpectError(V2LiteWith("hidden_size", "\"big\""), "'hidden_size' must be an integer");
  ExpectError(V2LiteWith("model_type", "\"llama\""), "unsupported model_type 'llama'");
  ExpectError(V2LiteWith("norm_topk_prob", "1"), "'norm_topk_prob' must be true or false");
  ExpectError("{\"model_type\": \"deepseek_v2\"", "not valid JSON");
  ExpectError(
      R"({"model_type": "deepseek_v2", "hidden_size": 8, "moe_intermediate_size": 8, "num_experts_per_tok": 2})",
      "'n_routed_experts' is missing");
  std::string grouped = V2LiteWith("topk_method", "\"group_limited_greedy\"");
  grouped = V2LiteWith("n_group", "16");  // 4 experts per group, keep 1 group: 4 < k = 6
  grouped = [&] {
    std::string g = V2LiteWith("topk_method", "\"group_limited_greedy\"");
    const size_t at = g.find("\"n_group\": 1");
    return g.replace(at, 12, "\"n_group\": 16");
  }();
  ExpectError(grouped, "cannot supply num_experts_per_tok = 6");
}

}  // namespace
}  // namespace moerun
