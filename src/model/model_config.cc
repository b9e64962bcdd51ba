#include "model/model_config.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "model/arch.h"
#include "model/config_fields.h"

namespace moerun {
namespace {

using config_fields::Int;
using config_fields::Json;
using config_fields::Num;

Status ReadYarn(const Json& j, const std::string& src, ModelConfig* c) {
  // Original form: "rope_scaling": {"type": "yarn", ...}; transformers 5: "rope_parameters":
  // {"rope_type": "yarn", "rope_theta": ..., ...}.
  const Json* rs = nullptr;
  if (j.contains("rope_scaling") && j.at("rope_scaling").is_object()) rs = &j.at("rope_scaling");
  if (j.contains("rope_parameters") && j.at("rope_parameters").is_object()) {
    rs = &j.at("rope_parameters");
    ASSIGN_OR_RETURN(c->rope_theta, Num(*rs, src + " rope_parameters", "rope_theta", c->rope_theta));
  }
  if (rs == nullptr) return Status::Ok();
  std::string type;
  if (rs->contains("type") && rs->at("type").is_string()) type = rs->at("type").get<std::string>();
  if (rs->contains("rope_type") && rs->at("rope_type").is_string())
    type = rs->at("rope_type").get<std::string>();
  if (type == "default" || type.empty()) return Status::Ok();
  if (type != "yarn")
    return Unimplemented("{}: rope scaling type '{}' is not supported (expected yarn)", src, type);
  YarnConfig& y = c->yarn;
  y.enabled = true;
  const std::string where = src + " rope_scaling";
  ASSIGN_OR_RETURN(y.factor, Num(*rs, where, "factor", 1.0));
  ASSIGN_OR_RETURN(y.original_max_position,
                   Int(*rs, where, "original_max_position_embeddings", 1, false, 4096));
  ASSIGN_OR_RETURN(y.beta_fast, Num(*rs, where, "beta_fast", 32.0));
  ASSIGN_OR_RETURN(y.beta_slow, Num(*rs, where, "beta_slow", 1.0));
  ASSIGN_OR_RETURN(y.mscale, Num(*rs, where, "mscale", 1.0));
  ASSIGN_OR_RETURN(y.mscale_all_dim, Num(*rs, where, "mscale_all_dim", 0.0));
  if (!(y.factor > 0)) return InvalidArgument("{}: factor {} must be > 0", where, y.factor);
  return Status::Ok();
}

// quantization_config: only DeepSeek-V3's block-wise FP8 (docs/models.md §2.3). Everything it
// says is checked, so a checkpoint moerun would misread is refused here rather than at a tensor.
Status ReadQuantization(const Json& j, const std::string& src, bool fp8_supported, ModelConfig* c) {
  if (!j.contains("quantization_config") || j.at("quantization_config").is_null()) return Status::Ok();
  const Json& q = j.at("quantization_config");
  const std::string where = src + " quantization_config";
  if (!q.is_object()) return InvalidArgument("{} must be an object, got {}", where, q.type_name());
  auto str = [&](const char* key) -> std::string {
    return q.contains(key) && q.at(key).is_string() ? q.at(key).get<std::string>() : std::string();
  };
  if (const std::string method = str("quant_method"); method != "fp8") {
    return Unimplemented("{}: quant_method '{}' is not supported (only DeepSeek-V3's block-wise 'fp8')",
                         where, method);
  }
  if (!fp8_supported) {
    return Unimplemented("{}: FP8 weights are supported for DeepSeek models only, not model_type '{}'", where,
                         c->model_type);
  }
  if (q.contains("fmt") && str("fmt") != "e4m3") {
    return Unimplemented("{}: fmt '{}' is not supported (expected e4m3)", where, str("fmt"));
  }
  if (q.contains("activation_scheme") && str("activation_scheme") != "dynamic") {
    return Unimplemented("{}: activation_scheme '{}' is not supported (expected dynamic)", where,
                         str("activation_scheme"));
  }
  if (q.contains("weight_block_size")) {
    const Json& b = q.at("weight_block_size");
    const bool ok = b.is_array() && b.size() == 2 && b[0].is_number_integer() && b[1].is_number_integer() &&
                    b[0].get<int64_t>() == 128 && b[1].get<int64_t>() == 128;
    if (!ok) {
      return Unimplemented(
          "{}: weight_block_size {} is not supported (moerun reads 128 x 128 blocks, [128, 128])", where,
          b.dump());
    }
  }
  c->fp8_weights = true;
  return Status::Ok();
}

// Before any parser loops over layers or builds tensor names from the count.
Status CheckLayerBound(const Json& j, const std::string& src) {
  ASSIGN_OR_RETURN(const int64_t layers, Int(j, src, "num_hidden_layers", 1, true, 0));
  if (layers > ModelConfig::kMaxHiddenLayers) {
    return InvalidArgument("{}: num_hidden_layers {} exceeds {} (the bound moerun accepts)", src, layers,
                           ModelConfig::kMaxHiddenLayers);
  }
  return Status::Ok();
}

// What every architecture's parser leaves unchecked: fields that would otherwise be ignored or
// contradict each other silently (the SiLU experts, RoPE scaling given as a non-object, special
// token ids outside the vocabulary, an unbounded layer count).
Status CheckCommonFields(const Json& j, const std::string& src, const ModelConfig& c) {
  if (j.contains("hidden_act") && !j.at("hidden_act").is_null()) {
    const Json& act = j.at("hidden_act");
    const std::string name = act.is_string() ? act.get<std::string>() : act.dump();
    if (name != "silu" && name != "swish") {
      return Unimplemented("{}: hidden_act '{}' is not supported (moerun computes silu, i.e. swish)", src,
                           name);
    }
  }
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    if (j.contains(key) && !j.at(key).is_null() && !j.at(key).is_object()) {
      return InvalidArgument("{}: field '{}' must be an object (or null), got {}", src, key,
                             j.at(key).dump());
    }
  }
  for (const auto& [name, id] :
       {std::pair{"eos_token_id", c.eos_token_id}, std::pair{"bos_token_id", c.bos_token_id}}) {
    if (id >= c.vocab_size) {
      return InvalidArgument("{}: {} {} is not below vocab_size {}", src, name, id, c.vocab_size);
    }
  }
  return Status::Ok();
}

// The floating-point fields every architecture has, by range: a negative rms_norm_eps or a
// rope_theta of 0 would make every logit NaN, so they are refused here with the field and bound.
Status CheckNumericRanges(const ModelConfig& c, const std::string& src) {
  RETURN_IF_ERROR(config_fields::CheckPositive(src, "rms_norm_eps", c.rms_norm_eps));
  RETURN_IF_ERROR(config_fields::CheckPositive(src, "rope_theta", c.rope_theta));
  if (c.clip_qkv < 0)
    return InvalidArgument("{}: field 'clip_qkv' = {} must be > 0 (or null)", src, c.clip_qkv);
  if (!c.yarn.enabled) return Status::Ok();
  const std::string where = src + " rope_scaling";
  RETURN_IF_ERROR(config_fields::CheckPositive(where, "factor", c.yarn.factor));
  RETURN_IF_ERROR(config_fields::CheckPositive(where, "beta_fast", c.yarn.beta_fast));
  RETURN_IF_ERROR(config_fields::CheckPositive(where, "beta_slow", c.yarn.beta_slow));
  // YaRN's correction range divides by ln(rope_theta).
  if (!(c.rope_theta > 1)) {
    return InvalidArgument("{}: field 'rope_theta' = {} must be > 1 with YaRN scaling", src, c.rope_theta);
  }
  return Status::Ok();
}

}  // namespace

