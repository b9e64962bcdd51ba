// Config parsers of the GQA families (model/arch.h): Qwen3-MoE, Qwen2-MoE, Mixtral, OLMoE. They
// share the decoder fields (vocabulary, sizes, heads, RoPE base, special tokens) and differ in
// their defaults, their attention switches (ModelConfig::qkv_bias / qk_norm / clip_qkv), their
// layer rule and where the MoE block lives. Field names and defaults are transformers' config
// classes (Qwen3MoeConfig, Qwen2MoeConfig, MixtralConfig, OlmoeConfig; docs/models.md §6–§9); the
// MoE block's own fields are read by MoeConfig::FromJson.
#include <algorithm>
#include <nlohmann/json.hpp>

#include "model/config_fields.h"
#include "model/model_config.h"

namespace moerun {
namespace {

using config_fields::Bool;
using config_fields::Has;
using config_fields::Int;
using config_fields::Json;
using config_fields::Num;

// What a family's config class defaults to when the field is absent.
struct GqaDefaults {
  double rms_norm_eps;              // Qwen 1e-6, Mixtral / OLMoE 1e-5
  double rope_theta;                // Qwen 10000, Mixtral 1e6, OLMoE 10000
  int64_t max_position_embeddings;  // Qwen 32768, Mixtral 131072, OLMoE 4096
};

StatusOr<Json> Parse(const std::string& text, const std::string& src) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("{}: not a JSON object", src);
  return j;
}

// The fields every GQA family has, their checks, and plain RoPE (no scaling).
Status ReadGqaCommon(const Json& j, const std::string& src, const GqaDefaults& d, ModelConfig* out) {
  // Quantised HF checkpoints (quantization_config) are read only for DeepSeek-V3's FP8.
  if (j.contains("quantization_config") && !j.at("quantization_config").is_null()) {
    return Unimplemented("{}: quantization_config is supported only for DeepSeek-V3's FP8 checkpoints", src);
  }
  ModelConfig& c = *out;
  ASSIGN_OR_RETURN(c.vocab_size, Int(j, src, "vocab_size", 1, true, 0));
  ASSIGN_OR_RETURN(c.hidden_size, Int(j, src, "hidden_size", 1, true, 0));
  ASSIGN_OR_RETURN(c.intermediate_size, Int(j, src, "intermediate_size", 1, false, 0));
  ASSIGN_OR_RETURN(c.num_hidden_layers, Int(j, src, "num_hidden_layers", 1, true, 0));
  ASSIGN_OR_RETURN(c.num_attention_heads, Int(j, src, "num_attention_heads", 1, true, 0));
  ASSIGN_OR_RETURN(c.num_key_value_heads,
                   Int(j, src, "num_key_value_heads", 1, false, c.num_attention_heads));
  ASSIGN_OR_RETURN(c.head_dim, Int(j, src, "head_dim", 2, false, c.hidden_size / c.num_attention_heads));
  ASSIGN_OR_RETURN(c.rms_norm_eps, Num(j, src, "rms_norm_eps", d.rms_norm_eps));
  ASSIGN_OR_RETURN(c.rope_theta, Num(j, src, "rope_theta", d.rope_theta));
  ASSIGN_OR_RETURN(c.max_position_embeddings,
                   Int(j, src, "max_position_embeddings", 1, false, d.max_position_embeddings));
  ASSIGN_OR_RETURN(c.bos_token_id, Int(j, src, "bos_token_id", 0, false, -1));
  ASSIGN_OR_RETURN(c.eos_token_id, Int(j, src, "eos_token_id", 0, false, -1));
  ASSIGN_OR_RETURN(c.tie_word_embeddings, Bool(j, src, "tie_word_embeddings", false));
  if (c.head_dim < 2 || c.head_dim % 2 != 0)
    return InvalidArgument("{}: head_dim {} must be even (RoPE rotates half-dims)", src, c.head_dim);
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return InvalidArgument("{}: num_key_value_heads {} does not divide num_attention_heads {}", src,
                           c.num_key_value_heads, c.num_attention_heads);
  }
  // RoPE: plain rotate-half only. transformers 5 moves rope_theta into rope_parameters.
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    if (!j.contains(key) || !j.at(key).is_object()) continue;
    const Json& rs = j.at(key);
    if (rs.contains("rope_theta")) {
      ASSIGN_OR_RETURN(c.rope_theta, Num(rs, src + " " + key, "rope_theta", 0));
    }
    std::string type;
    if (rs.contains("type") && rs.at("type").is_string()) type = rs.at("type").get<std::string>();
    if (rs.contains("rope_type") && rs.at("rope_type").is_string())
      type = rs.at("rope_type").get<std::string>();
    if (!type.empty() && type != "default") {
      return Unimplemented("{}: {} type '{}' is not supported for {} (plain RoPE only)", src, key, type,
                           c.model_type);
    }
  }
  if (!(c.rope_theta > 0)) return InvalidArgument("{}: rope_theta {} must be > 0", src, c.rope_theta);
  return Status::Ok();
}

