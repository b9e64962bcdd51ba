// The deepseek2 GGUF reader side of model/gguf_deepseek2.h: config.json from the metadata, the tensor
// source under HF names, the tokenizer. (The writer is gguf_deepseek2_writer.cc.) About 460 lines: the
// config, name and tokenizer mappings of one format, each next to its checks.
#include "model/gguf_deepseek2.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <type_traits>
#include <vector>

#include "core/checked_math.h"
#include "io/atomic_file.h"
#include "model/gguf_deepseek2_names.h"

namespace moerun {
namespace {

using namespace gguf_deepseek2_internal;  // NOLINT(build/namespaces,google-build-using-namespace)

// ---------------------------------------------------------------------------------------------
// (a) config

StatusOr<std::string> ConfigJson(const GgufFile& f) {
  ASSIGN_OR_RETURN(std::string arch, f.GetString("general.architecture"));
  if (arch != kArch) {
    return InvalidArgument("{}: general.architecture is '{}', expected '{}'", f.path(), arch, kArch);
  }
  OJson j;
  ASSIGN_OR_RETURN(int64_t gating, f.GetIntOr(Key("expert_gating_func"), 0));
  if (gating != 0 && gating != kGatingSoftmax && gating != kGatingSigmoid) {
    return Unimplemented("{}: key '{}' = {} is not softmax (1) or sigmoid (2)", f.path(),
                         Key("expert_gating_func"), gating);
  }
  bool has_bias = false;
  for (const GgufTensorInfo& t : f.tensors()) has_bias = has_bias || EndsWith(t.name, ".exp_probs_b.bias");
  ASSIGN_OR_RETURN(int64_t n_group, f.GetIntOr(Key("expert_group_count"), 1));
  ASSIGN_OR_RETURN(int64_t topk_group, f.GetIntOr(Key("expert_group_used_count"), 1));
  // GGUF does not record topk_method; llama.cpp routes by the gating function, the bias and the
  // groups, so this is the HF method that matches what llama.cpp computes.
  const bool v3 = gating == kGatingSigmoid && has_bias;
  const char* method = v3 ? "noaux_tc" : (n_group > 1 ? "group_limited_greedy" : "greedy");
  j["architectures"] = OJson::array({v3 ? "DeepseekV3ForCausalLM" : "DeepseekV2ForCausalLM"});
  j["model_type"] = v3 ? "deepseek_v3" : "deepseek_v2";
  RETURN_IF_ERROR(AddCommonHparams(f, kArch, &j));
  ASSIGN_OR_RETURN(int64_t ff, f.GetInt(Key("feed_forward_length")));
  j["intermediate_size"] = ff;
  ASSIGN_OR_RETURN(int64_t ff_exp, f.GetInt(Key("expert_feed_forward_length")));
  j["moe_intermediate_size"] = ff_exp;
  ASSIGN_OR_RETURN(int64_t heads, f.GetInt(Key("attention.head_count")));
  j["num_attention_heads"] = heads;
  j["num_key_value_heads"] = heads;
  ASSIGN_OR_RETURN(int64_t experts, f.GetInt(Key("expert_count")));
  j["n_routed_experts"] = experts;
  ASSIGN_OR_RETURN(int64_t shared, f.GetIntOr(Key("expert_shared_count"), 0));
  j["n_shared_experts"] = shared;
  ASSIGN_OR_RETURN(int64_t used, f.GetInt(Key("expert_used_count")));
  j["num_experts_per_tok"] = used;
  ASSIGN_OR_RETURN(int64_t dense, f.GetIntOr(Key("leading_dense_block_count"), 0));
  j["first_k_dense_replace"] = dense;
  j["moe_layer_freq"] = 1;
  ASSIGN_OR_RETURN(int64_t kv_lora, f.GetInt(Key("attention.kv_lora_rank")));
  j["kv_lora_rank"] = kv_lora;
  ASSIGN_OR_RETURN(int64_t q_lora, f.GetIntOr(Key("attention.q_lora_rank"), 0));
  j["q_lora_rank"] = q_lora > 0 ? OJson(q_lora) : OJson(nullptr);
  ASSIGN_OR_RETURN(int64_t rope_dim, f.GetInt(Key("rope.dimension_count")));
  // key_length_mla / value_length_mla since llama.cpp's MLA conversion (key_length then holds
  // kv_lora_rank + rope); older files store the per-head sizes in key_length / value_length.
  const bool mla = f.FindKey(Key("attention.key_length_mla")) != nullptr;
  ASSIGN_OR_RETURN(int64_t k_len, f.GetInt(Key(mla ? "attention.key_length_mla" : "attention.key_length")));
  ASSIGN_OR_RETURN(int64_t v_len,
                   f.GetInt(Key(mla ? "attention.value_length_mla" : "attention.value_length")));
  if (k_len <= rope_dim) {
    return InvalidArgument("{}: key length {} must exceed {} = {}", f.path(), k_len,
                           Key("rope.dimension_count"), rope_dim);
  }
  j["qk_nope_head_dim"] = k_len - rope_dim;
  j["qk_rope_head_dim"] = rope_dim;
  j["v_head_dim"] = v_len;
  ASSIGN_OR_RETURN(std::string scaling, f.GetStringOr(Key("rope.scaling.type"), "none"));
  if (scaling == "yarn") {
    OJson rs;
    rs["type"] = "yarn";
    ASSIGN_OR_RETURN(double factor, f.GetFloat(Key("rope.scaling.factor")));
    rs["factor"] = factor;
    ASSIGN_OR_RETURN(int64_t orig, f.GetInt(Key("rope.scaling.original_context_length")));
    rs["original_max_position_embeddings"] = orig;
    ASSIGN_OR_RETURN(double beta_fast, f.GetFloatOr(Key("rope.scaling.yarn_beta_fast"), 32.0));
    ASSIGN_OR_RETURN(double beta_slow, f.GetFloatOr(Key("rope.scaling.yarn_beta_slow"), 1.0));
    rs["beta_fast"] = beta_fast;
    rs["beta_slow"] = beta_slow;
    // convert_hf_to_gguf.py stores 0.1 * mscale_all_dim; llama.cpp divides by 0.1 on load and
    // assumes mscale == mscale_all_dim (so the cos/sin factor is 1).
    ASSIGN_OR_RETURN(double log_mul, f.GetFloatOr(Key("rope.scaling.yarn_log_multiplier"), 0.0));
    const double m = static_cast<double>(static_cast<float>(log_mul / 0.1));
    rs["mscale"] = m;
    rs["mscale_all_dim"] = m;
    j["rope_scaling"] = rs;
  } else if (scaling != "none") {
    return Unimplemented("{}: key '{}' = '{}' is not supported (only yarn or none)", f.path(),
                         Key("rope.scaling.type"), scaling);
  }
  j["topk_method"] = method;
  j["n_group"] = n_group;
  j["topk_group"] = topk_group;
  j["scoring_func"] = gating == kGatingSigmoid ? "sigmoid" : "softmax";
  ASSIGN_OR_RETURN(bool norm, f.GetBoolOr(Key("expert_weights_norm"), false));
  j["norm_topk_prob"] = norm;
  ASSIGN_OR_RETURN(double scale, f.GetFloatOr(Key("expert_weights_scale"), 1.0));
  j["routed_scaling_factor"] = scale;
  RETURN_IF_ERROR(AddTrailingFields(f, &j));
  return j.dump(2);
}

// ---------------------------------------------------------------------------------------------
// (b) tensors

// kv_b [nh * (dn + dv), r] from k_b [nh, r, dn] (transposed per head) and v_b [nh, dv, r].
StatusOr<Tensor> RebuildKvB(const GgufFile& f, const std::string& k_b, const std::string& v_b,
                            const Shape& shape) {
  ASSIGN_OR_RETURN(Tensor kb, f.Get(k_b));
  ASSIGN_OR_RETURN(Tensor vb, f.Get(v_b));
  ASSIGN_OR_RETURN(Tensor k, kb.ToF32());
  ASSIGN_OR_RETURN(Tensor v, vb.ToF32());
  const int64_t nh = k.dim(0), r = k.dim(1), dn = k.dim(2), dv = v.dim(1);
  ASSIGN_OR_RETURN(Tensor out, Tensor::Zeros(DType::kF32, shape));
  float* o = out.data<float>();
  const float* kp = k.data<float>();
  const float* vp = v.data<float>();
  for (int64_t h = 0; h < nh; ++h) {
    for (int64_t d = 0; d < dn; ++d) {
      for (int64_t j = 0; j < r; ++j) o[(h * (dn + dv) + d) * r + j] = kp[(h * r + j) * dn + d];
    }
    for (int64_t d = 0; d < dv; ++d) {
      for (int64_t j = 0; j < r; ++j) o[(h * (dn + dv) + dn + d) * r + j] = vp[(h * dv + d) * r + j];
    }
  }
  return out;
}

StatusOr<std::unique_ptr<TensorSource>> MakeSource(std::shared_ptr<GgufFile> file, const ModelConfig& c) {
  const GgufFile& f = *file;
  GgufHfSource::Map map;
  std::map<int64_t, std::pair<std::string, std::string>> kv_split;  // layer -> (k_b, v_b)
  auto layer_tensor = [&](const std::string& gguf_name, int64_t layer, std::string_view part,
                          const std::string& hf_prefix) -> StatusOr<bool> {
    for (const LayerName& g : kLayerNames) {
      if (part != g.gguf) continue;
      GgufHfSource::AddDirect(f, gguf_name, hf_prefix + std::string(g.hf), &map);
      return true;
    }
    for (const LayerName& g : kExpertNames) {
      if (part != g.gguf) continue;
      RETURN_IF_ERROR(GgufHfSource::AddExperts(f, gguf_name,
                                               hf_prefix + "mlp.experts.{}." + std::string(g.hf) + ".weight",
                                               c.moe.n_routed_experts, &map));
      return true;
    }
    if (part == "attn_k_b.weight" || part == "attn_v_b.weight") {
      if (Deepseek2TensorUnused(f, gguf_name)) return true;  // attn_kv_b itself is served as stored
      (part == "attn_k_b.weight" ? kv_split[layer].first : kv_split[layer].second) = gguf_name;
      return true;
    }
    return false;
  };
  RETURN_IF_ERROR(MapGgufTensors(f, c.num_hidden_layers, kArch, &map, layer_tensor));
  const int64_t nh = c.num_attention_heads, r = c.kv_lora_rank, dn = c.qk_nope_head_dim, dv = c.v_head_dim;
  GgufHfSource::Map internal;
  for (const auto& [layer, kv] : kv_split) {
    const std::string hf = fmt::format("model.layers.{}.self_attn.kv_b_proj.weight", layer);
    if (kv.first.empty() || kv.second.empty()) {
      return InvalidArgument("{}: layer {} has {} but not {}", f.path(), layer,
                             kv.first.empty() ? kv.second : kv.first,
                             kv.first.empty() ? fmt::format("blk.{}.attn_k_b.weight", layer)
                                              : fmt::format("blk.{}.attn_v_b.weight", layer));
    }
    RETURN_IF_ERROR(CheckShape(f, kv.first, f.FindInfo(kv.first)->shape(), {nh, r, dn}));
    RETURN_IF_ERROR(CheckShape(f, kv.second, f.FindInfo(kv.second)->shape(), {nh, dv, r}));
    GgufHfSource::Entry e;
    e.meta = TensorMeta{hf, DType::kF32, Shape{nh * (dn + dv), r}};
    e.kind = GgufHfSource::Kind::kComputed;
    e.compute = [file, k_b = kv.first, v_b = kv.second, shape = e.meta.shape] {
      return RebuildKvB(*file, k_b, v_b, shape);
    };
    map.emplace(hf, std::move(e));
    // The halves as stored, for the model's row ops (not listed: they duplicate kv_b_proj).
    for (const auto& [name, gguf] : {std::pair{Deepseek2SplitKbName(layer), kv.first},
                                     std::pair{Deepseek2SplitVbName(layer), kv.second}}) {
      GgufHfSource::AddDirect(f, gguf, name, &internal);
    }
  }
  return std::unique_ptr<TensorSource>(
      new GgufHfSource(std::move(file), std::move(map), std::move(internal)));
}

}  // namespace

std::string Deepseek2SplitKbName(int64_t layer) {
  return fmt::format("model.layers.{}.self_attn.k_b_proj.weight", layer);
}
std::string Deepseek2SplitVbName(int64_t layer) {
  return fmt::format("model.layers.{}.self_attn.v_b_proj.weight", layer);
}

bool Deepseek2TensorUnused(const GgufFile& f, std::string_view gguf_name) {
  for (std::string_view half : {".attn_k_b.weight", ".attn_v_b.weight"}) {
    if (!gguf_name.starts_with("blk.") || !gguf_name.ends_with(half)) continue;
    const std::string_view layer = gguf_name.substr(4, gguf_name.size() - 4 - half.size());
    return f.FindInfo(fmt::format("blk.{}.attn_kv_b.weight", layer)) != nullptr;
  }
  return false;
}

namespace {

// ---------------------------------------------------------------------------------------------
// (c) tokenizer

StatusOr<HfTokenizerText> Tokenizer(const GgufFile& f) {
  ASSIGN_OR_RETURN(std::string model, f.GetString("tokenizer.ggml.model"));
  if (model != "gpt2") {
    return Unimplemented(
        "{}: tokenizer.ggml.model '{}' is not supported for deepseek2 (only gpt2 byte-level BPE)", f.path(),
        model);
  }
  return ReadGpt2Tokenizer(f);
}

}  // namespace

StatusOr<std::string> Deepseek2ConfigJsonFromGguf(const GgufFile& file) { return ConfigJson(file); }

StatusOr<HfTokenizerText> Deepseek2TokenizerFromGguf(const GgufFile& file) { return Tokenizer(file); }

StatusOr<std::unique_ptr<TensorSource>> MakeDeepseek2TensorSource(std::shared_ptr<GgufFile> file,
                                                                  const ModelConfig& config) {
  return MakeSource(std::move(file), config);
}

StatusOr<GgufDeepseek2> OpenGgufDeepseek2(const std::string& path) {
  GgufDeepseek2 m;
  ASSIGN_OR_RETURN(m.file, GgufFile::Open(path));
  ASSIGN_OR_RETURN(m.config_json, ConfigJson(*m.file));
  ASSIGN_OR_RETURN(m.config, ModelConfig::FromJson(m.config_json, path + " (metadata as config.json)"));
  ASSIGN_OR_RETURN(m.tensors, MakeSource(m.file, m.config));
  if (m.file->FindKey("tokenizer.ggml.tokens") != nullptr) {
    ASSIGN_OR_RETURN(m.tokenizer, Tokenizer(*m.file));
  }
  return m;
}

}  // namespace moerun
