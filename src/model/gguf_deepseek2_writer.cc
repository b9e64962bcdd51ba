// The deepseek2 GGUF writer of model/gguf_deepseek2.h (WriteDeepseek2Gguf and its type rules). About
// 550 lines: the HF tokenizer -> tokenizer.ggml.* conversion and the streaming tensor writer belong to
// one file format and are tested together (tests/model/gguf_deepseek2_test.cc).
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

#if __has_include("core/block_quant.h")
#include "core/block_quant.h"
#define MOERUN_HAVE_BLOCK_QUANT 1
#endif

namespace moerun {

// ---------------------------------------------------------------------------------------------
// (d) writer

namespace {

using namespace gguf_deepseek2_internal;  // NOLINT(build/namespaces)

// llama.cpp's llama_ftype for general.file_type.
uint32_t FileType(DType target) {
  switch (target) {
    case DType::kF32:
      return 0;  // ALL_F32
    case DType::kF16:
      return 1;  // MOSTLY_F16
    case DType::kQ4_0:
      return 2;  // MOSTLY_Q4_0
    case DType::kQ8_0:
      return 7;  // MOSTLY_Q8_0
    case DType::kQ4_K:
      return 14;  // MOSTLY_Q4_K_S
    case DType::kQ6_K:
      return 18;  // MOSTLY_Q6_K
    case DType::kBF16:
      return 32;  // MOSTLY_BF16
    default:
      return 0;
  }
}

// What llama.cpp's convert_hf_to_gguf.py's does_token_look_special() calls special.
bool LooksSpecial(std::string_view t) {
  auto wrapped = [&](std::string_view open, std::string_view close) {
    return t.size() >= open.size() + close.size() && t.substr(0, open.size()) == open && EndsWith(t, close);
  };
  return t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]" || wrapped("<|", "|>") ||
         wrapped("<\xef\xbd\x9c", "\xef\xbd\x9c>") || wrapped("<unused", ">");
}

struct TokenizerKvs {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<std::string> merges;
  std::string pre;
  int64_t bos = -1, eos = -1, pad = -1;
  bool add_bos = false, add_eos = false;
  std::string chat_template;
};

StatusOr<std::optional<std::string>> TokenContent(const Json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return std::optional<std::string>();
  if (it->is_string()) return std::optional<std::string>(it->get<std::string>());
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return std::optional<std::string>((*it)["content"].get<std::string>());
  }
  return InvalidArgument("tokenizer_config.json: '{}' must be a string or {{\"content\": ...}}", key);
}

// The Regex patterns of a pre-tokenizer's Split steps, in order (a Sequence or a single Split).
std::vector<std::string> SplitRegexes(const Json& pre) {
  std::vector<std::string> out;
  const auto one = [&](const Json& p) {
    if (p.is_object() && p.value("type", "") == "Split" && p.contains("pattern") &&
        p["pattern"].is_object() && p["pattern"].contains("Regex") && p["pattern"]["Regex"].is_string()) {
      out.push_back(p["pattern"]["Regex"].get<std::string>());
    }
  };
  if (pre.is_object() && pre.value("type", "") == "Sequence" && pre.contains("pretokenizers") &&
      pre["pretokenizers"].is_array()) {
    for (const Json& p : pre["pretokenizers"]) one(p);
  } else {
    one(pre);
  }
  return out;
}

