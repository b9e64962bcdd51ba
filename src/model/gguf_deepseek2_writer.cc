// The deepseek2 GGUF writer of model/gguf_deepseek2.h (WriteDeepseek2Gguf): the deepseek2 keys and the
// tensor plan (split kv_b, merged experts); the row encoder, type rules and tokenizer conversion are
// shared with the other architectures (model/gguf_common.h).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <type_traits>
#include <vector>

#include "core/checked_math.h"
#include "io/atomic_file.h"
#include "model/gguf_deepseek2.h"
#include "model/gguf_deepseek2_names.h"

namespace moerun {

// ---------------------------------------------------------------------------------------------
// (d) writer

namespace {

using namespace gguf_deepseek2_internal;  // NOLINT(build/namespaces,google-build-using-namespace)

}  // namespace

DType Deepseek2GgufTensorType(const std::string& name, const Shape& shape, DType target) {
  return GgufTensorType(name, shape, target);
}

Status WriteDeepseek2Gguf(const TensorSource& hf, const std::string& config_json,
                          const std::string& tokenizer_json, const std::string& tokenizer_config_json,
                          const Deepseek2GgufOptions& options, const std::string& out_path) {
  const DType target = options.target;
  RETURN_IF_ERROR(CheckTargetType(target, out_path));
  ASSIGN_OR_RETURN(ModelConfig c, ModelConfig::FromJson(config_json, "config.json"));
  if (c.model_type != "deepseek_v2" && c.model_type != "deepseek_v3") {
    return Unimplemented(
        "config.json: model_type '{}' cannot be written as a llama.cpp deepseek2 GGUF "
        "(deepseek_v2 and deepseek_v3 only)",
        c.model_type);
  }
  const Json raw = Json::parse(config_json, nullptr, false);
  if (c.moe_layer_freq != 1) {
    return Unimplemented(
        "config.json: moe_layer_freq {} (llama.cpp's deepseek2 has MoE in every layer after the "
        "leading dense ones)",
        c.moe_layer_freq);
  }
  if (c.yarn.enabled && c.yarn.mscale != c.yarn.mscale_all_dim) {
    return Unimplemented(
        "config.json: rope_scaling mscale {} != mscale_all_dim {}: llama.cpp's deepseek2 assumes "
        "they are equal and cannot represent this model",
        c.yarn.mscale, c.yarn.mscale_all_dim);
  }
  ASSIGN_OR_RETURN(TokenizerKvs tk, ConvertTokenizer(tokenizer_json, tokenizer_config_json, c.vocab_size, c,
                                                     {"deepseek-llm", "deepseek-v3"}));

  ASSIGN_OR_RETURN(std::unique_ptr<GgufWriter> w, GgufWriter::Create(out_path));
  auto u32 = [&](std::string_view key, int64_t v) {
    return w->AddKv(Key(key), GgufValue::U32(static_cast<uint32_t>(v)));
  };
  auto f32 = [&](std::string_view key, double v) {
    return w->AddKv(Key(key), GgufValue::F32(static_cast<float>(v)));
  };
  RETURN_IF_ERROR(AddGeneralKvs(w.get(), kArch, options));
  RETURN_IF_ERROR(u32("block_count", c.num_hidden_layers));
  RETURN_IF_ERROR(u32("context_length", c.max_position_embeddings));
  RETURN_IF_ERROR(u32("embedding_length", c.hidden_size));
  RETURN_IF_ERROR(u32("feed_forward_length", c.intermediate_size));
  RETURN_IF_ERROR(u32("attention.head_count", c.num_attention_heads));
  RETURN_IF_ERROR(u32("attention.head_count_kv", 1));  // MLA as MQA over the latent
  RETURN_IF_ERROR(f32("rope.freq_base", c.rope_theta));
  RETURN_IF_ERROR(f32("attention.layer_norm_rms_epsilon", c.rms_norm_eps));
  RETURN_IF_ERROR(u32("expert_count", c.moe.n_routed_experts));
  RETURN_IF_ERROR(u32("expert_used_count", c.moe.num_experts_per_tok));
  if (raw.contains("n_group") && !raw["n_group"].is_null())
    RETURN_IF_ERROR(u32("expert_group_count", c.moe.n_group));
  if (raw.contains("topk_group") && !raw["topk_group"].is_null()) {
    RETURN_IF_ERROR(u32("expert_group_used_count", c.moe.topk_group));
  }
  RETURN_IF_ERROR(u32("expert_gating_func",
                      c.moe.scoring_func == ScoringFunc::kSigmoid ? kGatingSigmoid : kGatingSoftmax));
  RETURN_IF_ERROR(u32("leading_dense_block_count", c.first_k_dense_replace));
  RETURN_IF_ERROR(u32("vocab_size", c.vocab_size));
  // Always written, 0 for a plain q_proj: llama.cpp requires the key unless block_count is one of
  // its known "lite" sizes (26, 27), and a 0 selects attn_q. (convert_hf_to_gguf.py omits it for
  // V2-Lite, which llama.cpp recognises by its 27 layers.)
  RETURN_IF_ERROR(u32("attention.q_lora_rank", c.q_lora_rank));
  RETURN_IF_ERROR(u32("attention.kv_lora_rank", c.kv_lora_rank));
  RETURN_IF_ERROR(u32("attention.key_length", c.kv_lora_rank + c.qk_rope_head_dim));
  RETURN_IF_ERROR(u32("attention.value_length", c.kv_lora_rank));
  RETURN_IF_ERROR(u32("attention.key_length_mla", c.qk_nope_head_dim + c.qk_rope_head_dim));
  RETURN_IF_ERROR(u32("attention.value_length_mla", c.v_head_dim));
  RETURN_IF_ERROR(u32("expert_feed_forward_length", c.moe.moe_intermediate_size));
  const int64_t n_shared =
      c.moe.moe_intermediate_size > 0 ? c.moe.shared_intermediate_size / c.moe.moe_intermediate_size : 0;
  RETURN_IF_ERROR(u32("expert_shared_count", n_shared));
  RETURN_IF_ERROR(f32("expert_weights_scale", c.moe.routed_scaling_factor));
  if (c.moe.norm_topk_prob) RETURN_IF_ERROR(w->AddKv(Key("expert_weights_norm"), GgufValue::Bool(true)));
  RETURN_IF_ERROR(u32("rope.dimension_count", c.qk_rope_head_dim));
  if (c.yarn.enabled) {
    RETURN_IF_ERROR(w->AddKv(Key("rope.scaling.type"), GgufValue::String("yarn")));
    RETURN_IF_ERROR(f32("rope.scaling.factor", c.yarn.factor));
    RETURN_IF_ERROR(u32("rope.scaling.original_context_length", c.yarn.original_max_position));
    RETURN_IF_ERROR(f32("rope.scaling.yarn_beta_fast", c.yarn.beta_fast));
    RETURN_IF_ERROR(f32("rope.scaling.yarn_beta_slow", c.yarn.beta_slow));
    if (c.yarn.mscale_all_dim != 0.0)
      RETURN_IF_ERROR(f32("rope.scaling.yarn_log_multiplier", 0.1 * c.yarn.mscale_all_dim));
  }
  RETURN_IF_ERROR(AddTokenizerKvs(w.get(), tk));

  // The tensors, in the order llama.cpp lists them.
  TensorPlan plan(hf, target);
  RETURN_IF_ERROR(plan.Copy("token_embd.weight", "model.embed_tokens.weight"));
  const int64_t nh = c.num_attention_heads, r = c.kv_lora_rank, dn = c.qk_nope_head_dim, dv = c.v_head_dim;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string g = fmt::format("blk.{}.", l), p = fmt::format("model.layers.{}.", l);
    const bool moe = l >= c.first_k_dense_replace;
    for (const LayerName& n : kLayerNames) {
      const std::string gname = g + std::string(n.gguf), hname = p + std::string(n.hf);
      if (n.gguf == "attn_kv_b.weight") {
        ASSIGN_OR_RETURN(const TensorMeta* m, plan.Need(hname));
        if (m->shape != Shape{nh * (dn + dv), r}) {
          return InvalidArgument("{}: tensor '{}' has shape {}, expected [{}, {}]", hf.path(), hname,
                                 ShapeToString(m->shape), nh * (dn + dv), r);
        }
        // convert_hf_to_gguf.py (since llama.cpp's MLA, PR #12801) writes only the split form:
        // attn_k_b [nh, r, dn] (K rows transposed per head) and attn_v_b [nh, dv, r].
        for (const bool k : {true, false}) {
          const std::string name = g + (k ? "attn_k_b.weight" : "attn_v_b.weight");
          const Shape shape = k ? Shape{nh, r, dn} : Shape{nh, dv, r};
          const DType type = plan.TypeFor(name, shape);
          auto write = [&hf, hname, type, k, nh, r, dn, dv](GgufWriter* out, std::vector<float>* row,
                                                            std::vector<uint8_t>* buf) -> Status {
            ASSIGN_OR_RETURN(Tensor x, hf.Get(hname));
            ASSIGN_OR_RETURN(Tensor kv, x.ToF32());  // block types dequantise
            const float* kvp = kv.data<float>();
            const int64_t rows = k ? r : dv, cols = k ? dn : r;
            row->resize(static_cast<size_t>(cols));
            for (int64_t h = 0; h < nh; ++h) {
              for (int64_t i = 0; i < rows; ++i) {
                for (int64_t j = 0; j < cols; ++j) {
                  // K: row i = latent index, col j = nope dim; V: row i = v dim, col j = latent index.
                  (*row)[static_cast<size_t>(j)] =
                      k ? kvp[(h * (dn + dv) + j) * r + i] : kvp[(h * (dn + dv) + dn + i) * r + j];
                }
                RETURN_IF_ERROR(AppendRow(out, type, row->data(), cols, buf));
              }
            }
            return Status::Ok();
          };
          plan.Add({name, type, shape, PlannedTensor::Kind::kCustom, hname, {}, write});
        }
        continue;
      }
      const bool dense_part =
          n.gguf == "ffn_gate.weight" || n.gguf == "ffn_up.weight" || n.gguf == "ffn_down.weight";
      const bool moe_part = n.gguf == "ffn_gate_inp.weight" || n.gguf == "exp_probs_b.bias" ||
                            n.gguf.find("_shexp") != std::string_view::npos;
      if ((dense_part && moe) || (moe_part && !moe)) continue;
      if (!hf.Has(hname)) {
        const bool optional = n.gguf == "exp_probs_b.bias" || n.gguf.find("attn_q") == 0 ||
                              (n.gguf.find("_shexp") != std::string_view::npos && n_shared == 0);
        if (optional) continue;
      }
      RETURN_IF_ERROR(plan.Copy(gname, hname));
    }
    if (moe)
      RETURN_IF_ERROR(
          plan.Experts(g, p + "mlp.", "gate_proj", "up_proj", "down_proj", c.moe.n_routed_experts));
  }
  RETURN_IF_ERROR(plan.Copy("output_norm.weight", "model.norm.weight"));
  if (!c.tie_word_embeddings) RETURN_IF_ERROR(plan.Copy("output.weight", "lm_head.weight"));
  RETURN_IF_ERROR(plan.CheckAllUsed(kArch));
  RETURN_IF_ERROR(plan.Write(w.get()));
  return w->Finish();
}

std::string_view DeepseekLlmPreTokenizerJson() { return kDeepseekLlmPreTokenizer; }

}  // namespace moerun
