// The GQA families' llama.cpp GGUF mapping (model/gguf_gqa.h): metadata <-> config.json, GGUF <->
// HF tensor names (with llama's q/k row permutation), and the writer's refusals and tensor plan.
#include "model/gguf_gqa.h"

#include <map>
#include <set>

#include "model/arch.h"
#include "model/gguf_common.h"
#include "model/gguf_spm.h"
#include "model/gguf_vocab.h"

namespace moerun {
namespace {

using namespace gguf_internal;  // NOLINT(build/namespaces,google-build-using-namespace)

struct GqaArchName {
  std::string_view model_type;
  std::string_view arch;
};
constexpr GqaArchName kGqaArchs[] = {
    {"qwen2_moe", "qwen2moe"},
    {"qwen3_moe", "qwen3moe"},
    {"olmoe", "olmoe"},
    {"mixtral", "llama"},
};

std::string_view ModelTypeOf(std::string_view arch) {
  for (const GqaArchName& a : kGqaArchs)
    if (a.arch == arch) return a.model_type;
  return "";
}

// Per-layer GGUF names <-> HF names after "model.layers.N."; "{moe}" is the MoE block prefix
// ("mlp." or Mixtral's "block_sparse_moe.").
constexpr LayerName kGqaLayerNames[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"attn_q_norm.weight", "self_attn.q_norm.weight"},
    {"attn_k_norm.weight", "self_attn.k_norm.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate_inp.weight", "{moe}gate.weight"},
    {"ffn_gate_inp_shexp.weight", "mlp.shared_expert_gate.weight"},
    {"ffn_gate_shexp.weight", "mlp.shared_expert.gate_proj.weight"},
    {"ffn_up_shexp.weight", "mlp.shared_expert.up_proj.weight"},
    {"ffn_down_shexp.weight", "mlp.shared_expert.down_proj.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};

std::string HfLayerName(const LayerName& n, const ModelConfig& c) {
  std::string hf(n.hf);
  if (hf.rfind("{moe}", 0) == 0) hf = c.moe_block + hf.substr(5);
  return hf;
}

// The heads whose q or k rows `part` holds in a llama file (permuted per head); 0 for any other.
int64_t QkHeads(std::string_view arch, std::string_view part, const ModelConfig& c) {
  if (arch != "llama") return 0;
  if (part == "attn_q.weight" || part == "attn_q.bias") return c.num_attention_heads;
  if (part == "attn_k.weight" || part == "attn_k.bias") return c.num_key_value_heads;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Reading

// num_attention_heads, num_key_value_heads, head_dim (full rotary, plain RoPE only).
Status AddAttentionFields(const GgufFile& f, std::string_view arch, OJson* j) {
  auto key = [&](std::string_view suffix) { return ArchKey(arch, suffix); };
  ASSIGN_OR_RETURN(int64_t heads, f.GetInt(key("attention.head_count")));
  if (heads < 1)
    return InvalidArgument("{}: key '{}' = {} must be >= 1", f.path(), key("attention.head_count"), heads);
  (*j)["num_attention_heads"] = heads;
  ASSIGN_OR_RETURN(int64_t kv_heads, f.GetIntOr(key("attention.head_count_kv"), heads));
  (*j)["num_key_value_heads"] = kv_heads;
  const int64_t hidden = (*j)["hidden_size"].get<int64_t>();
  ASSIGN_OR_RETURN(int64_t head_dim, f.GetIntOr(key("attention.key_length"), hidden / heads));
  ASSIGN_OR_RETURN(int64_t v_dim, f.GetIntOr(key("attention.value_length"), head_dim));
  ASSIGN_OR_RETURN(int64_t rot, f.GetIntOr(key("rope.dimension_count"), head_dim));
  if (v_dim != head_dim || rot != head_dim) {
    return Unimplemented(
        "{}: keys '{}' = {} and '{}' = {} must equal '{}' = {} (full rotary, equal k/v heads)", f.path(),
        key("attention.value_length"), v_dim, key("rope.dimension_count"), rot, key("attention.key_length"),
        head_dim);
  }
  (*j)["head_dim"] = head_dim;
  ASSIGN_OR_RETURN(std::string scaling, f.GetStringOr(key("rope.scaling.type"), "none"));
  if (scaling != "none") {
    return Unimplemented("{}: key '{}' = '{}' is not supported for {} (plain RoPE only)", f.path(),
                         key("rope.scaling.type"), scaling, arch);
  }
  return Status::Ok();
}

// The MoE fields of `model_type` (and the Qwen layer rule); `experts` = expert_count.
Status AddMoeFields(const GgufFile& f, std::string_view arch, std::string_view model_type, int64_t experts,
                    OJson* j) {
  auto key = [&](std::string_view suffix) { return ArchKey(arch, suffix); };
  ASSIGN_OR_RETURN(int64_t used, f.GetInt(key("expert_used_count")));
  (*j)["num_experts_per_tok"] = used;
  ASSIGN_OR_RETURN(int64_t ff, f.GetInt(key("feed_forward_length")));
  (*j)["intermediate_size"] = ff;
  if (model_type == "mixtral" || model_type == "olmoe") {
    (*j)[model_type == "mixtral" ? "num_local_experts" : "num_experts"] = experts;
    if (model_type == "olmoe") (*j)["norm_topk_prob"] = false;
    return Status::Ok();
  }
  (*j)["num_experts"] = experts;
  // llama.cpp's fallback when the key is absent: n_ff / n_expert_used.
  ASSIGN_OR_RETURN(int64_t ff_exp, f.GetIntOr(key("expert_feed_forward_length"), used > 0 ? ff / used : 0));
  (*j)["moe_intermediate_size"] = ff_exp;
  (*j)["decoder_sparse_step"] = 1;
  // Layers without a router are dense (moerun reads them; llama.cpp's qwen*moe has none).
  const int64_t layers = (*j)["num_hidden_layers"].get<int64_t>();
  if (layers > static_cast<int64_t>(f.tensors().size())) {
    return InvalidArgument("{}: key '{}' = {} exceeds the file's {} tensors", f.path(), key("block_count"),
                           layers, f.tensors().size());
  }
  OJson dense = OJson::array();
  for (int64_t l = 0; l < layers; ++l) {
    if (f.FindInfo(fmt::format("blk.{}.ffn_gate_inp.weight", l)) == nullptr) dense.push_back(l);
  }
  (*j)["mlp_only_layers"] = dense;
  // llama.cpp renormalises the top-k for qwen3moe and not for qwen2moe, whatever the file says.
  (*j)["norm_topk_prob"] = model_type == "qwen3_moe";
  if (model_type == "qwen2_moe") {
    ASSIGN_OR_RETURN(int64_t ff_sh, f.GetIntOr(key("expert_shared_feed_forward_length"), ff));
    (*j)["shared_expert_intermediate_size"] = ff_sh;
    (*j)["qkv_bias"] = f.FindInfo("blk.0.attn_q.bias") != nullptr;
  }
  return Status::Ok();
}

StatusOr<std::string> ConfigJson(const GgufFile& f) {
  ASSIGN_OR_RETURN(std::string arch, f.GetString("general.architecture"));
  const std::string_view model_type = ModelTypeOf(arch);
  if (model_type.empty()) {
    return InvalidArgument("{}: general.architecture is '{}', expected qwen2moe, qwen3moe, olmoe or llama",
                           f.path(), arch);
  }
  OJson j;
  j["model_type"] = model_type;
  ASSIGN_OR_RETURN(int64_t experts, f.GetIntOr(ArchKey(arch, "expert_count"), 0));
  if (experts < 1) {
    return Unimplemented(
        "{}: key '{}' is {} (absent or 0): a {} file without experts is not a MoE model moerun runs",
        f.path(), ArchKey(arch, "expert_count"), experts, arch);
  }
  RETURN_IF_ERROR(AddCommonHparams(f, arch, &j));
  RETURN_IF_ERROR(AddAttentionFields(f, arch, &j));
  RETURN_IF_ERROR(AddMoeFields(f, arch, model_type, experts, &j));
  RETURN_IF_ERROR(AddTrailingFields(f, &j));
  return j.dump(2);
}

StatusOr<std::unique_ptr<TensorSource>> MakeSource(std::shared_ptr<GgufFile> file, const ModelConfig& c) {
  const GgufFile& f = *file;
  ASSIGN_OR_RETURN(std::string arch, f.GetString("general.architecture"));
  GgufHfSource::Map map;
  auto layer_tensor = [&](const std::string& gguf_name, int64_t, std::string_view part,
                          const std::string& p) -> StatusOr<bool> {
    for (const LayerName& g : kGqaLayerNames) {
      if (part != g.gguf) continue;
      const std::string hf = p + HfLayerName(g, c);
      GgufHfSource::AddDirect(f, gguf_name, hf, &map);
      const int64_t heads = QkHeads(arch, part, c);
      if (heads == 0) return true;
      GgufHfSource::Entry& e = map.at(hf);
      // Checked before the row order is built, so its size is bounded by the file.
      if (e.meta.shape.empty() || e.meta.shape[0] / c.head_dim != heads ||
          e.meta.shape[0] % c.head_dim != 0) {
        return InvalidArgument("{}: tensor '{}' has shape {}, expected {} x {} rows from the metadata",
                               f.path(), gguf_name, ShapeToString(e.meta.shape), heads, c.head_dim);
      }
      e.kind = GgufHfSource::Kind::kRowOrder;
      e.rows = LlamaQkRowOrder(heads, c.head_dim, /*to_gguf=*/false);
      return true;
    }
    const ExpertTensorNames& x = c.moe.expert_names;
    for (const auto& [gguf, hf] :
         {std::pair<std::string_view, const std::string&>{"ffn_gate_exps.weight", x.gate},
          {"ffn_up_exps.weight", x.up},
          {"ffn_down_exps.weight", x.down}}) {
      if (part != gguf) continue;
      const std::string pattern = fmt::format("{}{}experts.{{}}.{}.weight", p, c.moe_block, hf);
      RETURN_IF_ERROR(GgufHfSource::AddExperts(f, gguf_name, pattern, c.moe.n_routed_experts, &map));
      return true;
    }
    return false;
  };
  RETURN_IF_ERROR(MapGgufTensors(f, c.num_hidden_layers, arch, &map, layer_tensor));
  // Every mapped tensor has the shape the metadata implies (named by its GGUF name).
  std::map<std::string, Shape> want;
  for (auto& [name, shape] : ExpectedModelTensors(c)) want.emplace(name, shape);
  for (const auto& [hf, e] : map) {
    auto it = want.find(hf);
    if (it == want.end()) {
      return InvalidArgument("{}: tensor '{}' is not part of this {} configuration (as HF '{}')", f.path(),
                             e.gguf, arch, hf);
    }
    if (it->second != e.meta.shape) {
      return InvalidArgument(
          "{}: tensor '{}' has shape {} (ggml ne reversed{}), expected {} from the metadata", f.path(),
          e.gguf, ShapeToString(e.meta.shape), e.kind == GgufHfSource::Kind::kExpert ? ", one expert" : "",
          ShapeToString(it->second));
    }
  }
  return std::unique_ptr<TensorSource>(new GgufHfSource(std::move(file), std::move(map)));
}

// ---------------------------------------------------------------------------------------------
// Writing

Status Refuse(const ModelConfig& c, std::string_view arch, std::string_view field, const std::string& why) {
  return Unimplemented("config.json: {} cannot be written as llama.cpp '{}': {} ({})", c.model_type, arch,
                       field, why);
}

// What llama.cpp's architecture cannot represent (model/gguf_gqa.h's top comment).
Status CheckRepresentable(const ModelConfig& c, std::string_view arch) {
  const bool qwen = arch == "qwen2moe" || arch == "qwen3moe";
  if (qwen && (c.decoder_sparse_step != 1 || !c.mlp_only_layers.empty())) {
    return Refuse(
        c, arch,
        fmt::format("decoder_sparse_step {} / mlp_only_layers of {}", c.decoder_sparse_step,
                    c.mlp_only_layers.size()),
        "llama.cpp has MoE in every layer: decoder_sparse_step must be 1 and mlp_only_layers empty");
  }
  const bool norm = arch == "qwen3moe" || arch == "llama";
  if (c.moe.norm_topk_prob != norm) {
    return Refuse(c, arch, fmt::format("norm_topk_prob {}", c.moe.norm_topk_prob),
                  fmt::format("llama.cpp always uses norm_topk_prob {} for this architecture", norm));
  }
  if (arch == "qwen2moe" && c.moe.shared_intermediate_size <= 0) {
    return Refuse(c, arch, "shared_expert_intermediate_size 0", "llama.cpp requires the shared expert");
  }
  if (arch == "olmoe" && c.clip_qkv > 0) {
    return Refuse(c, arch, fmt::format("clip_qkv {}", c.clip_qkv),
                  "llama.cpp's olmoe does not clamp q, k, v");
  }
  if (arch == "olmoe" && c.num_key_value_heads != c.num_attention_heads) {
    return Refuse(c, arch,
                  fmt::format("num_key_value_heads {} != num_attention_heads {}", c.num_key_value_heads,
                              c.num_attention_heads),
                  "llama.cpp sizes olmoe's attn_k_norm by n_embd");
  }
  if ((arch == "qwen2moe" || arch == "olmoe") && c.num_attention_heads * c.head_dim != c.hidden_size) {
    return Refuse(c, arch,
                  fmt::format("num_attention_heads {} x head_dim {} != hidden_size {}", c.num_attention_heads,
                              c.head_dim, c.hidden_size),
                  "llama.cpp sizes attn_q and attn_output by n_embd");
  }
  return Status::Ok();
}

Status AddHparamKvs(GgufWriter* w, std::string_view arch, const ModelConfig& c) {
  auto u32 = [&](std::string_view k, int64_t v) {
    return w->AddKv(ArchKey(arch, k), GgufValue::U32(static_cast<uint32_t>(v)));
  };
  auto f32 = [&](std::string_view k, double v) {
    return w->AddKv(ArchKey(arch, k), GgufValue::F32(static_cast<float>(v)));
  };
  const bool qwen = arch == "qwen2moe" || arch == "qwen3moe";
  RETURN_IF_ERROR(u32("vocab_size", c.vocab_size));
  RETURN_IF_ERROR(u32("context_length", c.max_position_embeddings));
  RETURN_IF_ERROR(u32("embedding_length", c.hidden_size));
  RETURN_IF_ERROR(u32("block_count", c.num_hidden_layers));
  // Qwen: the dense width (the experts' is expert_feed_forward_length); OLMoE / Mixtral: the experts'.
  RETURN_IF_ERROR(u32("feed_forward_length",
                      qwen && c.intermediate_size > 0 ? c.intermediate_size : c.moe.moe_intermediate_size));
  RETURN_IF_ERROR(u32("attention.head_count", c.num_attention_heads));
  RETURN_IF_ERROR(u32("attention.head_count_kv", c.num_key_value_heads));
  RETURN_IF_ERROR(u32("attention.key_length", c.head_dim));
  RETURN_IF_ERROR(u32("attention.value_length", c.head_dim));
  RETURN_IF_ERROR(u32("rope.dimension_count", c.head_dim));
  RETURN_IF_ERROR(f32("rope.freq_base", c.rope_theta));
  RETURN_IF_ERROR(f32("attention.layer_norm_rms_epsilon", c.rms_norm_eps));
  RETURN_IF_ERROR(u32("expert_count", c.moe.n_routed_experts));
  RETURN_IF_ERROR(u32("expert_used_count", c.moe.num_experts_per_tok));
  if (qwen) RETURN_IF_ERROR(u32("expert_feed_forward_length", c.moe.moe_intermediate_size));
  if (arch == "qwen2moe")
    RETURN_IF_ERROR(u32("expert_shared_feed_forward_length", c.moe.shared_intermediate_size));
  return Status::Ok();
}

// The tensors in llama.cpp's order.
Status PlanTensors(const ModelConfig& c, std::string_view arch, TensorPlan* plan) {
  RETURN_IF_ERROR(plan->Copy("token_embd.weight", "model.embed_tokens.weight"));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string g = fmt::format("blk.{}.", l), p = fmt::format("model.layers.{}.", l);
    for (const LayerName& n : kGqaLayerNames) {
      const std::string_view part = n.gguf;
      const bool bias = EndsWith(part, ".bias"),
                 qk_norm = part == "attn_q_norm.weight" || part == "attn_k_norm.weight";
      const bool shexp = part.find("_shexp") != std::string_view::npos;
      const bool dense = part == "ffn_gate.weight" || part == "ffn_up.weight" || part == "ffn_down.weight";
      if (dense || (bias && !c.qkv_bias) || (qk_norm && c.qk_norm == QkNorm::kNone) ||
          (shexp && c.moe.shared_intermediate_size <= 0)) {
        continue;
      }
      const std::string gname = g + std::string(part), hname = p + HfLayerName(n, c);
      if (const int64_t heads = QkHeads(arch, part, c); heads == 0) {
        RETURN_IF_ERROR(plan->Copy(gname, hname));
      } else {
        RETURN_IF_ERROR(
            plan->CopyRowOrder(gname, hname, LlamaQkRowOrder(heads, c.head_dim, /*to_gguf=*/true)));
      }
      if (part == "ffn_gate_inp.weight") {
        const ExpertTensorNames& x = c.moe.expert_names;
        RETURN_IF_ERROR(plan->Experts(g, p + c.moe_block, x.gate, x.up, x.down, c.moe.n_routed_experts));
      }
    }
  }
  RETURN_IF_ERROR(plan->Copy("output_norm.weight", "model.norm.weight"));
  // qwen2moe and olmoe require output.weight (qwen3moe and llama fall back to token_embd): a tied
  // model gets a copy of the embeddings there.
  const bool needs_output = arch == "qwen2moe" || arch == "olmoe";
  if (!c.tie_word_embeddings) {
    RETURN_IF_ERROR(plan->Copy("output.weight", "lm_head.weight"));
  } else if (needs_output) {
    RETURN_IF_ERROR(plan->Copy("output.weight", "model.embed_tokens.weight"));
  }
  return Status::Ok();
}

}  // namespace

std::string_view GqaGgufArch(std::string_view model_type) {
  for (const GqaArchName& a : kGqaArchs)
    if (a.model_type == model_type) return a.arch;
  return "";
}

bool IsGqaGgufArch(std::string_view arch) { return !ModelTypeOf(arch).empty(); }

std::vector<int64_t> LlamaQkRowOrder(int64_t heads, int64_t head_dim, bool to_gguf) {
  std::vector<int64_t> order(static_cast<size_t>(heads * head_dim));
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t j = 0; j < half; ++j) {
      for (int64_t t = 0; t < 2; ++t) {
        const int64_t gguf = h * head_dim + 2 * j + t, hf = h * head_dim + t * half + j;
        order[static_cast<size_t>(to_gguf ? gguf : hf)] = to_gguf ? hf : gguf;
      }
    }
  }
  return order;
}