StatusOr<TokenizerKvs> ConvertTokenizer(const std::string& tok_text, const std::string& cfg_text,
                                        int64_t vocab_size, const ModelConfig& c) {
  const Json tok = Json::parse(tok_text, nullptr, /*allow_exceptions=*/false);
  if (tok.is_discarded() || !tok.is_object()) return InvalidArgument("tokenizer.json: not a JSON object");
  const Json cfg = cfg_text.empty() ? Json::object() : Json::parse(cfg_text, nullptr, false);
  if (cfg.is_discarded() || !cfg.is_object())
    return InvalidArgument("tokenizer_config.json: not a JSON object");
  TokenizerKvs k;
  const Json& model = tok.contains("model") ? tok["model"] : Json();
  if (!model.is_object() || model.value("type", "") != "BPE" || !model.contains("vocab") ||
      !model["vocab"].is_object()) {
    return Unimplemented(
        "tokenizer.json: model must be a BPE model with a vocab (llama.cpp's gpt2 tokenizer)");
  }
  // The pre-tokenizer decides llama.cpp's tokenizer.ggml.pre; convert_hf_to_gguf.py hashes the
  // ids of a check text instead, which needs transformers: comparing the regexes is equivalent
  // for the two DeepSeek tokenizers.
  // Only the Split regexes are compared (in order): the digit step may be a Digits pre-tokenizer or
  // a \p{N}+ Split, and flags such as "invert" may be spelled out or not.
  const std::vector<std::string> regexes =
      SplitRegexes(tok.contains("pre_tokenizer") ? tok["pre_tokenizer"] : Json());
  const std::vector<std::string> llm = SplitRegexes(Json::parse(kDeepseekLlmPreTokenizer));
  std::vector<std::string> llm_split_digits = llm;
  llm_split_digits.push_back("\\p{N}+");
  const std::vector<std::string> v3 = SplitRegexes(Json::parse(kDeepseekV3PreTokenizer));
  if (regexes == llm || regexes == llm_split_digits) {
    k.pre = "deepseek-llm";
  } else if (regexes == v3) {
    k.pre = "deepseek-v3";
  } else {
    return Unimplemented(
        "tokenizer.json: pre_tokenizer is neither DeepSeek-LLM/V2's nor DeepSeek-V3's, so llama.cpp's "
        "tokenizer.ggml.pre is unknown");
  }
  std::vector<std::optional<std::pair<std::string, int32_t>>> by_id(static_cast<size_t>(vocab_size));
  auto place = [&](const std::string& content, int64_t id, int32_t type) -> Status {
    if (id < 0 || id >= vocab_size) {
      return InvalidArgument("tokenizer.json: token '{}' has id {}, outside the config's vocab_size {}",
                             content, id, vocab_size);
    }
    by_id[static_cast<size_t>(id)] = std::make_pair(content, type);
    return Status::Ok();
  };
  for (const auto& [content, id] : model["vocab"].items()) {
    if (!id.is_number_integer())
      return InvalidArgument("tokenizer.json: vocab '{}' is not an integer id", content);
    RETURN_IF_ERROR(place(content, id.get<int64_t>(), kNormal));
  }
  if (tok.contains("added_tokens") && tok["added_tokens"].is_array()) {
    for (const Json& a : tok["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a.contains("content") || !a["id"].is_number_integer() ||
          !a["content"].is_string()) {
        return InvalidArgument(
            "tokenizer.json: added_tokens entries need an integer id and a string content");
      }
      const std::string content = a["content"].get<std::string>();
      const bool special = a.value("special", false) || LooksSpecial(content);
      RETURN_IF_ERROR(place(content, a["id"].get<int64_t>(), special ? kControl : kUserDefined));
    }
  }
  for (size_t i = 0; i < by_id.size(); ++i) {
    if (by_id[i]) {
      k.tokens.push_back(by_id[i]->first);
      k.types.push_back(by_id[i]->second);
    } else {
      k.tokens.push_back(fmt::format("[PAD{}]", i));
      k.types.push_back(kUnused);
    }
  }
  const Json& merges = model.contains("merges") ? model["merges"] : Json::array();
  for (const Json& m : merges) {
    if (m.is_string()) {
      k.merges.push_back(m.get<std::string>());
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      k.merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    } else {
      return InvalidArgument("tokenizer.json: a merge is neither \"a b\" nor [\"a\", \"b\"]");
    }
  }
  auto id_of = [&](const std::string& content) -> int64_t {
    for (size_t i = 0; i < k.tokens.size(); ++i) {
      if (k.types[i] != kUnused && k.tokens[i] == content) return static_cast<int64_t>(i);
    }
    return -1;
  };
  // gguf-py SpecialVocab: tokenizer_config.json's tokens first, then config.json's ids.
  ASSIGN_OR_RETURN(auto bos, TokenContent(cfg, "bos_token"));
  ASSIGN_OR_RETURN(auto eos, TokenContent(cfg, "eos_token"));
  ASSIGN_OR_RETURN(auto pad, TokenContent(cfg, "pad_token"));
  k.bos = bos ? id_of(*bos) : c.bos_token_id;
  k.eos = eos ? id_of(*eos) : c.eos_token_id;
  k.pad = pad ? id_of(*pad) : -1;
  k.add_bos = cfg.value("add_bos_token", false);
  k.add_eos = cfg.value("add_eos_token", false);
  if (cfg.contains("chat_template") && cfg["chat_template"].is_string()) {
    k.chat_template = cfg["chat_template"].get<std::string>();
  }
  return k;
}

