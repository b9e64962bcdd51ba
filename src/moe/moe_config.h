// MoeConfig: the MoE-block hyper-parameters read from a Hugging Face config.json.
//
// Accepts the DeepSeek-V2/V3 field names (n_routed_experts, n_shared_experts, topk_method, ...),
// the Qwen2-MoE/Qwen3-MoE ones (num_experts, shared_expert_intermediate_size, ...), Mixtral's
// (num_local_experts; experts of width intermediate_size, always renormalised) and OLMoE's
// (num_experts; experts of width intermediate_size), selected by model_type. Missing optional
// fields take the family's documented default; every present field is type- and range-checked,
// and FromJson fails with a message naming the field, the value and the bound. Thread safety: a
// plain value type.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"

namespace moerun {

enum class ScoringFunc { kSoftmax, kSigmoid };
enum class TopkMethod {
  kGreedy,              // top-k over all experts
  kGroupLimitedGreedy,  // DeepSeek-V2: keep topk_group groups by their max score, then top-k
  kNoauxTc,             // DeepSeek-V3: bias-corrected scores for choice, groups by top-2 sum
};
const char* TopkMethodName(TopkMethod m);

// The routed experts' matrices under "experts.{e}.": HF's gate_proj / up_proj / down_proj, or
// Mixtral's w1 (gate) / w3 (up) / w2 (down). The one name-mapping layer for expert tensors
// (moe/moe_weights.h ExpertTensorName); the math is the same SwiGLU MLP.
struct ExpertTensorNames {
  std::string gate = "gate_proj";  // Mixtral: "w1"
  std::string up = "up_proj";      // Mixtral: "w3"
  std::string down = "down_proj";  // Mixtral: "w2"
};

struct MoeConfig {
  // "deepseek_v2", "deepseek_v3", "qwen2_moe", "qwen3_moe", "mixtral", "olmoe"
  std::string model_type;
  int64_t hidden_size = 0;               // H, e.g. 2048
  int64_t moe_intermediate_size = 0;     // I per routed expert, e.g. 1408
  int64_t n_routed_experts = 0;          // E, e.g. 64
  int64_t num_experts_per_tok = 0;       // k, e.g. 6
  int64_t shared_intermediate_size = 0;  // width of the one shared MLP, e.g. 2816 (= 2 x 1408); 0 = none
  bool shared_expert_gated = false;      // Qwen2-MoE: shared output x sigmoid(x . shared_expert_gate)
  TopkMethod topk_method = TopkMethod::kGreedy;
  int64_t n_group = 1;                 // expert groups, e.g. 8 (DeepSeek-V2); experts [g*E/G, (g+1)*E/G)
  int64_t topk_group = 1;              // groups kept per token, e.g. 3
  bool norm_topk_prob = false;         // renormalise the k weights to sum 1
  float routed_scaling_factor = 1.0f;  // e.g. 16.0 (DeepSeek-V2), 2.5 (V3)
  // DeepSeek-V2 remote code scales only when it does not renormalise; V3 (and vLLM) always scale.
  bool scale_after_norm = true;
  ScoringFunc scoring_func = ScoringFunc::kSoftmax;
  ExpertTensorNames expert_names;  // Mixtral: w1 / w3 / w2

  // Parses config.json text. `source` names the file in errors.
  static StatusOr<MoeConfig> FromJson(const std::string& text, const std::string& source);
  // Checks the cross-field constraints (k <= E, E % n_group == 0, enough experts in kept groups).
  Status Validate() const;
  // One line, e.g. "deepseek_v2 H=2048 I=1408 E=64 k=6 shared=2816 greedy softmax".
  std::string Summary() const;
};

}  // namespace moerun