// The Qwen layer rule: layer l is MoE iff l is not in mlp_only_layers and (l + 1) %
// decoder_sparse_step == 0; a dense layer needs intermediate_size.
Status ReadQwenLayerRule(const Json& j, const std::string& src, ModelConfig* out) {
  ModelConfig& c = *out;
  ASSIGN_OR_RETURN(c.decoder_sparse_step, Int(j, src, "decoder_sparse_step", 1, false, 1));
  if (Has(j, "mlp_only_layers")) {
    const Json& m = j.at("mlp_only_layers");
    if (!m.is_array())
      return InvalidArgument("{}: field 'mlp_only_layers' must be a list of layer indices", src);
    for (const Json& v : m) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= c.num_hidden_layers) {
        return InvalidArgument("{}: mlp_only_layers entry {} is not a layer index in [0, {})", src, v.dump(),
                               c.num_hidden_layers);
      }
      c.mlp_only_layers.push_back(v.get<int64_t>());
    }
  }
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    bool dense = (l + 1) % c.decoder_sparse_step != 0;
    for (int64_t d : c.mlp_only_layers) dense |= d == l;
    if (dense && c.intermediate_size < 1) {
      return InvalidArgument(
          "{}: layer {} is dense (decoder_sparse_step / mlp_only_layers) but intermediate_size is missing",
          src, l);
    }
  }
  return Status::Ok();
}

Status RefuseTrue(const Json& j, const std::string& src, const char* flag, const ModelConfig& c,
                  const char* why) {
  ASSIGN_OR_RETURN(bool on, Bool(j, src, flag, false));
  if (on) return Unimplemented("{}: {} = true is not supported for {} ({})", src, flag, c.model_type, why);
  return Status::Ok();
}

}  // namespace

Status ParseQwen3MoeConfig(const std::string& text, const std::string& src, ModelConfig* c) {
  // Qwen3-30B-A3B: H 2048, 48 layers, 32 heads / 4 KV heads of 128, rope_theta 1e6 (§6.1).
  ASSIGN_OR_RETURN(Json j, Parse(text, src));
  RETURN_IF_ERROR(ReadGqaCommon(j, src, {1e-6, 10000.0, 32768}, c));
  RETURN_IF_ERROR(ReadQwenLayerRule(j, src, c));
  c->qk_norm = QkNorm::kPerHead;
  RETURN_IF_ERROR(RefuseTrue(j, src, "attention_bias", *c, "Qwen3-MoE releases use false"));
  return RefuseTrue(j, src, "use_sliding_window", *c, "Qwen3-MoE releases use false");
}

Status ParseQwen2MoeConfig(const std::string& text, const std::string& src, ModelConfig* c) {
  // Qwen1.5-MoE-A2.7B: H 2048, 24 layers, 16 heads / 16 KV heads of 128, rope_theta 1e6, 60 experts
  // top-4 of width 1408 + a gated shared expert of 5632 (§7.1). Qwen2-57B-A14B: 28 heads / 4 KV.
  ASSIGN_OR_RETURN(Json j, Parse(text, src));
  RETURN_IF_ERROR(ReadGqaCommon(j, src, {1e-6, 10000.0, 32768}, c));
  RETURN_IF_ERROR(ReadQwenLayerRule(j, src, c));
  // transformers' newest Qwen2MoeConfig names the q/k/v bias switch qkv_bias (default true); older
  // configs have no field and always use biases.
  ASSIGN_OR_RETURN(c->qkv_bias, Bool(j, src, "qkv_bias", true));
  return RefuseTrue(j, src, "use_sliding_window", *c, "Qwen2-MoE releases use false");
}

Status ParseMixtralConfig(const std::string& text, const std::string& src, ModelConfig* c) {
  // Mixtral-8x7B: H 4096, 32 layers, 32 heads / 8 KV heads of 128, rope_theta 1e6, 8 experts
  // (w1/w3/w2) of width 14336, top-2, rms_norm_eps 1e-5, vocab 32000 (§8.1).
  ASSIGN_OR_RETURN(Json j, Parse(text, src));
  RETURN_IF_ERROR(ReadGqaCommon(j, src, {1e-5, 1e6, 131072}, c));
  c->decoder_sparse_step = 1;  // every layer is MoE
  c->moe_block = "block_sparse_moe.";
  // Sliding-window attention (Mistral's sliding_window) equals full attention while every position
  // is inside the window, so a window caps the context instead (Mixtral releases use null).
  ASSIGN_OR_RETURN(int64_t window, Int(j, src, "sliding_window", 1, false, 0));
  if (window > 0) c->max_position_embeddings = std::min(c->max_position_embeddings, window);
  return Status::Ok();
}

Status ParseOlmoeConfig(const std::string& text, const std::string& src, ModelConfig* c) {
  // OLMoE-1B-7B-0924: H 2048, 16 layers, 16 heads of 128 (no GQA), rope_theta 10000, 64 experts
  // of width 1024, top-8, norm_topk_prob false, clip_qkv null, rms_norm_eps 1e-5, vocab 50304 (§9.1).
  ASSIGN_OR_RETURN(Json j, Parse(text, src));
  RETURN_IF_ERROR(ReadGqaCommon(j, src, {1e-5, 10000.0, 4096}, c));
  c->decoder_sparse_step = 1;  // every layer is MoE
  c->qk_norm = QkNorm::kWhole;
  ASSIGN_OR_RETURN(c->clip_qkv, Num(j, src, "clip_qkv", 0.0));
  if (Has(j, "clip_qkv") && !(c->clip_qkv > 0))
    return InvalidArgument("{}: clip_qkv {} must be > 0 (or null)", src, c->clip_qkv);
  // attention_bias would also give o_proj a bias, which the decoder skeleton does not have.
  return RefuseTrue(j, src, "attention_bias", *c, "OLMoE releases use false");
}

}  // namespace moerun