// One tensor of the output: its GGUF name, type, shape and how to produce its rows.
struct Planned {
  std::string name;
  DType type;
  Shape shape;
  enum class Kind { kCopy, kExperts, kFusedGate, kFusedUp, kKB, kVB } kind = Kind::kCopy;
  // kCopy: the HF tensor; kExperts: "model.layers.N.mlp.experts.{}.<proj>.weight"; kFused*: the
  // transformers-v5 experts.gate_up_proj [E, 2I, H] (gate rows first); kKB/kVB: kv_b_proj.
  std::string hf;
};

// f()'s Status, or OK when f returns nothing.
template <typename F>
Status StatusOfCall(F&& f) {
  if constexpr (std::is_same_v<std::invoke_result_t<F>, Status>) {
    return f();
  } else {
    f();
    return Status::Ok();
  }
}

// Encodes one f32 row as `type` and appends it.
Status AppendRow(GgufWriter* w, DType type, const float* row, int64_t n, std::vector<uint8_t>* buf) {
  switch (type) {
    case DType::kF32:
      return w->Append(row, static_cast<size_t>(n) * sizeof(float));
    case DType::kF16:
    case DType::kBF16: {
      buf->resize(static_cast<size_t>(n) * 2);
      auto* out = reinterpret_cast<uint16_t*>(buf->data());
      for (int64_t i = 0; i < n; ++i) out[i] = type == DType::kF16 ? F32ToF16(row[i]) : F32ToBf16(row[i]);
      return w->Append(buf->data(), buf->size());
    }
    default:
#ifdef MOERUN_HAVE_BLOCK_QUANT
    {
      buf->resize(DTypeRowBytes(type, n));
      void* dst = buf->data();
      // core/block_quant.h's QuantizeRow(DType, const float*, int64_t, void*), whether it returns
      // a Status or nothing.
      RETURN_IF_ERROR(StatusOfCall([&] { return QuantizeRow(type, row, n, dst); }));
      return w->Append(buf->data(), buf->size());
    }
#else
      return Unimplemented("writing {} rows needs core/block_quant.h (QuantizeRow), not built in yet",
                           DTypeName(type));
#endif
  }
}

// Appends rows [begin, end) of `t` (F32/BF16/F16, any rank, rows along the last dim; end < 0:
// all rows) converted to `type`.
Status AppendTensor(GgufWriter* w, const Tensor& t, DType type, const std::string& name,
                    std::vector<float>* f32, std::vector<uint8_t>* buf, int64_t begin = 0, int64_t end = -1) {
  if (!IsFloat(t.dtype()) && !IsBlockDType(t.dtype())) {
    return InvalidArgument("tensor '{}' has dtype {}, expected a float or GGUF block type", name,
                           DTypeName(t.dtype()));
  }
  const int64_t cols = t.rank() == 0 ? 1 : t.dim(t.rank() - 1);
  const int64_t rows = cols == 0 ? 0 : t.numel() / cols;
  if (end < 0) end = rows;
  f32->resize(static_cast<size_t>(cols));
  const auto* p = static_cast<const uint8_t*>(t.raw());
  const size_t row_bytes = DTypeRowBytes(t.dtype(), cols);
  if (t.dtype() == type) {  // already in the target type (e.g. make-model's random blocks): as is
    return w->Append(p + static_cast<size_t>(begin) * row_bytes,
                     static_cast<size_t>(end - begin) * row_bytes);
  }
  for (int64_t r = begin; r < end; ++r) {
    ConvertToF32(t.dtype(), p + static_cast<size_t>(r) * row_bytes, f32->data(), static_cast<size_t>(cols));
    RETURN_IF_ERROR(AppendRow(w, type, f32->data(), cols, buf));
  }
  return Status::Ok();
}

}  // namespace

