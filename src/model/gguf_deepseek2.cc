#include "model/gguf_deepseek2.h"

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

#if __has_include("core/block_quant.h")
#include "core/block_quant.h"
#define MOERUN_HAVE_BLOCK_QUANT 1
#endif

namespace moerun {
namespace {

using Json = nlohmann::json;
using OJson = nlohmann::ordered_json;

constexpr std::string_view kArch = "deepseek2";

// gguf-py TokenType.
enum TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};
// gguf-py ExpertGatingFuncType.
constexpr int64_t kGatingSoftmax = 1, kGatingSigmoid = 2;

// Generated from tests/tokenizer/testdata/make_synthetic.py's DeepSeek LLM pre-tokenizer (HF form) and
// llama.cpp's LLAMA_VOCAB_PRE_TYPE_DEEPSEEK3_LLM regexes (HF form). ASCII JSON with \u escapes.
constexpr std::string_view kDeepseekLlmPreTokenizer =
    R"json({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"[\r\n]"},"behavior":"Isolate)json"
    R"json(d","invert":false},{"type":"Split","pattern":{"Regex":"\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u)json"
    R"json(00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386)json"
    R"json(\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u1)json"
    R"json(3a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f1)json"
    R"json(5\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1)json"
    R"json(fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6)json"
    R"json(-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u213)json"
    R"json(9\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua6)json"
    R"json(40-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17)json"
    R"json(\uff21-\uff3a\uff41-\uff5a\ud801\udc00-\ud801\udc4f\ud801\udcb0-\ud801\udcd3\ud801\udcd8-\ud801\udcf)json"
    R"json(b\ud803\udc80-\ud803\udcb2\ud803\udcc0-\ud803\udcf2\ud806\udca0-\ud806\udcdf\ud83a\udd00-\ud83a\udd4)json"
    R"json(3]+"},"behavior":"Isolated","invert":false},{"type":"Split","pattern":{"Regex":"\\s?[!-/:-~\uff01-\u)json"
    R"json(ff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+"},"behavior":"Isolated","invert":false},{"type":"Split)json"
    R"json(","pattern":{"Regex":"\\s+$"},"behavior":"Isolated","invert":false},{"type":"Split","pattern":{"Rege)json"
    R"json(x":"[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"},"behavior":"Isolated","invert":false},{"type":"Digi)json"
    R"json(ts","individual_digits":true},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_)json"
    R"json(regex":false}]})json";
constexpr std::string_view kDeepseekV3PreTokenizer =
    R"json({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"\\p{N}{1,3}"},"behavior":"Is)json"
    R"json(olated","invert":false},{"type":"Split","pattern":{"Regex":"[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff)json"
    R"json(]+"},"behavior":"Isolated","invert":false},{"type":"Split","pattern":{"Regex":"[!\"#$%&'()*+,\\-./:;)json"
    R"json(<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|)json"
    R"json(\\s*[\r\n]+|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix)json"
    R"json(_space":false,"trim_offsets":true,"use_regex":false}]})json";

std::string Key(std::string_view suffix) { return fmt::format("{}.{}", kArch, suffix); }

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool IsFloat(DType t) { return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16; }

