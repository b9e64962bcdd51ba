#include "moe/moe_config.h"

#include <nlohmann/json.hpp>

namespace moerun {
namespace {

using Json = nlohmann::json;

class FieldReader {
 public:
  FieldReader(const Json& j, const std::string& source) : j_(j), source_(source) {}

  bool Has(const char* name) const { return j_.contains(name) && !j_.at(name).is_null(); }

  StatusOr<int64_t> Int(const char* name, int64_t min_value) const {
    if (!Has(name)) return InvalidArgument("{}: required field '{}' is missing", source_, name);
    const Json& v = j_.at(name);
    if (!v.is_number_integer()) {
      return InvalidArgument("{}: field '{}' must be an integer, got {}", source_, name, v.dump());
    }
    const int64_t x = v.get<int64_t>();
    if (x < min_value)
      return InvalidArgument("{}: field '{}' = {} must be >= {}", source_, name, x, min_value);
    if (x > (int64_t{1} << 24))
      return InvalidArgument("{}: field '{}' = {} exceeds {}", source_, name, x, 1 << 24);
    return x;
  }
  StatusOr<int64_t> IntOr(const char* name, int64_t min_value, int64_t fallback) const {
    if (!Has(name)) return fallback;
    return Int(name, min_value);
  }
  StatusOr<bool> BoolOr(const char* name, bool fallback) const {
    if (!Has(name)) return fallback;
    const Json& v = j_.at(name);
    if (!v.is_boolean())
      return InvalidArgument("{}: field '{}' must be true or false, got {}", source_, name, v.dump());
    return v.get<bool>();
  }
  StatusOr<double> NumberOr(const char* name, double fallback) const {
    if (!Has(name)) return fallback;
    const Json& v = j_.at(name);
    if (!v.is_number())
      return InvalidArgument("{}: field '{}' must be a number, got {}", source_, name, v.dump());
    return v.get<double>();
  }
  StatusOr<std::string> StringOr(const char* name, const std::string& fallback) const {
    if (!Has(name)) return fallback;
    const Json& v = j_.at(name);
    if (!v.is_string())
      return InvalidArgument("{}: field '{}' must be a string, got {}", source_, name, v.dump());
    return v.get<std::string>();
  }

