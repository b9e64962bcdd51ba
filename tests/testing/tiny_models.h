// Tiny random models of both cache kinds for engine and model tests, built in process (no files):
// Qwen3-MoE, Qwen2-MoE and OLMoE (GQA cache) and DeepSeek-V2 (MLA latent cache) configs with
// SyntheticTensorSource weights (model/synthetic_model.h), loaded through the registry on this rank's world.
#pragma once

#include <memory>
#include <string>

#include "model/arch.h"
#include "model/synthetic_model.h"

namespace moerun::test_models {

// transformers Qwen3MoeConfig field names: 8 query heads share 4 KV heads of 16, 16 experts, top 4.
inline std::string TinyQwen3MoeConfigJson() {
  return R"({"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "vocab_size": 300,
    "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32, "num_hidden_layers": 3,
    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 16, "num_experts": 16,
    "num_experts_per_tok": 4, "norm_topk_prob": true, "decoder_sparse_step": 1, "mlp_only_layers": [],
    "hidden_act": "silu", "max_position_embeddings": 4096, "rope_theta": 1000000.0, "rope_scaling": null,
    "rms_norm_eps": 1e-06, "attention_bias": false, "use_sliding_window": false, "sliding_window": null,
    "bos_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": false, "torch_dtype": "float32"})";
}

// transformers Qwen2MoeConfig: q/k/v biases, a gated shared expert, layer 1 dense (mlp_only_layers).
inline std::string TinyQwen2MoeConfigJson() {
  return R"({"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "vocab_size": 300,
    "hidden_size": 128, "intermediate_size": 96, "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 8,
    "num_key_value_heads": 4, "num_experts": 16, "num_experts_per_tok": 4, "norm_topk_prob": false,
    "decoder_sparse_step": 1, "mlp_only_layers": [1], "max_position_embeddings": 4096,
    "rope_theta": 1000000.0, "rms_norm_eps": 1e-06, "use_sliding_window": false, "bos_token_id": 0,
    "eos_token_id": 1, "tie_word_embeddings": false})";
}

// transformers OlmoeConfig: q/k RMSNorm over the whole projection, clip_qkv, 16 experts top-4.
inline std::string TinyOlmoeConfigJson() {
  return R"({"architectures": ["OlmoeForCausalLM"], "model_type": "olmoe", "vocab_size": 300,
    "hidden_size": 128, "intermediate_size": 32, "num_hidden_layers": 3, "num_attention_heads": 8,
    "num_key_value_heads": 4, "num_experts": 16, "num_experts_per_tok": 4, "norm_topk_prob": false,
    "clip_qkv": 3.0, "max_position_embeddings": 4096, "rope_theta": 10000.0, "rms_norm_eps": 1e-05,
    "bos_token_id": null, "eos_token_id": 1, "tie_word_embeddings": false})";
}

// DeepSeek-V2 with q_lora (q_a/q_b), YaRN, one dense layer then MoE: 4 heads, r = 32, dr = 8.
inline std::string TinyDeepseekConfigJson() {
  return R"({"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "vocab_size": 280,
    "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 4, "n_routed_experts": 8, "n_shared_experts": 1,
    "num_experts_per_tok": 2, "first_k_dense_replace": 1, "moe_layer_freq": 1, "kv_lora_rank": 32,
    "q_lora_rank": 48, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
    "hidden_act": "silu", "max_position_embeddings": 2048, "rope_theta": 10000.0,
    "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512,
      "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
    "topk_method": "greedy", "n_group": 1, "topk_group": 1, "scoring_func": "softmax",
    "norm_topk_prob": false, "routed_scaling_factor": 1.0, "rms_norm_eps": 1e-06,
    "bos_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": false, "torch_dtype": "float32"})";
}

// The tiny config of a registered model_type among the above.
inline std::string TinyConfigJson(const std::string& model_type) {
  if (model_type == "qwen3_moe") return TinyQwen3MoeConfigJson();
  if (model_type == "qwen2_moe") return TinyQwen2MoeConfigJson();
  if (model_type == "olmoe") return TinyOlmoeConfigJson();
  return TinyDeepseekConfigJson();
}

// Loads `config_json` with f32 random weights (seeded) on `world` (nullptr: one rank of its own).
inline StatusOr<std::unique_ptr<Model>> LoadTinySynthetic(const std::string& config_json,
                                                          const ModelLoadOptions& options, ThreadPool* pool,
                                                          Communicator* world = nullptr, uint64_t seed = 11) {
  ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromJson(config_json, "tiny synthetic"));
  ASSIGN_OR_RETURN(std::unique_ptr<SyntheticTensorSource> source,
                   SyntheticTensorSource::Create(config, DType::kF32, seed, nullptr));
  return LoadModelFromSource(std::move(source), std::move(config), options, pool, {}, world);
}

}  // namespace moerun::test_models