// Per-layer GGUF tensor name (after "blk.N.") <-> HF name (after "model.layers.N.").
struct LayerName {
  std::string_view gguf;
  std::string_view hf;
};
constexpr LayerName kLayerNames[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_q_a.weight", "self_attn.q_a_proj.weight"},
    {"attn_q_a_norm.weight", "self_attn.q_a_layernorm.weight"},
    {"attn_q_b.weight", "self_attn.q_b_proj.weight"},
    {"attn_kv_a_mqa.weight", "self_attn.kv_a_proj_with_mqa.weight"},
    {"attn_kv_a_norm.weight", "self_attn.kv_a_layernorm.weight"},
    {"attn_kv_b.weight", "self_attn.kv_b_proj.weight"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
    {"ffn_gate_inp.weight", "mlp.gate.weight"},
    {"exp_probs_b.bias", "mlp.gate.e_score_correction_bias"},
    {"ffn_gate_shexp.weight", "mlp.shared_experts.gate_proj.weight"},
    {"ffn_up_shexp.weight", "mlp.shared_experts.up_proj.weight"},
    {"ffn_down_shexp.weight", "mlp.shared_experts.down_proj.weight"},
};
// Merged 3-D expert tensors [E, rows, cols] <-> HF "mlp.experts.{e}.<proj>.weight".
constexpr LayerName kExpertNames[] = {
    {"ffn_gate_exps.weight", "gate_proj"},
    {"ffn_up_exps.weight", "up_proj"},
    {"ffn_down_exps.weight", "down_proj"},
};
constexpr LayerName kGlobalNames[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

// "blk.12.attn_q.weight" -> (12, "attn_q.weight").
std::optional<std::pair<int64_t, std::string_view>> SplitBlockName(std::string_view name) {
  constexpr std::string_view kPrefix = "blk.";
  if (name.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  name.remove_prefix(kPrefix.size());
  const size_t dot = name.find('.');
  if (dot == 0 || dot == std::string_view::npos || dot > 6) return std::nullopt;
  int64_t layer = 0;
  for (char ch : name.substr(0, dot)) {
    if (ch < '0' || ch > '9') return std::nullopt;
    layer = layer * 10 + (ch - '0');
  }
  return std::make_pair(layer, name.substr(dot + 1));
}

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
  int64_t vocab = -1;
  if (f.FindKey(Key("vocab_size")) != nullptr) {
    ASSIGN_OR_RETURN(vocab, f.GetInt(Key("vocab_size")));
  } else if (const GgufTensorInfo* embd = f.FindInfo("token_embd.weight"); embd && embd->ne.size() == 2) {
    vocab = embd->ne[1];
  } else {
    ASSIGN_OR_RETURN(std::vector<std::string> tokens, f.GetStringArray("tokenizer.ggml.tokens"));
    vocab = static_cast<int64_t>(tokens.size());
  }
  j["vocab_size"] = vocab;
  ASSIGN_OR_RETURN(int64_t hidden, f.GetInt(Key("embedding_length")));
  j["hidden_size"] = hidden;
  ASSIGN_OR_RETURN(int64_t ff, f.GetInt(Key("feed_forward_length")));
  j["intermediate_size"] = ff;
  ASSIGN_OR_RETURN(int64_t ff_exp, f.GetInt(Key("expert_feed_forward_length")));
  j["moe_intermediate_size"] = ff_exp;
  ASSIGN_OR_RETURN(int64_t layers, f.GetInt(Key("block_count")));
  j["num_hidden_layers"] = layers;
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
  ASSIGN_OR_RETURN(double eps, f.GetFloat(Key("attention.layer_norm_rms_epsilon")));
  j["rms_norm_eps"] = eps;
  ASSIGN_OR_RETURN(double theta, f.GetFloatOr(Key("rope.freq_base"), 10000.0));
  j["rope_theta"] = theta;
  ASSIGN_OR_RETURN(int64_t ctx, f.GetIntOr(Key("context_length"), 4096));
  j["max_position_embeddings"] = ctx;
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
  ASSIGN_OR_RETURN(int64_t bos, f.GetIntOr("tokenizer.ggml.bos_token_id", -1));
  ASSIGN_OR_RETURN(int64_t eos, f.GetIntOr("tokenizer.ggml.eos_token_id", -1));
  if (bos >= 0) j["bos_token_id"] = bos;
  if (eos >= 0) j["eos_token_id"] = eos;
  j["tie_word_embeddings"] = f.FindInfo("output.weight") == nullptr;
  j["hidden_act"] = "silu";
  return j.dump(2);
}

// ---------------------------------------------------------------------------------------------
// (b) tensors

class Deepseek2Source : public TensorSource {
 public:
  enum class Kind { kDirect, kExpert, kKvB };
  struct Entry {
    TensorMeta meta;
    Kind kind = Kind::kDirect;
    std::string gguf;    // source tensor (kDirect, kExpert) or k_b (kKvB)
    std::string v_b;     // kKvB
    int64_t expert = 0;  // kExpert
  };

  // `internal`: entries Get/Find serve but Names() does not list (Deepseek2SplitKbName / VbName).
  Deepseek2Source(std::shared_ptr<GgufFile> file, std::map<std::string, Entry, std::less<>> map,
                  std::map<std::string, Entry, std::less<>> internal)
      : file_(std::move(file)), map_(std::move(map)), internal_(std::move(internal)) {}

  StatusOr<Tensor> Get(std::string_view name) const override {
    auto it = map_.find(name);
    if (it == map_.end()) {
      it = internal_.find(name);
      if (it == internal_.end()) return NotFound("{}: no tensor '{}' (as HF name)", file_->path(), name);
    }
    const Entry& e = it->second;
    switch (e.kind) {
      case Kind::kDirect:
        return file_->Get(e.gguf);
      case Kind::kExpert: {
        ASSIGN_OR_RETURN(Tensor all, file_->Get(e.gguf));
        Tensor row = all.Rows(e.expert, e.expert + 1);
        auto keep = std::make_shared<Tensor>(all);
        return Tensor::View(all.dtype(), e.meta.shape, row.raw(),
                            std::shared_ptr<const void>(keep, keep.get()));
      }
      case Kind::kKvB:
        return RebuildKvB(e);
    }
    return Internal("unreachable");
  }
  const TensorMeta* Find(std::string_view name) const override {
    auto it = map_.find(name);
    if (it != map_.end()) return &it->second.meta;
    it = internal_.find(name);
    return it == internal_.end() ? nullptr : &it->second.meta;
  }
  std::vector<std::string> Names() const override {
    std::vector<std::string> names;
    names.reserve(map_.size());
    for (const auto& [name, unused] : map_) names.push_back(name);
    return names;
  }
  const std::string& path() const override { return file_->path(); }
  void ReleaseResidentPages() const override { file_->ReleaseResidentPages(); }

 private:
  // kv_b [nh * (dn + dv), r] from k_b [nh, r, dn] (transposed per head) and v_b [nh, dv, r].
  StatusOr<Tensor> RebuildKvB(const Entry& e) const {
    ASSIGN_OR_RETURN(Tensor kb, file_->Get(e.gguf));
    ASSIGN_OR_RETURN(Tensor vb, file_->Get(e.v_b));
    ASSIGN_OR_RETURN(Tensor k, kb.ToF32());
    ASSIGN_OR_RETURN(Tensor v, vb.ToF32());
    const int64_t nh = k.dim(0), r = k.dim(1), dn = k.dim(2), dv = v.dim(1);
    ASSIGN_OR_RETURN(Tensor out, Tensor::Zeros(DType::kF32, e.meta.shape));
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

  std::shared_ptr<GgufFile> file_;
  std::map<std::string, Entry, std::less<>> map_;
  std::map<std::string, Entry, std::less<>> internal_;
};

Status CheckShape(const GgufFile& f, const std::string& name, const Shape& got, const Shape& want) {
  if (got == want) return Status::Ok();
  return InvalidArgument("{}: tensor '{}' has shape {} (ggml ne reversed), expected {} from the metadata",
                         f.path(), name, ShapeToString(got), ShapeToString(want));
}

StatusOr<std::unique_ptr<TensorSource>> MakeSource(std::shared_ptr<GgufFile> file, const ModelConfig& c) {
  const GgufFile& f = *file;
  std::map<std::string, Deepseek2Source::Entry, std::less<>> map;
  std::map<int64_t, std::pair<std::string, std::string>> kv_split;  // layer -> (k_b, v_b)
  std::set<int64_t> has_kv_b;
  for (const GgufTensorInfo& info : f.tensors()) {
    const TensorMeta* meta = f.Find(info.name);
    if (meta == nullptr) {
      return f.Get(info.name).status();  // Unimplemented naming the tensor and its ggml type
    }
    bool mapped = false;
    for (const LayerName& g : kGlobalNames) {
      if (info.name == g.gguf) {
        Deepseek2Source::Entry e;
        e.meta = TensorMeta{std::string(g.hf), meta->dtype, meta->shape};
        e.gguf = info.name;
        map.emplace(e.meta.name, std::move(e));
        mapped = true;
      }
    }
    const auto block = SplitBlockName(info.name);
    if (!mapped && block && block->first < c.num_hidden_layers) {
      const auto [layer, part] = *block;
      const std::string hf_prefix = fmt::format("model.layers.{}.", layer);
      for (const LayerName& g : kLayerNames) {
        if (part != g.gguf) continue;
        Deepseek2Source::Entry e;
        e.meta = TensorMeta{hf_prefix + std::string(g.hf), meta->dtype, meta->shape};
        e.gguf = info.name;
        if (part == "attn_kv_b.weight") has_kv_b.insert(layer);
        map.emplace(e.meta.name, std::move(e));
        mapped = true;
      }
      for (const LayerName& g : kExpertNames) {
        if (part != g.gguf) continue;
        if (meta->shape.size() != 3 || meta->shape[0] != c.moe.n_routed_experts) {
          return InvalidArgument(
              "{}: tensor '{}' has shape {}, expected [{}, rows, cols] (one matrix per expert)", f.path(),
              info.name, ShapeToString(meta->shape), c.moe.n_routed_experts);
        }
        for (int64_t x = 0; x < meta->shape[0]; ++x) {
          Deepseek2Source::Entry e;
          e.meta = TensorMeta{fmt::format("{}mlp.experts.{}.{}.weight", hf_prefix, x, g.hf), meta->dtype,
                              Shape{meta->shape[1], meta->shape[2]}};
          e.kind = Deepseek2Source::Kind::kExpert;
          e.gguf = info.name;
          e.expert = x;
          map.emplace(e.meta.name, std::move(e));
        }
        mapped = true;
      }
      if (part == "attn_k_b.weight") {
        kv_split[layer].first = info.name;
        mapped = true;
      } else if (part == "attn_v_b.weight") {
        kv_split[layer].second = info.name;
        mapped = true;
      }
    }
    if (!mapped) {
      return InvalidArgument("{}: tensor '{}' has no Hugging Face counterpart in a {}-layer deepseek2 model",
                             f.path(), info.name, c.num_hidden_layers);
    }
  }
  const int64_t nh = c.num_attention_heads, r = c.kv_lora_rank, dn = c.qk_nope_head_dim, dv = c.v_head_dim;
  std::map<std::string, Deepseek2Source::Entry, std::less<>> internal;
  for (const auto& [layer, kv] : kv_split) {
    if (has_kv_b.count(layer)) continue;  // attn_kv_b itself is served as stored
    const std::string hf = fmt::format("model.layers.{}.self_attn.kv_b_proj.weight", layer);
    if (kv.first.empty() || kv.second.empty()) {
      return InvalidArgument("{}: layer {} has {} but not {}", f.path(), layer,
                             kv.first.empty() ? kv.second : kv.first,
                             kv.first.empty() ? fmt::format("blk.{}.attn_k_b.weight", layer)
                                              : fmt::format("blk.{}.attn_v_b.weight", layer));
    }
    RETURN_IF_ERROR(CheckShape(f, kv.first, f.FindInfo(kv.first)->shape(), {nh, r, dn}));
    RETURN_IF_ERROR(CheckShape(f, kv.second, f.FindInfo(kv.second)->shape(), {nh, dv, r}));
    Deepseek2Source::Entry e;
    e.meta = TensorMeta{hf, DType::kF32, Shape{nh * (dn + dv), r}};
    e.kind = Deepseek2Source::Kind::kKvB;
    e.gguf = kv.first;
    e.v_b = kv.second;
    map.emplace(hf, std::move(e));
    // The halves as stored, for the model's row ops (not listed: they duplicate kv_b_proj).
    for (const auto& [name, gguf] : {std::pair{Deepseek2SplitKbName(layer), kv.first},
                                     std::pair{Deepseek2SplitVbName(layer), kv.second}}) {
      Deepseek2Source::Entry half;
      const TensorMeta* meta = f.Find(gguf);
      half.meta = TensorMeta{name, meta->dtype, meta->shape};
      half.gguf = gguf;
      internal.emplace(name, std::move(half));
    }
  }
  return std::unique_ptr<TensorSource>(
      new Deepseek2Source(std::move(file), std::move(map), std::move(internal)));
}

}  // namespace

std::string Deepseek2SplitKbName(int64_t layer) {
  return fmt::format("model.layers.{}.self_attn.k_b_proj.weight", layer);
}
std::string Deepseek2SplitVbName(int64_t layer) {
  return fmt::format("model.layers.{}.self_attn.v_b_proj.weight", layer);
}

namespace {

// ---------------------------------------------------------------------------------------------
// (c) tokenizer

StatusOr<std::string_view> PreTokenizerFor(const GgufFile& f, const std::string& pre) {
  if (pre == "deepseek-llm") return kDeepseekLlmPreTokenizer;
  if (pre == "deepseek-v3") return kDeepseekV3PreTokenizer;
  return Unimplemented("{}: tokenizer.ggml.pre '{}' is not supported (deepseek-llm, deepseek-v3)", f.path(),
                       pre);
}

StatusOr<HfTokenizerText> Tokenizer(const GgufFile& f) {
  ASSIGN_OR_RETURN(std::string model, f.GetString("tokenizer.ggml.model"));
  if (model != "gpt2") {
    return Unimplemented("{}: tokenizer.ggml.model '{}' is not supported (only gpt2 byte-level BPE)",
                         f.path(), model);
  }
  ASSIGN_OR_RETURN(std::string pre, f.GetStringOr("tokenizer.ggml.pre", "default"));
  ASSIGN_OR_RETURN(std::string_view pre_json, PreTokenizerFor(f, pre));
  ASSIGN_OR_RETURN(std::vector<std::string> tokens, f.GetStringArray("tokenizer.ggml.tokens"));
  std::vector<int64_t> types(tokens.size(), kNormal);
  if (f.FindKey("tokenizer.ggml.token_type") != nullptr) {
    ASSIGN_OR_RETURN(types, f.GetIntArray("tokenizer.ggml.token_type"));
    if (types.size() != tokens.size()) {
      return InvalidArgument("{}: tokenizer.ggml.token_type has {} entries, tokenizer.ggml.tokens {}",
                             f.path(), types.size(), tokens.size());
    }
  }
  ASSIGN_OR_RETURN(std::vector<std::string> merges, f.GetStringArray("tokenizer.ggml.merges"));
  OJson vocab = OJson::object();
  OJson added = OJson::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int64_t t = types[i];
    if (t == kUnused) continue;
    if (t == kControl || t == kUserDefined) {
      added.push_back(OJson{{"id", i},
                            {"content", tokens[i]},
                            {"single_word", false},
                            {"lstrip", false},
                            {"rstrip", false},
                            {"normalized", t != kControl},
                            {"special", t == kControl}});
    } else {
      vocab[tokens[i]] = i;
    }
  }
  OJson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = std::move(added);
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = OJson::parse(pre_json);
  j["post_processor"] = nullptr;
  j["decoder"] =
      OJson{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  j["model"] = OJson{{"type", "BPE"},
                     {"dropout", nullptr},
                     {"unk_token", nullptr},
                     {"continuing_subword_prefix", nullptr},
                     {"end_of_word_suffix", nullptr},
                     {"fuse_unk", false},
                     {"byte_fallback", false},
                     {"vocab", std::move(vocab)},
                     {"merges", merges}};
  OJson cfg;
  ASSIGN_OR_RETURN(bool add_bos, f.GetBoolOr("tokenizer.ggml.add_bos_token", false));
  ASSIGN_OR_RETURN(bool add_eos, f.GetBoolOr("tokenizer.ggml.add_eos_token", false));
  cfg["add_bos_token"] = add_bos;
  cfg["add_eos_token"] = add_eos;
  for (const auto& [key, field] :
       {std::pair<const char*, const char*>{"tokenizer.ggml.bos_token_id", "bos_token"},
        {"tokenizer.ggml.eos_token_id", "eos_token"},
        {"tokenizer.ggml.padding_token_id", "pad_token"}}) {
    ASSIGN_OR_RETURN(int64_t id, f.GetIntOr(key, -1));
    if (id < 0) continue;
    if (id >= static_cast<int64_t>(tokens.size())) {
      return InvalidArgument("{}: key '{}' = {} is not below the {} tokens", f.path(), key, id,
                             tokens.size());
    }
    cfg[field] = tokens[static_cast<size_t>(id)];
  }
  ASSIGN_OR_RETURN(std::string chat, f.GetStringOr("tokenizer.chat_template", ""));
  if (!chat.empty()) cfg["chat_template"] = chat;
  HfTokenizerText out;
  try {
    out.tokenizer_json = j.dump();
    out.tokenizer_config_json = cfg.dump(2);
  } catch (const nlohmann::json::exception& ex) {
    return InvalidArgument("{}: tokenizer strings are not valid UTF-8: {}", f.path(), ex.what());
  }
  return out;
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

// ---------------------------------------------------------------------------------------------
// (d) writer

namespace {

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
  if (target != DType::kF32 && target != DType::kF16 && target != DType::kBF16 && !IsBlockDType(target)) {
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
