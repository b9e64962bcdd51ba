#include "model/model_config.h"

#include <cmath>
#include <nlohmann/json.hpp>

namespace moerun {
namespace {

using Json = nlohmann::json;

StatusOr<int64_t> Int(const Json& j, const std::string& src, const char* name, int64_t min, bool required,
                      int64_t fallback) {
  if (!j.contains(name) || j.at(name).is_null()) {
    if (required) return InvalidArgument("{}: required field '{}' is missing", src, name);
    return fallback;
  }
  const Json& v = j.at(name);
  if (!v.is_number_integer())
    return InvalidArgument("{}: field '{}' must be an integer, got {}", src, name, v.dump());
  const int64_t x = v.get<int64_t>();
  if (x < min) return InvalidArgument("{}: field '{}' = {} must be >= {}", src, name, x, min);
  if (x > (int64_t{1} << 31)) return InvalidArgument("{}: field '{}' = {} exceeds 2^31", src, name, x);
  return x;
}

StatusOr<double> Num(const Json& j, const std::string& src, const char* name, double fallback) {
  if (!j.contains(name) || j.at(name).is_null()) return fallback;
  const Json& v = j.at(name);
  if (!v.is_number()) return InvalidArgument("{}: field '{}' must be a number, got {}", src, name, v.dump());
  return v.get<double>();
}

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
  if (c.model_type != "deepseek_v2" && c.model_type != "deepseek_v3") {
    return InvalidArgument(
        "{}: model_type '{}' is not a DeepSeek-V2 family model (expected deepseek_v2 or deepseek_v3)", src,
        c.model_type);
  }
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
  RETURN_IF_ERROR(ReadYarn(j, src, &c));
  ASSIGN_OR_RETURN(c.moe, MoeConfig::FromJson(text, src));
  if (c.moe.hidden_size != c.hidden_size) return Internal("{}: hidden_size mismatch", src);
  return c;
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
  return fmt::format("{}: {} layers, H={}, heads={}, q_lora={}, kv_lora={}, dims {}/{}/{}, vocab={}, {}{}",
                     model_type, num_hidden_layers, hidden_size, num_attention_heads, q_lora_rank,
                     kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim, vocab_size, moe.Summary(),
                     yarn.enabled ? fmt::format(", yarn x{}", yarn.factor) : "");
}

}  // namespace moerun