StatusOr<std::string> GqaConfigJsonFromGguf(const GgufFile& file) { return ConfigJson(file); }

StatusOr<std::unique_ptr<TensorSource>> MakeGqaTensorSource(std::shared_ptr<GgufFile> file,
                                                            const ModelConfig& config) {
  return MakeSource(std::move(file), config);
}

Status WriteGqaGguf(const TensorSource& hf, const std::string& config_json, const std::string& tokenizer_json,
                    const std::string& tokenizer_config_json, const GgufWriteOptions& options,
                    const std::string& out_path) {
  RETURN_IF_ERROR(CheckTargetType(options.target, out_path));
  ASSIGN_OR_RETURN(ModelConfig c, ModelConfig::FromJson(config_json, "config.json"));
  const std::string_view arch = GqaGgufArch(c.model_type);
  if (arch.empty()) {
    return Unimplemented("config.json: model_type '{}' has no llama.cpp GQA architecture here", c.model_type);
  }
  RETURN_IF_ERROR(CheckRepresentable(c, arch));
  // Tokenizer: byte-level BPE as gpt2 (Qwen: pre qwen2; OLMoE: olmo or dbrx), Mixtral's SentencePiece-style
  // BPE as llama.cpp's llama (SPM) vocabulary.
  const bool spm = arch == "llama" && IsSpmStyleTokenizer(tokenizer_json);
  TokenizerKvs tk;
  SpmVocab spm_vocab;
  if (spm) {
    ASSIGN_OR_RETURN(spm_vocab, SpmVocabFromHf(tokenizer_json, tokenizer_config_json, c.vocab_size, c));
  } else {
    // llama.cpp takes any `pre` with any architecture: the family's own name first (OLMoE's GPT-2
    // regex is "olmo"), then every other one moerun knows.
    std::vector<std::string_view> pres = {"qwen2", "dbrx", "deepseek-llm", "deepseek-v3", "gpt-2"};
    if (arch == "olmoe") pres.insert(pres.begin(), "olmo");
    ASSIGN_OR_RETURN(tk, ConvertTokenizer(tokenizer_json, tokenizer_config_json, c.vocab_size, c, pres));
  }
  TensorPlan plan(hf, options.target);
  RETURN_IF_ERROR(PlanTensors(c, arch, &plan));
  RETURN_IF_ERROR(plan.CheckAllUsed(arch));

  ASSIGN_OR_RETURN(std::unique_ptr<GgufWriter> w, GgufWriter::Create(out_path));
  RETURN_IF_ERROR(AddGeneralKvs(w.get(), arch, options));
  RETURN_IF_ERROR(AddHparamKvs(w.get(), arch, c));
  RETURN_IF_ERROR(spm ? AddSpmKvs(w.get(), spm_vocab) : AddTokenizerKvs(w.get(), tk));
  RETURN_IF_ERROR(plan.Write(w.get()));
  return w->Finish();
}

}  // namespace moerun