double YarnGetMscale(double factor, double m) {
  if (factor <= 1.0) return 1.0;
  return 0.1 * m * std::log(factor) + 1.0;
}

StatusOr<ModelConfig> ModelConfig::FromJson(const std::string& text, const std::string& src) {
  const Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("{}: not a JSON object", src);
  ModelConfig c;
  if (j.contains("model_type") && j.at("model_type").is_string())
    c.model_type = j.at("model_type").get<std::string>();
  const Arch* arch = FindArch(c.model_type);
  if (arch == nullptr) {
    return InvalidArgument("{}: model_type '{}' is not a supported architecture (expected one of {})", src,
                           c.model_type, ArchNames());
  }
  RETURN_IF_ERROR(CheckLayerBound(j, src));
  RETURN_IF_ERROR(arch->parse_config(text, src, &c));
  RETURN_IF_ERROR(CheckCommonFields(j, src, c));
  RETURN_IF_ERROR(CheckNumericRanges(c, src));
  ASSIGN_OR_RETURN(c.moe, MoeConfig::FromJson(text, src));
  if (c.moe.hidden_size != c.hidden_size) return Internal("{}: hidden_size mismatch", src);
  return c;
}

Status ParseDeepseekConfig(const std::string& text, const std::string& src, ModelConfig* out) {
  const Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("{}: not a JSON object", src);
  ModelConfig& c = *out;
  ASSIGN_OR_RETURN(c.vocab_size, Int(j, src, "vocab_size", 1, true, 0));
  ASSIGN_OR_RETURN(c.hidden_size, Int(j, src, "hidden_size", 1, true, 0));
  ASSIGN_OR_RETURN(c.intermediate_size, Int(j, src, "intermediate_size", 1, true, 0));
  ASSIGN_OR_RETURN(c.num_hidden_layers, Int(j, src, "num_hidden_layers", 1, true, 0));
  ASSIGN_OR_RETURN(c.num_attention_heads, Int(j, src, "num_attention_heads", 1, true, 0));
  ASSIGN_OR_RETURN(c.q_lora_rank, Int(j, src, "q_lora_rank", 1, false, 0));
  ASSIGN_OR_RETURN(c.kv_lora_rank, Int(j, src, "kv_lora_rank", 1, true, 0));
  ASSIGN_OR_RETURN(c.qk_nope_head_dim, Int(j, src, "qk_nope_head_dim", 1, true, 0));
  ASSIGN_OR_RETURN(c.qk_rope_head_dim, Int(j, src, "qk_rope_head_dim", 2, true, 0));
  ASSIGN_OR_RETURN(c.v_head_dim, Int(j, src, "v_head_dim", 1, true, 0));
  ASSIGN_OR_RETURN(c.rms_norm_eps, Num(j, src, "rms_norm_eps", 1e-6));
  ASSIGN_OR_RETURN(c.rope_theta, Num(j, src, "rope_theta", 10000.0));
  ASSIGN_OR_RETURN(c.max_position_embeddings, Int(j, src, "max_position_embeddings", 1, false, 4096));
  ASSIGN_OR_RETURN(c.first_k_dense_replace, Int(j, src, "first_k_dense_replace", 0, false, 0));
  ASSIGN_OR_RETURN(c.moe_layer_freq, Int(j, src, "moe_layer_freq", 1, false, 1));
  ASSIGN_OR_RETURN(c.bos_token_id, Int(j, src, "bos_token_id", 0, false, -1));
  ASSIGN_OR_RETURN(c.eos_token_id, Int(j, src, "eos_token_id", 0, false, -1));
  if (j.contains("tie_word_embeddings") && j.at("tie_word_embeddings").is_boolean()) {
    c.tie_word_embeddings = j.at("tie_word_embeddings").get<bool>();
  }
  if (c.qk_rope_head_dim % 2 != 0) {
    return InvalidArgument("{}: qk_rope_head_dim {} must be even (RoPE rotates pairs)", src,
                           c.qk_rope_head_dim);
  }
  RETURN_IF_ERROR(ReadQuantization(j, src, /*fp8_supported=*/true, &c));
  return ReadYarn(j, src, &c);
}

