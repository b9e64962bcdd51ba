#include "moe/synthetic_block.h"

#include <nlohmann/json.hpp>
#include <random>

#include "moe/moe_weights.h"

namespace moerun {
namespace {

using Json = nlohmann::json;

StatusOr<Tensor> RandomTensor(const Shape& shape, float stddev, std::mt19937_64& rng, DType dtype) {
  ASSIGN_OR_RETURN(Tensor t, Tensor::Zeros(dtype, shape));
  std::normal_distribution<float> dist(0.0f, stddev);
  const int64_t n = t.numel();
  if (dtype == DType::kBF16) {
    for (int64_t i = 0; i < n; ++i) t.data<uint16_t>()[i] = F32ToBf16(dist(rng));
  } else if (dtype == DType::kF16) {
    for (int64_t i = 0; i < n; ++i) t.data<uint16_t>()[i] = F32ToF16(dist(rng));
  } else if (dtype == DType::kF32) {
    for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = dist(rng);
  } else {
    return InvalidArgument("synthetic tensors must be F32, BF16 or F16, not {}", DTypeName(dtype));
  }
  return t;
}

}  // namespace

std::vector<std::string> PresetNames() { return {"v2-lite", "v2", "v3", "qwen2", "qwen3"}; }

StatusOr<std::string> PresetConfigJson(const std::string& preset, bool small) {
  Json j;
  const int64_t h = small ? 64 : 2048, i = small ? 32 : 1408;
  j["hidden_size"] = h;
  j["moe_intermediate_size"] = i;
  if (preset == "v2-lite") {
    j.update({{"model_type", "deepseek_v2"},
              {"n_routed_experts", small ? 16 : 64},
              {"num_experts_per_tok", 6},
              {"n_shared_experts", 2},
              {"topk_method", "greedy"},
              {"n_group", 1},
              {"topk_group", 1},
              {"norm_topk_prob", false},
              {"routed_scaling_factor", 1.0},
              {"scoring_func", "softmax"}});
  } else if (preset == "v2") {
    j.update({{"model_type", "deepseek_v2"},
              {"n_routed_experts", small ? 32 : 160},
              {"num_experts_per_tok", 6},
              {"n_shared_experts", 2},
              {"topk_method", "group_limited_greedy"},
              {"n_group", 8},
              {"topk_group", 3},
              {"norm_topk_prob", false},
              {"routed_scaling_factor", 16.0},
              {"scoring_func", "softmax"}});
  } else if (preset == "v3") {
    j.update({{"model_type", "deepseek_v3"},
              {"n_routed_experts", small ? 32 : 256},
              {"num_experts_per_tok", 8},
              {"n_shared_experts", 1},
              {"topk_method", "noaux_tc"},
              {"n_group", 8},
              {"topk_group", 4},
              {"norm_topk_prob", true},
              {"routed_scaling_factor", 2.5},
              {"scoring_func", "sigmoid"}});
  } else if (preset == "qwen2") {
    j.update({{"model_type", "qwen2_moe"},
              {"num_experts", small ? 12 : 60},
              {"num_experts_per_tok", 4},
              {"shared_expert_intermediate_size", 4 * i},
              {"norm_topk_prob", false}});
  } else if (preset == "qwen3") {
    j.update({{"model_type", "qwen3_moe"},
              {"num_experts", small ? 16 : 128},
              {"num_experts_per_tok", 8},
              {"norm_topk_prob", true}});
  } else {
    return InvalidArgument("unknown preset '{}' (expected v2-lite, v2, v3, qwen2 or qwen3)", preset);
  }
  return j.dump(2);
}

StatusOr<std::vector<NamedTensor>> MakeSyntheticMoeTensors(const MoeConfig& c, uint64_t seed, DType dtype,
                                                           bool fused) {
  std::mt19937_64 rng(seed);
  std::vector<NamedTensor> out;
  const float router_std = 1.0f / std::sqrt(static_cast<float>(c.hidden_size));
  for (const MoeTensorSpec& spec : ExpectedMoeTensors(c)) {
    if (fused && spec.name.rfind("experts.", 0) == 0) continue;
    float stddev = 0.02f;
    if (spec.name == "gate.weight") stddev = router_std;
    if (spec.name == "gate.e_score_correction_bias") stddev = 0.05f;
    if (spec.name == "shared_expert_gate.weight") stddev = router_std;
    ASSIGN_OR_RETURN(Tensor t, RandomTensor(spec.shape, stddev, rng, dtype));
    out.emplace_back(spec.name, std::move(t));
  }
  if (fused) {
    const int64_t e = c.n_routed_experts, h = c.hidden_size, i = c.moe_intermediate_size;
    ASSIGN_OR_RETURN(Tensor gu, RandomTensor({e, 2 * i, h}, 0.02f, rng, dtype));
    ASSIGN_OR_RETURN(Tensor dn, RandomTensor({e, h, i}, 0.02f, rng, dtype));
    out.emplace_back("experts.gate_up_proj", std::move(gu));
    out.emplace_back("experts.down_proj", std::move(dn));
  }
  return out;
}

StatusOr<Tensor> MakeSyntheticInput(int64_t tokens, int64_t hidden, uint64_t seed, DType dtype) {
  std::mt19937_64 rng(seed);
  return RandomTensor({tokens, hidden}, 1.0f, rng, dtype);
}

}  // namespace moerun
