// ModelConfig: a model's hyper-parameters from its Hugging Face config.json, for every registered
// architecture (model/arch.h): the common fields (vocabulary, hidden size, layers, heads, norms,
// RoPE base, special tokens), each architecture's attention fields (DeepSeek MLA; GQA for
// Qwen3-MoE, Qwen2-MoE, Mixtral and OLMoE, with their switches: q/k/v biases, q/k norm per head or
// over the whole projection, clip_qkv), its layer-layout rule, where its MoE block lives, and
// the MoE block fields through MoeConfig.
//
// FromJson reads model_type, finds its registry entry and runs that entry's parser
// (ParseDeepseekConfig here; the GQA families' in model/gqa_config.cc); an unregistered
// model_type is an error listing the registered ones. DeepSeek accepts both the original `rope_scaling`
// object and the newer transformers `rope_parameters` form. Every field is type- and range-checked; errors
// name the field, its value and the bound. Thread safety: a plain value type.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "moe/moe_config.h"

namespace moerun {

struct YarnConfig {
  bool enabled = false;                  // rope_scaling.type == "yarn"
  double factor = 1.0;                   // e.g. 40
  int64_t original_max_position = 4096;  // original_max_position_embeddings, e.g. 4096
  double beta_fast = 32.0;               // e.g. 32
  double beta_slow = 1.0;                // e.g. 1
  double mscale = 1.0;                   // e.g. 0.707
  double mscale_all_dim = 0.0;           // e.g. 0.707 (0: absent)
};

// Where a GQA family normalises q and k (docs/models.md §6.3, §9.2).
enum class QkNorm {
  kNone,     // Qwen2-MoE, Mixtral
  kPerHead,  // Qwen3-MoE: one [head_dim] weight, each head normalised on its own
  kWhole,    // OLMoE: over the whole projection, weights [nh * head_dim] and [nkv * head_dim]
};

struct ModelConfig {
  // The most layers a config may declare (DeepSeek-V3 has 61): refused beyond, before any tensor
  // name is built from the count.
  static constexpr int64_t kMaxHiddenLayers = 1024;
  // A registry key: "deepseek_v2", "deepseek_v3", "qwen3_moe", "qwen2_moe", "mixtral", "olmoe".
  std::string model_type;
  int64_t vocab_size = 0;           // e.g. 102400
  int64_t hidden_size = 0;          // H, e.g. 2048
  int64_t intermediate_size = 0;    // dense MLP width, e.g. 10944
  int64_t num_hidden_layers = 0;    // e.g. 27
  int64_t num_attention_heads = 0;  // nh, e.g. 16
  // GQA (Qwen3-MoE, Qwen2-MoE, Mixtral, OLMoE; 0 for DeepSeek):
  int64_t num_key_value_heads = 0;  // KV heads, e.g. 4 (Qwen3-30B-A3B: 32 query heads share 4)
  int64_t head_dim = 0;             // per-head q/k/v width, e.g. 128
  bool qkv_bias = false;            // q/k/v_proj have biases (Qwen2-MoE: true)
  QkNorm qk_norm = QkNorm::kNone;   // Qwen3-MoE: kPerHead, OLMoE: kWhole
  double clip_qkv = 0.0;            // OLMoE: clamp q, k, v to [-c, c] after the norm, e.g. 8; 0 = off
  // MLA (DeepSeek; 0 for GQA models):
  int64_t q_lora_rank = 0;       // 0 = plain q_proj (V2-Lite), e.g. 1536 (V2)
  int64_t kv_lora_rank = 0;      // r, e.g. 512
  int64_t qk_nope_head_dim = 0;  // dn, e.g. 128
  int64_t qk_rope_head_dim = 0;  // dr, e.g. 64
  int64_t v_head_dim = 0;        // dv, e.g. 128
  double rms_norm_eps = 1e-6;    // e.g. 1e-6
  double rope_theta = 10000.0;   // e.g. 10000
  YarnConfig yarn;
  int64_t max_position_embeddings = 4096;  // e.g. 163840
  int64_t first_k_dense_replace = 0;       // leading dense layers, e.g. 1
  int64_t moe_layer_freq = 1;              // e.g. 1
  // Qwen-MoE layer rule (0: the DeepSeek rule above): layer l is MoE iff l is not in
  // mlp_only_layers and (l + 1) % decoder_sparse_step == 0.
  int64_t decoder_sparse_step = 0;       // e.g. 1 (Qwen3-MoE: every layer)
  std::vector<int64_t> mlp_only_layers;  // dense layers, e.g. [] (Qwen3-MoE)
  // The MoE block's name under "model.layers.N.": "mlp." (DeepSeek, Qwen, OLMoE) or
  // "block_sparse_moe." (Mixtral). Dense MLPs are always "mlp.".
  std::string moe_block = "mlp.";
  int64_t bos_token_id = -1;  // e.g. 100000
  int64_t eos_token_id = -1;  // e.g. 100001
  bool tie_word_embeddings = false;
  // quantization_config {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128],
  // "activation_scheme": "dynamic"} (DeepSeek-V3 as released): the 2-D weights are F8_E4M3 with
  // per-block scale_inv tensors, dequantised at load (docs/models.md §2.3). Any other
  // quantization_config is refused (Unimplemented naming the field).
  bool fp8_weights = false;
  MoeConfig moe;  // the MoE block fields

  // Any registered model_type (model/arch.h); `source` names the file in errors.
  static StatusOr<ModelConfig> FromJson(const std::string& text, const std::string& source);

  bool IsMoeLayer(int64_t layer) const {
    if (moe.n_routed_experts <= 0) return false;
    if (decoder_sparse_step > 0) {
      for (int64_t d : mlp_only_layers)
        if (d == layer) return false;
      return (layer + 1) % decoder_sparse_step == 0;
    }
    return layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  // "model.layers.{layer}.{moe_block}", the prefix of that layer's MoE tensors (moe/moe_weights.h).
  std::string MoePrefix(int64_t layer) const;
  int64_t q_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // softmax scale: q_head_dim^-0.5 * mscale(factor, mscale_all_dim)^2 (YaRN).
  double SoftmaxScale() const;
  std::string Summary() const;
};

// The registry's config parsers (model/arch.h): every field of the architecture into `c`, whose
// model_type is already set. Errors name `source`, the field, its value and the bound.
Status ParseDeepseekConfig(const std::string& text, const std::string& source, ModelConfig* c);
// GQA families (model/gqa_config.cc; docs/models.md §6–§9).
Status ParseQwen3MoeConfig(const std::string& text, const std::string& source, ModelConfig* c);
Status ParseQwen2MoeConfig(const std::string& text, const std::string& source, ModelConfig* c);
Status ParseMixtralConfig(const std::string& text, const std::string& source, ModelConfig* c);
Status ParseOlmoeConfig(const std::string& text, const std::string& source, ModelConfig* c);

// YaRN's attention scale: 1 if factor <= 1, else 0.1 * m * ln(factor) + 1.
double YarnGetMscale(double factor, double m);

}  // namespace moerun