std::string ModelConfig::MoePrefix(int64_t layer) const {
  return fmt::format("model.layers.{}.{}", layer, moe_block);
}

double ModelConfig::SoftmaxScale() const {
  double scale = 1.0 / std::sqrt(static_cast<double>(q_head_dim()));
  if (yarn.enabled && yarn.mscale_all_dim != 0.0) {
    const double m = YarnGetMscale(yarn.factor, yarn.mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

std::string ModelConfig::Summary() const {
  if (num_key_value_heads > 0) {  // GQA
    std::string attn;
    if (qkv_bias) attn += ", qkv bias";
    if (qk_norm != QkNorm::kNone)
      attn += qk_norm == QkNorm::kPerHead ? ", q/k norm per head" : ", q/k norm whole";
    if (clip_qkv > 0) attn += fmt::format(", clip_qkv {}", clip_qkv);
    return fmt::format("{}: {} layers, H={}, heads={} (kv {}), head_dim={}{}, vocab={}, {}", model_type,
                       num_hidden_layers, hidden_size, num_attention_heads, num_key_value_heads, head_dim,
                       attn, vocab_size, moe.Summary());
  }
  return fmt::format("{}: {} layers, H={}, heads={}, q_lora={}, kv_lora={}, dims {}/{}/{}, vocab={}, {}{}{}",
                     model_type, num_hidden_layers, hidden_size, num_attention_heads, q_lora_rank,
                     kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim, vocab_size, moe.Summary(),
                     yarn.enabled ? fmt::format(", yarn x{}", yarn.factor) : "",
                     fp8_weights ? ", fp8 weights" : "");
}

}  // namespace moerun