DType Deepseek2GgufTensorType(const std::string& name, const Shape& shape, DType target) {
  // convert_hf_to_gguf.py: 1-D tensors, norms, the router (ffn_gate_inp) and anything not
  // named *.weight stay F32.
  if (shape.size() <= 1 || EndsWith(name, "_norm.weight") ||
      name.find(".ffn_gate_inp.") != std::string::npos || !EndsWith(name, ".weight")) {
    return DType::kF32;
  }
  return GgufMatrixType(target, shape.back());
}

DType GgufMatrixType(DType target, int64_t cols) {
  DType t = target;
  if (IsBlockDType(t) && cols % DTypeBlockSize(t) != 0) {
    // llama.cpp's fallback (llama-quant.cpp): Q4_K -> Q5_0 (moerun: Q8_0), Q6_K -> Q8_0, then F16.
    if (t == DType::kQ4_K || t == DType::kQ6_K) t = DType::kQ8_0;
    if (cols % DTypeBlockSize(t) != 0) t = DType::kF16;
  }
  return t;
}

Status WriteDeepseek2Gguf(const TensorSource& hf, const std::string& config_json,
                          const std::string& tokenizer_json, const std::string& tokenizer_config_json,
                          const Deepseek2GgufOptions& options, const std::string& out_path) {
  const DType target = options.target;
  if (target != DType::kF32 && target != DType::kF16 && target != DType::kBF16 &&
      (!IsBlockDType(target) || IsLoadOnlyDType(target))) {
    return InvalidArgument("{}: target type {} is not one of F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K",
                           out_path, DTypeName(target));
  }
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
  ASSIGN_OR_RETURN(TokenizerKvs tk, ConvertTokenizer(tokenizer_json, tokenizer_config_json, c.vocab_size, c));

  ASSIGN_OR_RETURN(std::unique_ptr<GgufWriter> w, GgufWriter::Create(out_path));
  auto u32 = [&](std::string_view key, int64_t v) {
    return w->AddKv(Key(key), GgufValue::U32(static_cast<uint32_t>(v)));
  };
  auto f32 = [&](std::string_view key, double v) {
    return w->AddKv(Key(key), GgufValue::F32(static_cast<float>(v)));
  };
  RETURN_IF_ERROR(w->AddKv("general.architecture", GgufValue::String(std::string(kArch))));
  RETURN_IF_ERROR(w->AddKv("general.type", GgufValue::String("model")));
  if (!options.name.empty()) RETURN_IF_ERROR(w->AddKv("general.name", GgufValue::String(options.name)));
  RETURN_IF_ERROR(w->AddKv("general.file_type", GgufValue::U32(FileType(target))));
  RETURN_IF_ERROR(w->AddKv("general.quantization_version", GgufValue::U32(2)));
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
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.model", GgufValue::String("gpt2")));
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.pre", GgufValue::String(tk.pre)));
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.tokens", GgufValue::StringArray(tk.tokens)));
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.token_type", GgufValue::I32Array(tk.types)));
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.merges", GgufValue::StringArray(tk.merges)));
  if (tk.bos >= 0)
    RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.bos_token_id", GgufValue::U32(static_cast<uint32_t>(tk.bos))));
  if (tk.eos >= 0)
    RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.eos_token_id", GgufValue::U32(static_cast<uint32_t>(tk.eos))));
  if (tk.pad >= 0) {
    RETURN_IF_ERROR(
        w->AddKv("tokenizer.ggml.padding_token_id", GgufValue::U32(static_cast<uint32_t>(tk.pad))));
  }
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.add_bos_token", GgufValue::Bool(tk.add_bos)));
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.add_eos_token", GgufValue::Bool(tk.add_eos)));
  if (!tk.chat_template.empty())
    RETURN_IF_ERROR(w->AddKv("tokenizer.chat_template", GgufValue::String(tk.chat_template)));

  // The tensors, in the order llama.cpp lists them.
  std::vector<Planned> plan;
  std::set<std::string> used;
  auto need = [&](const std::string& hf_name) -> StatusOr<const TensorMeta*> {
    const TensorMeta* m = hf.Find(hf_name);
    if (m == nullptr) return NotFound("{}: tensor '{}' is missing", hf.path(), hf_name);
    used.insert(hf_name);
    return m;
  };
  auto copy = [&](const std::string& gguf, const std::string& hf_name) -> Status {
    ASSIGN_OR_RETURN(const TensorMeta* m, need(hf_name));
    plan.push_back(
        {gguf, Deepseek2GgufTensorType(gguf, m->shape, target), m->shape, Planned::Kind::kCopy, hf_name});
    return Status::Ok();
  };
  RETURN_IF_ERROR(copy("token_embd.weight", "model.embed_tokens.weight"));
  const int64_t nh = c.num_attention_heads, r = c.kv_lora_rank, dn = c.qk_nope_head_dim, dv = c.v_head_dim;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string g = fmt::format("blk.{}.", l), p = fmt::format("model.layers.{}.", l);
    const bool moe = l >= c.first_k_dense_replace;
    for (const LayerName& n : kLayerNames) {
      const std::string gname = g + std::string(n.gguf), hname = p + std::string(n.hf);
      if (n.gguf == "attn_kv_b.weight") {
        ASSIGN_OR_RETURN(const TensorMeta* m, need(hname));
        if (m->shape != Shape{nh * (dn + dv), r}) {
          return InvalidArgument("{}: tensor '{}' has shape {}, expected [{}, {}]", hf.path(), hname,
                                 ShapeToString(m->shape), nh * (dn + dv), r);
        }
        // convert_hf_to_gguf.py (since llama.cpp's MLA, PR #12801) writes only the split form:
        // attn_k_b [nh, r, dn] (K rows transposed per head) and attn_v_b [nh, dv, r].
        const Shape kb{nh, r, dn}, vb{nh, dv, r};
        plan.push_back({g + "attn_k_b.weight", Deepseek2GgufTensorType(g + "attn_k_b.weight", kb, target), kb,
                        Planned::Kind::kKB, hname});
        plan.push_back({g + "attn_v_b.weight", Deepseek2GgufTensorType(g + "attn_v_b.weight", vb, target), vb,
                        Planned::Kind::kVB, hname});
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
      RETURN_IF_ERROR(copy(gname, hname));
    }
    if (!moe) continue;
    const std::string fused_gate_up = p + "mlp.experts.gate_up_proj",
                      fused_down = p + "mlp.experts.down_proj";
    const bool fused = hf.Has(fused_gate_up) || hf.Has(fused_down);
    for (const LayerName& n : kExpertNames) {
      const std::string gname = g + std::string(n.gguf);
      if (fused) {
        const bool down = n.hf == "down_proj";
        ASSIGN_OR_RETURN(const TensorMeta* m, need(down ? fused_down : fused_gate_up));
        if (m->shape.size() != 3 || m->shape[0] != c.moe.n_routed_experts ||
            (!down && m->shape[1] % 2 != 0)) {
          return InvalidArgument("{}: tensor '{}' has shape {}, expected [{}, {}rows, cols]", hf.path(),
                                 m->name, ShapeToString(m->shape), c.moe.n_routed_experts,
                                 down ? "" : "2 x ");
        }
        const Shape shape{m->shape[0], down ? m->shape[1] : m->shape[1] / 2, m->shape[2]};
        const Planned::Kind kind =
            down ? Planned::Kind::kCopy
                 : (n.hf == "gate_proj" ? Planned::Kind::kFusedGate : Planned::Kind::kFusedUp);
        plan.push_back({gname, Deepseek2GgufTensorType(gname, shape, target), shape, kind, m->name});
        continue;
      }
      const std::string first = fmt::format("{}mlp.experts.0.{}.weight", p, n.hf);
      ASSIGN_OR_RETURN(const TensorMeta* m, need(first));
      for (int64_t e = 1; e < c.moe.n_routed_experts; ++e) {
        ASSIGN_OR_RETURN(const TensorMeta* me, need(fmt::format("{}mlp.experts.{}.{}.weight", p, e, n.hf)));
        if (me->shape != m->shape) {
          return InvalidArgument("{}: tensor '{}' has shape {}, expert 0 has {}", hf.path(), me->name,
                                 ShapeToString(me->shape), ShapeToString(m->shape));
        }
      }
      const Shape shape{c.moe.n_routed_experts, m->shape[0], m->shape[1]};
      plan.push_back({gname, Deepseek2GgufTensorType(gname, shape, target), shape, Planned::Kind::kExperts,
                      fmt::format("{}mlp.experts.{{}}.{}.weight", p, n.hf)});
    }
  }
  RETURN_IF_ERROR(copy("output_norm.weight", "model.norm.weight"));
  if (!c.tie_word_embeddings) RETURN_IF_ERROR(copy("output.weight", "lm_head.weight"));
  for (const std::string& name : hf.Names()) {
    if (used.count(name) == 0) {
      return InvalidArgument("{}: tensor '{}' has no place in a llama.cpp deepseek2 GGUF of this config",
                             hf.path(), name);
    }
  }
  for (const Planned& t : plan) RETURN_IF_ERROR(w->AddTensor(t.name, t.type, t.shape));

  std::vector<float> row;
  std::vector<uint8_t> buf;
  for (const Planned& t : plan) {
    switch (t.kind) {
      case Planned::Kind::kCopy: {
        ASSIGN_OR_RETURN(Tensor x, hf.Get(t.hf));
        RETURN_IF_ERROR(AppendTensor(w.get(), x, t.type, t.hf, &row, &buf));
        break;
      }
      case Planned::Kind::kExperts:
        for (int64_t e = 0; e < t.shape[0]; ++e) {
          const std::string name = fmt::vformat(t.hf, fmt::make_format_args(e));
          ASSIGN_OR_RETURN(Tensor x, hf.Get(name));
          RETURN_IF_ERROR(AppendTensor(w.get(), x, t.type, name, &row, &buf));
        }
        break;
      case Planned::Kind::kFusedGate:
      case Planned::Kind::kFusedUp: {
        ASSIGN_OR_RETURN(Tensor x, hf.Get(t.hf));
        const int64_t i = t.shape[1], first = t.kind == Planned::Kind::kFusedGate ? 0 : i;
        for (int64_t e = 0; e < t.shape[0]; ++e) {
          RETURN_IF_ERROR(
              AppendTensor(w.get(), x, t.type, t.hf, &row, &buf, e * 2 * i + first, e * 2 * i + first + i));
        }
        break;
      }
      case Planned::Kind::kKB:
      case Planned::Kind::kVB: {
        ASSIGN_OR_RETURN(Tensor x, hf.Get(t.hf));
        ASSIGN_OR_RETURN(Tensor kv, x.ToF32());  // block types dequantise
        const float* kvp = kv.data<float>();
        const bool k = t.kind == Planned::Kind::kKB;
        const int64_t rows = k ? r : dv, cols = k ? dn : r;
        row.resize(static_cast<size_t>(cols));
        for (int64_t h = 0; h < nh; ++h) {
          for (int64_t i = 0; i < rows; ++i) {
            for (int64_t j = 0; j < cols; ++j) {
              // K: row i = latent index, col j = nope dim; V: row i = v dim, col j = latent index.
              row[static_cast<size_t>(j)] =
                  k ? kvp[(h * (dn + dv) + j) * r + i] : kvp[(h * (dn + dv) + dn + i) * r + j];
            }
            RETURN_IF_ERROR(AppendRow(w.get(), t.type, row.data(), cols, &buf));
          }
        }
        break;
      }
    }
  }
  return w->Finish();
}

std::string_view DeepseekLlmPreTokenizerJson() { return kDeepseekLlmPreTokenizer; }

}  // namespace moerun