 private:
  const Json& j_;
  const std::string& source_;
};

Status ReadDeepseek(const FieldReader& f, const std::string& source, MoeConfig* c) {
  const bool v3 = c->model_type == "deepseek_v3";
  ASSIGN_OR_RETURN(c->n_routed_experts, f.Int("n_routed_experts", 1));
  ASSIGN_OR_RETURN(int64_t n_shared, f.IntOr("n_shared_experts", 0, 0));
  c->shared_intermediate_size = n_shared * c->moe_intermediate_size;
  ASSIGN_OR_RETURN(std::string method, f.StringOr("topk_method", v3 ? "noaux_tc" : "greedy"));
  if (method == "greedy") {
    c->topk_method = TopkMethod::kGreedy;
  } else if (method == "group_limited_greedy") {
    c->topk_method = TopkMethod::kGroupLimitedGreedy;
  } else if (method == "noaux_tc") {
    c->topk_method = TopkMethod::kNoauxTc;
  } else {
    return InvalidArgument("{}: unknown topk_method '{}' (expected greedy, group_limited_greedy or noaux_tc)",
                           source, method);
  }
  ASSIGN_OR_RETURN(std::string scoring, f.StringOr("scoring_func", v3 ? "sigmoid" : "softmax"));
  if (scoring == "softmax") {
    c->scoring_func = ScoringFunc::kSoftmax;
  } else if (scoring == "sigmoid") {
    c->scoring_func = ScoringFunc::kSigmoid;
  } else {
    return InvalidArgument("{}: unknown scoring_func '{}' (expected softmax or sigmoid)", source, scoring);
  }
  ASSIGN_OR_RETURN(c->n_group, f.IntOr("n_group", 1, 1));
  ASSIGN_OR_RETURN(c->topk_group, f.IntOr("topk_group", 1, 1));
  ASSIGN_OR_RETURN(c->norm_topk_prob, f.BoolOr("norm_topk_prob", v3));
  ASSIGN_OR_RETURN(double scale, f.NumberOr("routed_scaling_factor", v3 ? 2.5 : 1.0));
  c->routed_scaling_factor = static_cast<float>(scale);
  c->scale_after_norm = v3;
  return Status::Ok();
}

Status ReadQwen(const FieldReader& f, MoeConfig* c) {
  ASSIGN_OR_RETURN(c->moe_intermediate_size, f.Int("moe_intermediate_size", 1));
  ASSIGN_OR_RETURN(c->n_routed_experts, f.Int("num_experts", 1));
  if (c->model_type == "qwen2_moe") {
    ASSIGN_OR_RETURN(c->shared_intermediate_size, f.IntOr("shared_expert_intermediate_size", 0, 0));
    c->shared_expert_gated = c->shared_intermediate_size > 0;
  }
  ASSIGN_OR_RETURN(c->norm_topk_prob, f.BoolOr("norm_topk_prob", false));
  return Status::Ok();
}

// Mixtral (MixtralSparseMoeBlock): num_local_experts experts of width intermediate_size, top-k of
// the softmax always renormalised, experts named w1 / w3 / w2. OLMoE (OlmoeSparseMoeBlock):
// num_experts experts of width intermediate_size, renormalised only with norm_topk_prob.
Status ReadMixtralOrOlmoe(const FieldReader& f, MoeConfig* c) {
  ASSIGN_OR_RETURN(c->moe_intermediate_size, f.Int("intermediate_size", 1));
  if (c->model_type == "mixtral") {
    ASSIGN_OR_RETURN(c->n_routed_experts, f.Int("num_local_experts", 1));
    c->norm_topk_prob = true;
    c->expert_names = {.gate = "w1", .up = "w3", .down = "w2"};
  } else {
    ASSIGN_OR_RETURN(c->n_routed_experts, f.Int("num_experts", 1));
    ASSIGN_OR_RETURN(c->norm_topk_prob, f.BoolOr("norm_topk_prob", false));
  }
  return Status::Ok();
}

}  // namespace

const char* TopkMethodName(TopkMethod m) {
  switch (m) {
    case TopkMethod::kGreedy:
      return "greedy";
    case TopkMethod::kGroupLimitedGreedy:
      return "group_limited_greedy";
    case TopkMethod::kNoauxTc:
      return "noaux_tc";
  }
  return "?";
}

StatusOr<MoeConfig> MoeConfig::FromJson(const std::string& text, const std::string& source) {
  const Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgument("{}: not valid JSON", source);
  if (!j.is_object()) return InvalidArgument("{}: expected a JSON object", source);
  FieldReader f(j, source);
  MoeConfig c;
  ASSIGN_OR_RETURN(c.model_type, f.StringOr("model_type", ""));
  ASSIGN_OR_RETURN(c.hidden_size, f.Int("hidden_size", 1));
  ASSIGN_OR_RETURN(c.num_experts_per_tok, f.Int("num_experts_per_tok", 1));
  const std::string& t = c.model_type;
  if (t == "deepseek_v2" || t == "deepseek_v3") {
    ASSIGN_OR_RETURN(c.moe_intermediate_size, f.Int("moe_intermediate_size", 1));
    RETURN_IF_ERROR(ReadDeepseek(f, source, &c));
  } else if (t == "qwen2_moe" || t == "qwen3_moe") {
    RETURN_IF_ERROR(ReadQwen(f, &c));
  } else if (t == "mixtral" || t == "olmoe") {
    RETURN_IF_ERROR(ReadMixtralOrOlmoe(f, &c));
  } else {
    return InvalidArgument("{}: unsupported model_type '{}' (expected {})", source, c.model_type,
                           "deepseek_v2, deepseek_v3, qwen2_moe, qwen3_moe, mixtral or olmoe");
  }
  if (t != "deepseek_v2" && t != "deepseek_v3") {  // plain softmax top-k, no groups, no scaling
    c.topk_method = TopkMethod::kGreedy;
    c.scoring_func = ScoringFunc::kSoftmax;
    // These families renormalise a single expert's weight to 1; the router renormalises only for
    // k > 1 (DeepSeek-V2's rule), so refuse rather than compute another model.
    if (c.norm_topk_prob && c.num_experts_per_tok == 1) {
      return Unimplemented("{}: num_experts_per_tok 1 with norm_topk_prob true is not supported ({})", source,
                           t);
    }
  }
  RETURN_IF_ERROR(c.Validate().WithContext(source));
  return c;
}

Status MoeConfig::Validate() const {
  const int64_t e = n_routed_experts, k = num_experts_per_tok;
  if (k > e) return InvalidArgument("num_experts_per_tok = {} exceeds the {} routed experts", k, e);
  if (n_group < 1 || e % n_group != 0)
    return InvalidArgument("n_group = {} does not divide {} routed experts", n_group, e);
  if (topk_group < 1 || topk_group > n_group) {
    return InvalidArgument("topk_group = {} must be in [1, n_group = {}]", topk_group, n_group);
  }
  if (topk_method != TopkMethod::kGreedy && topk_group * (e / n_group) < k) {
    return InvalidArgument("topk_group = {} groups of {} experts cannot supply num_experts_per_tok = {}",
                           topk_group, e / n_group, k);
  }
  if (topk_method == TopkMethod::kNoauxTc && e / n_group < 2) {
    return InvalidArgument("noaux_tc needs >= 2 experts per group (top-2 group score), got {}", e / n_group);
  }
  if (!(routed_scaling_factor > 0.0f)) {
    return InvalidArgument("routed_scaling_factor = {} must be > 0", routed_scaling_factor);
  }
  return Status::Ok();
}

std::string MoeConfig::Summary() const {
  return fmt::format(
      "{} H={} I={} E={} k={} shared={}{} {} groups={}/{} {} norm_topk_prob={} scale={}", model_type,
      hidden_size, moe_intermediate_size, n_routed_experts, num_experts_per_tok, shared_intermediate_size,
      shared_expert_gated ? " (gated)" : "", TopkMethodName(topk_method), topk_group, n_group,
      scoring_func == ScoringFunc::kSoftmax ? "softmax" : "sigmoid", norm_topk_prob, routed_scaling_factor);
}

}  // namespace moerun
