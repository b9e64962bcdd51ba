// HF checkpoint -> llama.cpp deepseek2 GGUF -> loaded back: tiny models from
// tools/make_test_model.py (lite: plain q_proj; v2: q-LoRA + group-limited routing; v3: sigmoid,
// score-correction bias) must come back with every tensor, every config field, the tokenizer's
// ids and the model's logits unchanged, and the file must follow llama.cpp's names and layouts.
#include "model/gguf_deepseek2.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "../testing/load_only_blocks.h"
#include "comm/in_process_comm.h"
#include "core/block_quant.h"
#include "core/thread_pool.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "model/deepseek_model.h"
#include "model/kv_cache.h"
#include "tokenizer/tokenizer.h"

namespace moerun {
namespace {

namespace fs = std::filesystem;

// The synthetic DeepSeek-LLM tokenizer with its added tokens moved to ids 295..299, inside the
// test models' vocab_size of 300 (llama.cpp's converter requires every id < vocab_size).
void WriteTokenizer(const fs::path& dir) {
  const std::string src = MOERUN_TOKENIZER_TESTDATA "/synthetic/";
  nlohmann::json tok = nlohmann::json::parse(ReadFileToString(src + "tokenizer.json").value());
  for (auto& a : tok["added_tokens"]) a["id"] = a["id"].get<int>() - 5;
  for (auto& [name, st] : tok["post_processor"]["special_tokens"].items()) st["ids"] = {295};
  ASSERT_TRUE(WriteFileAtomically((dir / "tokenizer.json").string(), tok.dump()).ok());
  ASSERT_TRUE(WriteFileAtomically((dir / "tokenizer_config.json").string(),
                                  ReadFileToString(src + "tokenizer_config.json").value())
                  .ok());
  // config.json's ids must name the same tokens (GGUF keeps one bos/eos id).
  nlohmann::json cfg = nlohmann::json::parse(ReadFileToString((dir / "config.json").string()).value());
  cfg["bos_token_id"] = 295;
  cfg["eos_token_id"] = 296;
  ASSERT_TRUE(WriteFileAtomically((dir / "config.json").string(), cfg.dump(2)).ok());
}

// In a fresh `dir`: hf/, a tiny V2 checkpoint whose kv_b halves fit GGUF blocks (--mla-dims
// 256,32,256) with the test tokenizer, and `base`, its F32 deepseek2 GGUF.
void WriteF32BaseGguf(const fs::path& dir, const std::string& base) {
  fs::remove_all(dir);
  const std::string hf = (dir / "hf").string();
  const std::string cmd = std::string(MOERUN_SOURCE_DIR "/tools/make_test_model.py ") + hf +
                          " --variant v2 --mla-dims 256,32,256 > /dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  WriteTokenizer(dir / "hf");
  auto ckpt = Checkpoint::Open(hf);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  Deepseek2GgufOptions opt;
  opt.target = DType::kF32;
  ASSERT_TRUE(WriteDeepseek2Gguf(**ckpt, ReadFileToString(hf + "/config.json").value(),
                                 ReadFileToString(hf + "/tokenizer.json").value(),
                                 ReadFileToString(hf + "/tokenizer_config.json").value(), opt, base)
                  .ok());
}

class GgufDeepseek2Test : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("gguf_ds2_" + std::to_string(::getpid()) + "_" + GetParam());
    fs::remove_all(dir_);
    const std::string cmd = std::string(MOERUN_SOURCE_DIR "/tools/make_test_model.py ") +
                            (dir_ / "hf").string() + " --variant " + GetParam() + " --dtype f32 > /dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    WriteTokenizer(dir_ / "hf");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Hf(const std::string& f) const { return (dir_ / "hf" / f).string(); }

  // Writes the GGUF of the HF model with `target`; returns its path.
  std::string Convert(DType target) {
    auto ckpt = Checkpoint::Open((dir_ / "hf").string());
    EXPECT_TRUE(ckpt.ok()) << ckpt.status().ToString();
    const std::string out = (dir_ / ("m-" + std::string(DTypeName(target)) + ".gguf")).string();
    Deepseek2GgufOptions opt;
    opt.target = target;
    opt.name = "tiny";
    Status s = WriteDeepseek2Gguf(**ckpt, ReadFileToString(Hf("config.json")).value(),
                                  ReadFileToString(Hf("tokenizer.json")).value(),
                                  ReadFileToString(Hf("tokenizer_config.json")).value(), opt, out);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  fs::path dir_;
};

TEST_P(GgufDeepseek2Test, F32RoundTripIsExact) {
  const std::string path = Convert(DType::kF32);
  auto m = OpenGgufDeepseek2(path);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const ModelConfig want = ModelConfig::FromJson(ReadFileToString(Hf("config.json")).value(), "cfg").value();
  const ModelConfig& got = m->config;
  EXPECT_EQ(got.model_type, want.model_type);
  EXPECT_EQ(got.vocab_size, want.vocab_size);
  EXPECT_EQ(got.hidden_size, want.hidden_size);
  EXPECT_EQ(got.intermediate_size, want.intermediate_size);
  EXPECT_EQ(got.num_hidden_layers, want.num_hidden_layers);
  EXPECT_EQ(got.num_attention_heads, want.num_attention_heads);
  EXPECT_EQ(got.q_lora_rank, want.q_lora_rank);
  EXPECT_EQ(got.kv_lora_rank, want.kv_lora_rank);
  EXPECT_EQ(got.qk_nope_head_dim, want.qk_nope_head_dim);
  EXPECT_EQ(got.qk_rope_head_dim, want.qk_rope_head_dim);
  EXPECT_EQ(got.v_head_dim, want.v_head_dim);
  EXPECT_FLOAT_EQ(static_cast<float>(got.rms_norm_eps), static_cast<float>(want.rms_norm_eps));
  EXPECT_FLOAT_EQ(static_cast<float>(got.rope_theta), static_cast<float>(want.rope_theta));
  EXPECT_EQ(got.max_position_embeddings, want.max_position_embeddings);
  EXPECT_EQ(got.first_k_dense_replace, want.first_k_dense_replace);
  EXPECT_EQ(got.bos_token_id, want.bos_token_id);
  EXPECT_EQ(got.eos_token_id, want.eos_token_id);
  EXPECT_EQ(got.tie_word_embeddings, want.tie_word_embeddings);
  EXPECT_EQ(got.yarn.enabled, want.yarn.enabled);
  EXPECT_FLOAT_EQ(static_cast<float>(got.yarn.factor), static_cast<float>(want.yarn.factor));
  EXPECT_EQ(got.yarn.original_max_position, want.yarn.original_max_position);
  EXPECT_FLOAT_EQ(static_cast<float>(got.yarn.beta_fast), static_cast<float>(want.yarn.beta_fast));
  EXPECT_FLOAT_EQ(static_cast<float>(got.yarn.beta_slow), static_cast<float>(want.yarn.beta_slow));
  EXPECT_NEAR(got.yarn.mscale, want.yarn.mscale, 1e-6);
  EXPECT_NEAR(got.yarn.mscale_all_dim, want.yarn.mscale_all_dim, 1e-6);
  EXPECT_NEAR(got.SoftmaxScale(), want.SoftmaxScale(), 1e-7);
  EXPECT_EQ(got.moe.n_routed_experts, want.moe.n_routed_experts);
  EXPECT_EQ(got.moe.num_experts_per_tok, want.moe.num_experts_per_tok);
  EXPECT_EQ(got.moe.moe_intermediate_size, want.moe.moe_intermediate_size);
  EXPECT_EQ(got.moe.shared_intermediate_size, want.moe.shared_intermediate_size);
  EXPECT_EQ(got.moe.topk_method, want.moe.topk_method);
  EXPECT_EQ(got.moe.n_group, want.moe.n_group);
  EXPECT_EQ(got.moe.topk_group, want.moe.topk_group);
  EXPECT_EQ(got.moe.norm_topk_prob, want.moe.norm_topk_prob);
  EXPECT_EQ(got.moe.routed_scaling_factor, want.moe.routed_scaling_factor);
  EXPECT_EQ(got.moe.scale_after_norm, want.moe.scale_after_norm);
  EXPECT_EQ(got.moe.scoring_func, want.moe.scoring_func);

  // Every HF tensor, bit for bit, and nothing else.
  auto ckpt = Checkpoint::Open((dir_ / "hf").string());
  ASSERT_TRUE(ckpt.ok());
  EXPECT_EQ(m->tensors->Names(), (*ckpt)->Names());
  for (const std::string& name : (*ckpt)->Names()) {
    Tensor a = (*ckpt)->Get(name).value();
    auto b = m->tensors->Get(name);
    ASSERT_TRUE(b.ok()) << name << ": " << b.status().ToString();
    ASSERT_EQ(b->shape(), a.shape()) << name;
    ASSERT_EQ(b->dtype(), DType::kF32) << name;
    EXPECT_EQ(m->tensors->Find(name)->shape, a.shape()) << name;
    EXPECT_EQ(std::memcmp(a.raw(), b->raw(), a.nbytes()), 0) << name;
  }

  // Tokenizer: the same ids on sample strings, with and without special tokens.
  auto t0 = Tokenizer::FromJsonWithConfig(ReadFileToString(Hf("tokenizer.json")).value(), "tokenizer.json",
                                          ReadFileToString(Hf("tokenizer_config.json")).value(), "config");
  ASSERT_TRUE(t0.ok()) << t0.status().ToString();
  auto t1 = Tokenizer::FromJsonWithConfig(m->tokenizer.tokenizer_json, "gguf tokenizer.json",
                                          m->tokenizer.tokenizer_config_json, "gguf config");
  ASSERT_TRUE(t1.ok()) << t1.status().ToString();
  // (Not "<strip>": GGUF has no lstrip/rstrip flags, see docs/gguf.md.)
  for (const char* text : {"hello the world", "  12345 aa\n\nhello", "你好, 世界!", "<tool>call <tool> x",
                           "<｜begin▁of▁sentence｜>hi<｜end▁of▁sentence｜>", ""}) {
    EXPECT_EQ((*t1)->Encode(text, true), (*t0)->Encode(text, true)) << text;
    EXPECT_EQ((*t1)->Encode(text, false), (*t0)->Encode(text, false)) << text;
  }
  EXPECT_EQ((*t1)->bos_id(), (*t0)->bos_id());
  EXPECT_EQ((*t1)->eos_id(), (*t0)->eos_id());
  EXPECT_EQ((*t1)->chat_template(), (*t0)->chat_template());
}

// The file itself follows llama.cpp's deepseek2 conventions (keys, types, names, ggml dims).
TEST_P(GgufDeepseek2Test, FileFollowsLlamaCppLayout) {
  const std::string path = Convert(DType::kF16);
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const GgufFile& g = **f;
  const ModelConfig c = ModelConfig::FromJson(ReadFileToString(Hf("config.json")).value(), "cfg").value();
  EXPECT_EQ(*g.GetString("general.architecture"), "deepseek2");
  EXPECT_EQ(*g.GetInt("general.file_type"), 1);
  EXPECT_EQ(g.FindKey("deepseek2.block_count")->type, GgufType::kU32);
  EXPECT_EQ(g.FindKey("deepseek2.rope.freq_base")->type, GgufType::kF32);
  EXPECT_EQ(*g.GetInt("deepseek2.attention.head_count_kv"), 1);
  EXPECT_EQ(*g.GetInt("deepseek2.attention.key_length"), c.kv_lora_rank + c.qk_rope_head_dim);
  EXPECT_EQ(*g.GetInt("deepseek2.attention.value_length"), c.kv_lora_rank);
  EXPECT_EQ(*g.GetInt("deepseek2.attention.key_length_mla"), c.q_head_dim());
  EXPECT_EQ(*g.GetInt("deepseek2.attention.value_length_mla"), c.v_head_dim);
  EXPECT_NEAR(*g.GetFloat("deepseek2.rope.scaling.yarn_log_multiplier"), 0.1 * c.yarn.mscale_all_dim, 1e-7);
  EXPECT_EQ(*g.GetString("tokenizer.ggml.pre"), "deepseek-llm");
  EXPECT_EQ(g.GetStringArray("tokenizer.ggml.tokens")->size(), static_cast<size_t>(c.vocab_size));
  EXPECT_EQ(*g.GetInt("deepseek2.attention.q_lora_rank"), c.q_lora_rank);  // 0 for lite
  const int64_t nh = c.num_attention_heads, r = c.kv_lora_rank, h = c.hidden_size;
  EXPECT_EQ(g.FindInfo("token_embd.weight")->ne, (std::vector<int64_t>{h, c.vocab_size}));
  EXPECT_EQ(g.FindInfo("blk.0.attn_k_b.weight")->ne, (std::vector<int64_t>{c.qk_nope_head_dim, r, nh}));
  EXPECT_EQ(g.FindInfo("blk.0.attn_v_b.weight")->ne, (std::vector<int64_t>{r, c.v_head_dim, nh}));
  EXPECT_EQ(g.FindInfo("blk.0.attn_kv_b.weight"), nullptr);
  EXPECT_NE(g.FindInfo("blk.0.ffn_gate.weight"), nullptr);
  const int64_t e = c.moe.n_routed_experts, i = c.moe.moe_intermediate_size;
  EXPECT_EQ(g.FindInfo("blk.1.ffn_gate_exps.weight")->ne, (std::vector<int64_t>{h, i, e}));
  EXPECT_EQ(g.FindInfo("blk.1.ffn_down_exps.weight")->ne, (std::vector<int64_t>{i, h, e}));
  EXPECT_EQ(g.FindInfo("blk.1.ffn_gate_inp.weight")->type, 0u);  // router stays F32
  EXPECT_EQ(g.FindInfo("blk.1.attn_norm.weight")->type, 0u);
  EXPECT_EQ(g.FindInfo("blk.1.ffn_up_exps.weight")->type, 1u);
  EXPECT_EQ(g.FindInfo("blk.1.exp_probs_b.bias") != nullptr, c.moe.topk_method == TopkMethod::kNoauxTc);
  // F16 weights come back within f16 rounding, norms exactly.
  auto m = OpenGgufDeepseek2(path);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto ckpt = Checkpoint::Open((dir_ / "hf").string());
  for (const std::string& name : (*ckpt)->Names()) {
    Tensor a = (*ckpt)->Get(name).value();
    Tensor b = m->tensors->Get(name).value().ToF32().value();
    for (int64_t k = 0; k < a.numel(); ++k) {
      const float x = a.data<float>()[k], y = b.data<float>()[k];
      ASSERT_LE(std::fabs(x - y), 1e-3f * std::fabs(x) + 1e-7f) << name << "[" << k << "]";
    }
  }
}

// A pre-MLA llama.cpp file (attn_kv_b instead of attn_k_b/attn_v_b, per-head key_length /
// value_length, no *_mla keys) reads back to the same tensors and config.
TEST_P(GgufDeepseek2Test, LegacyKvBFileReadsBack) {
  const std::string path = Convert(DType::kF32);
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok());
  const GgufFile& g = **f;
  const ModelConfig c = ModelConfig::FromJson(ReadFileToString(Hf("config.json")).value(), "cfg").value();
  auto ckpt = Checkpoint::Open((dir_ / "hf").string());
  ASSERT_TRUE(ckpt.ok());
  const std::string legacy = (dir_ / "legacy.gguf").string();
  auto w = GgufWriter::Create(legacy);
  ASSERT_TRUE(w.ok());
  for (const auto& [key, value] : g.metadata()) {
    if (key == "deepseek2.attention.key_length_mla" || key == "deepseek2.attention.value_length_mla")
      continue;
    if (key == "deepseek2.attention.key_length") {
      ASSERT_TRUE((*w)->AddKv(key, GgufValue::U32(static_cast<uint32_t>(c.q_head_dim()))).ok());
    } else if (key == "deepseek2.attention.value_length") {
      ASSERT_TRUE((*w)->AddKv(key, GgufValue::U32(static_cast<uint32_t>(c.v_head_dim))).ok());
    } else {
      ASSERT_TRUE((*w)->AddKv(key, value).ok());
    }
  }
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const GgufTensorInfo& t : g.tensors()) {
    const std::string& n = t.name;
    if (n.find(".attn_v_b.") != std::string::npos) continue;
    if (n.find(".attn_k_b.") != std::string::npos) {
      const std::string layer = n.substr(4, n.find('.', 4) - 4);
      tensors.emplace_back("blk." + layer + ".attn_kv_b.weight",
                           (*ckpt)->Get("model.layers." + layer + ".self_attn.kv_b_proj.weight").value());
    } else {
      tensors.emplace_back(n, g.Get(n).value());
    }
  }
  for (const auto& [name, t] : tensors) ASSERT_TRUE((*w)->AddTensor(name, t.dtype(), t.shape()).ok()) << name;
  for (const auto& [name, t] : tensors) ASSERT_TRUE((*w)->Append(t.raw(), t.nbytes()).ok()) << name;
  ASSERT_TRUE((*w)->Finish().ok());
  auto m = OpenGgufDeepseek2(legacy);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->config.qk_nope_head_dim, c.qk_nope_head_dim);
  EXPECT_EQ(m->config.v_head_dim, c.v_head_dim);
  EXPECT_EQ(m->tensors->Names(), (*ckpt)->Names());
  for (const std::string& name : (*ckpt)->Names()) {
    Tensor a = (*ckpt)->Get(name).value();
    Tensor b = m->tensors->Get(name).value();
    ASSERT_EQ(a.shape(), b.shape()) << name;
    EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << name;
  }
  EXPECT_FALSE(Deepseek2TensorUnused(g, "blk.0.attn_k_b.weight"));  // split form only: used
  EXPECT_FALSE(Deepseek2TensorUnused(**GgufFile::Open(legacy), "blk.0.attn_kv_b.weight"));

  // A file with both forms (attn_kv_b and the split halves) loads attn_kv_b as stored; the halves
  // are the tensors it never reads (what `moerun inspect` leaves out of its resident total).
  const std::string both = (dir_ / "both.gguf").string();
  auto wb = GgufWriter::Create(both);
  ASSERT_TRUE(wb.ok());
  for (const auto& [key, value] : g.metadata()) ASSERT_TRUE((*wb)->AddKv(key, value).ok());
  for (const GgufTensorInfo& t : g.tensors()) {
    if (t.name.find(".attn_k_b.") == std::string::npos && t.name.find(".attn_v_b.") == std::string::npos)
      continue;
    tensors.emplace_back(t.name, g.Get(t.name).value());
  }
  for (const auto& [name, t] : tensors)
    ASSERT_TRUE((*wb)->AddTensor(name, t.dtype(), t.shape()).ok()) << name;
  for (const auto& [name, t] : tensors) ASSERT_TRUE((*wb)->Append(t.raw(), t.nbytes()).ok()) << name;
  ASSERT_TRUE((*wb)->Finish().ok());
  auto fb = GgufFile::Open(both);
  ASSERT_TRUE(fb.ok());
  EXPECT_TRUE(Deepseek2TensorUnused(**fb, "blk.0.attn_k_b.weight"));
  EXPECT_TRUE(Deepseek2TensorUnused(**fb, "blk.0.attn_v_b.weight"));
  EXPECT_FALSE(Deepseek2TensorUnused(**fb, "blk.0.attn_kv_b.weight"));
  EXPECT_FALSE(Deepseek2TensorUnused(**fb, "blk.0.attn_q.weight"));
  auto mb = OpenGgufDeepseek2(both);
  ASSERT_TRUE(mb.ok()) << mb.status().ToString();
  const std::string kv_b = "model.layers.0.self_attn.kv_b_proj.weight";
  const Tensor a = (*ckpt)->Get(kv_b).value(), b = mb->tensors->Get(kv_b).value();
  ASSERT_EQ(a.shape(), b.shape());
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0);
}

// The model loaded from the GGUF gives the logits of the model loaded from the HF directory.
TEST_P(GgufDeepseek2Test, ModelLogitsMatchHfCheckpoint) {
  const std::string path = Convert(DType::kF32);
  ThreadPool pool(1);
  ModelLoadOptions opt;
  opt.weight_format = WeightFormat::kF32;
  opt.kernels.precision = ActivationPrecision::kF32;
  auto hf = DeepseekModel::Load((dir_ / "hf").string(), opt, &pool);
  ASSERT_TRUE(hf.ok()) << hf.status().ToString();
  auto m = OpenGgufDeepseek2(path);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto gg = DeepseekModel::LoadFrom(std::move(m->tensors), m->config, opt, &pool);
  ASSERT_TRUE(gg.ok()) << gg.status().ToString();
  const std::vector<int32_t> tokens = {295, 3, 17, 42, 256, 99, 7};
  KvCache c0((*hf)->config(), 16), c1((*gg)->config(), 16);
  std::vector<float> l0, l1;
  ASSERT_TRUE((*hf)->Forward(tokens, &c0, true, &l0).ok());
  ASSERT_TRUE((*gg)->Forward(tokens, &c1, true, &l1).ok());
  ASSERT_EQ(l0.size(), l1.size());
  for (size_t k = 0; k < l0.size(); ++k) ASSERT_NEAR(l0[k], l1[k], 1e-5f * (1 + std::fabs(l0[k]))) << k;
}

INSTANTIATE_TEST_SUITE_P(Variants, GgufDeepseek2Test, ::testing::Values("lite", "v2", "v3"));

// Block-quantised MLA halves: a file whose attn_k_b / attn_v_b (llama.cpp's current form) or
// attn_kv_b (the older one) is in any native block type (Q8_0 ... Q6_K) loads, the model keeps those bytes
// (kernels/row_ops.h on them under --precision f32), and its logits are those of the same file with attn_kv_b
// in F32 holding the same, dequantised values. Dims dn = 256, dv = 32, r = 256 so every row is whole blocks
// of every type. Also: heads split over two TP ranks give the same logits bit for bit
// (--deterministic), in both forms.
class GgufQuantisedKvB : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("gguf_ds2_kvb_" + std::to_string(::getpid()) + "_" + std::string(DTypeName(GetParam())));
    base_ = (dir_ / "base.gguf").string();
    ASSERT_NO_FATAL_FAILURE(WriteF32BaseGguf(dir_, base_));
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Rows of `t` (last dim = row) quantised to `type`.
  static Tensor Quantise(const Tensor& t, DType type) {
    const int64_t cols = t.shape().back(), rows = t.numel() / cols;
    Tensor q = Tensor::Zeros(type, t.shape()).value();
    for (int64_t i = 0; i < rows; ++i) {
      QuantizeRow(type, t.data<float>() + i * cols, cols,
                  static_cast<uint8_t*>(q.raw()) + static_cast<size_t>(i) * DTypeRowBytes(type, cols));
    }
    return q;
  }

  // base.gguf with each layer's attn_k_b / attn_v_b replaced by kv_b(layer) as attn_kv_b
  // (when kv_b is given), or by kb(t) / vb(t) (when not).
  std::string Rewrite(const std::string& name, const std::function<Tensor(const Tensor&)>& split,
                      const std::function<Tensor(const std::string&)>& kv_b) {
    auto file = GgufFile::Open(base_);
    EXPECT_TRUE(file.ok());
    const GgufFile& g = **file;
    const std::string out = (dir_ / name).string();
    auto w = GgufWriter::Create(out);
    EXPECT_TRUE(w.ok());
    for (const auto& [key, value] : g.metadata()) EXPECT_TRUE((*w)->AddKv(key, value).ok());
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const GgufTensorInfo& t : g.tensors()) {
      const std::string& n = t.name;
      const bool k_b = n.find(".attn_k_b.") != std::string::npos,
                 v_b = n.find(".attn_v_b.") != std::string::npos;
      if (!k_b && !v_b) {
        tensors.emplace_back(n, g.Get(n).value());
      } else if (!kv_b) {
        tensors.emplace_back(n, split(g.Get(n).value()));
      } else if (k_b) {
        const std::string layer = n.substr(4, n.find('.', 4) - 4);
        tensors.emplace_back("blk." + layer + ".attn_kv_b.weight", kv_b(layer));
      }
    }
    for (const auto& [tn, t] : tensors) EXPECT_TRUE((*w)->AddTensor(tn, t.dtype(), t.shape()).ok()) << tn;
    for (const auto& [tn, t] : tensors) EXPECT_TRUE((*w)->Append(t.raw(), t.nbytes()).ok()) << tn;
    EXPECT_TRUE((*w)->Finish().ok());
    return out;
  }

  // The F32 kv_b_proj `path` serves (rebuilt from the halves when split), as attn_kv_b.
  std::string F32KvBOf(const std::string& path, const std::string& name) {
    auto src = OpenGgufDeepseek2(path);
    EXPECT_TRUE(src.ok()) << src.status().ToString();
    return Rewrite(name, nullptr, [&](const std::string& layer) {
      return src->tensors->Get("model.layers." + layer + ".self_attn.kv_b_proj.weight")
          .value()
          .ToF32()
          .value();
    });
  }

  // Logits of every token of a fixed prompt, on `tp` in-process ranks (rank 0's), deterministic or not.
  // precision kF32 keeps the block-format halves on the row ops (f32 activations); kAuto packs
  // them per head for the quantised matmuls (the prompt's 7 rows keep every f32 layer exact).
  static std::vector<float> Logits(const std::string& path, int tp, bool deterministic,
                                   double* bytes = nullptr,
                                   ActivationPrecision precision = ActivationPrecision::kF32) {
    auto worlds = InProcessWorld::Create(tp);
    std::vector<std::vector<float>> out(static_cast<size_t>(tp));
    std::vector<std::thread> threads;
    for (int r = 0; r < tp; ++r) {
      threads.emplace_back([&, r] {
        ThreadPool pool(1);
        ModelLoadOptions opt;
        opt.weight_format = WeightFormat::kF32;
        opt.kernels.precision = precision;
        opt.parallel.tp = tp;
        opt.parallel.deterministic = deterministic;
        auto m = OpenGgufDeepseek2(path);
        ASSERT_TRUE(m.ok()) << m.status().ToString();
        auto model = DeepseekModel::LoadFrom(std::move(m->tensors), m->config, opt, &pool, {},
                                             worlds[static_cast<size_t>(r)].get());
        ASSERT_TRUE(model.ok()) << model.status().ToString();
        if (bytes != nullptr && r == 0) *bytes = (*model)->DecodeWeightBytesPerToken();
        const std::vector<int32_t> tokens = {295, 3, 17, 42, 256, 99, 7};
        KvCache cache((*model)->config(), 16);
        Status s = (*model)->Forward(tokens, &cache, true, &out[static_cast<size_t>(r)]);
        ASSERT_TRUE(s.ok()) << s.ToString();
      });
    }
    for (std::thread& t : threads) t.join();
    return out[0];
  }

  fs::path dir_;
  std::string base_;
};

TEST_P(GgufQuantisedKvB, SameLogitsAsF32KvBAndOnTwoRanks) {
  const DType type = GetParam();
  // Split form: attn_k_b [nh, r, dn] and attn_v_b [nh, dv, r] quantised row by row.
  const std::string split = Rewrite(
      "split.gguf", [&](const Tensor& t) { return Quantise(t, type); }, nullptr);
  {
    auto file = GgufFile::Open(split);
    ASSERT_TRUE(file.ok());
    const GgufFile& g = **file;
    ASSERT_EQ(g.FindInfo("blk.0.attn_k_b.weight")->type, g.FindInfo("blk.0.attn_v_b.weight")->type);
    auto src = OpenGgufDeepseek2(split);
    ASSERT_TRUE(src.ok()) << src.status().ToString();
    EXPECT_EQ(src->tensors->Find(Deepseek2SplitKbName(0))->dtype, type);  // the halves as stored
    EXPECT_EQ(src->tensors->Find(Deepseek2SplitVbName(1))->dtype, type);
    EXPECT_EQ(src->tensors->Find("model.layers.0.self_attn.kv_b_proj.weight")->dtype, DType::kF32);
    for (const std::string& n : src->tensors->Names()) EXPECT_EQ(n.find("k_b_proj"), std::string::npos) << n;
  }
  // Merged form: attn_kv_b [nh * (dn + dv), r] quantised row by row (the HF kv_b_proj's values).
  auto ckpt = Checkpoint::Open((dir_ / "hf").string());
  ASSERT_TRUE(ckpt.ok());
  const std::string merged = Rewrite("merged.gguf", nullptr, [&](const std::string& layer) {
    return Quantise((*ckpt)->Get("model.layers." + layer + ".self_attn.kv_b_proj.weight").value(), type);
  });
  const std::string split_f32 = F32KvBOf(split, "split-f32.gguf");
  const std::string merged_f32 = F32KvBOf(merged, "merged-f32.gguf");

  double split_bytes = 0, split_f32_bytes = 0;
  const std::vector<float> a = Logits(split, 1, false, &split_bytes);
  const std::vector<float> b = Logits(split_f32, 1, false, &split_f32_bytes);
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  // K runs as a per-row dot on attn_k_b in one and as an axpy over kv_b rows in the other.
  for (size_t k = 0; k < a.size(); ++k) ASSERT_NEAR(a[k], b[k], 1e-5f * (1 + std::fabs(b[k]))) << k;
  // The decode read counts the halves as stored.
  const ModelConfig c =
      ModelConfig::FromJson(ReadFileToString((dir_ / "hf/config.json").string()).value(), "c").value();
  const double kv_b_elems = static_cast<double>(c.num_hidden_layers * c.num_attention_heads *
                                                (c.qk_nope_head_dim + c.v_head_dim) * c.kv_lora_rank);
  EXPECT_NEAR(split_f32_bytes - split_bytes,
              kv_b_elems * (4.0 - static_cast<double>(DTypeBlockBytes(type)) /
                                      static_cast<double>(DTypeBlockSize(type))),
              1.0);

  // Same form, same values: dequantised in the op or read as f32, the same bits.
  const std::vector<float> cq = Logits(merged, 1, false);
  const std::vector<float> cf = Logits(merged_f32, 1, false);
  ASSERT_EQ(cq.size(), cf.size());
  EXPECT_EQ(std::memcmp(cq.data(), cf.data(), cq.size() * sizeof(float)), 0);

  // Heads [h0, h1) per rank: both forms give the one-rank logits bit for bit under --deterministic.
  for (const std::string& path : {split, merged}) {
    const std::vector<float> one = Logits(path, 1, true), two = Logits(path, 2, true);
    ASSERT_EQ(one.size(), two.size());
    EXPECT_EQ(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)), 0) << path;
  }
}

// The same files with the halves packed per head (--precision auto): attn_k_b and every V half run
// as quantised matmuls (activations rounded to 8 bits per 32 elements), so the logits stay within
// that rounding of the f32-activation row ops', the decode read is the same bytes, and heads split
// over two ranks still give the one-rank logits bit for bit (--deterministic).
TEST_P(GgufQuantisedKvB, PackedHeadsStayNearTheRowOpsAndSplitOverRanksBitwise) {
  const DType type = GetParam();
  const std::string split = Rewrite(
      "split.gguf", [&](const Tensor& t) { return Quantise(t, type); }, nullptr);
  auto ckpt = Checkpoint::Open((dir_ / "hf").string());
  ASSERT_TRUE(ckpt.ok());
  const std::string merged = Rewrite("merged.gguf", nullptr, [&](const std::string& layer) {
    return Quantise((*ckpt)->Get("model.layers." + layer + ".self_attn.kv_b_proj.weight").value(), type);
  });
  const auto packed = ActivationPrecision::kAuto;
  for (const std::string& path : {split, merged}) {
    SCOPED_TRACE(path);
    double row_ops_bytes = 0, packed_bytes = 0;
    const std::vector<float> row_ops = Logits(path, 1, false, &row_ops_bytes);
    const std::vector<float> mm = Logits(path, 1, false, &packed_bytes, packed);
    ASSERT_EQ(row_ops.size(), mm.size());
    ASSERT_FALSE(mm.empty());
    EXPECT_EQ(packed_bytes, row_ops_bytes);
    double max_abs = 0, max_diff = 0;
    for (size_t k = 0; k < mm.size(); ++k) {
      max_abs = std::max(max_abs, static_cast<double>(std::fabs(row_ops[k])));
      max_diff = std::max(max_diff, static_cast<double>(std::fabs(mm[k] - row_ops[k])));
    }
    // 8-bit activations move these random models' logits (largest about 3.5) by up to 0.49
    // (Q4_0; Q8_0 and the K types 0.09-0.13): their attention is sharp, so a small change in q_lat
    // shows. The bound is twice that; a wrong head's V rows move them by 4.6-5.3.
    EXPECT_LE(max_diff, 0.2 * (1.0 + max_abs)) << "largest logit " << max_abs;
    EXPECT_GT(max_diff, 0.0) << "the packed path did not run";
    const std::vector<float> one = Logits(path, 1, true, nullptr, packed),
                             two = Logits(path, 2, true, nullptr, packed);
    ASSERT_EQ(one.size(), two.size());
    EXPECT_EQ(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)), 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Types, GgufQuantisedKvB,
                         ::testing::Values(DType::kQ8_0, DType::kQ4_0, DType::kQ5_0, DType::kQ5_1,
                                           DType::kQ4_K, DType::kQ5_K, DType::kQ6_K),
                         [](const ::testing::TestParamInfo<DType>& p) {
                           return std::string(DTypeName(p.param));
                         });

// Files with llama.cpp's load-only block types (Q3_K, Q2_K, IQ4_NL, IQ4_XS: random valid
// blocks on every matrix whose rows fit, the MLA halves included) load: dequantised at load, they
// give the logits of the same file with those tensors stored as their f32 values, bit for bit,
// under --weight-format f32 (every weight exact; also on two TP ranks). By default every such
// tensor (linear layers and MLA halves) becomes q8_0 re-quantised from the same f32 rows: the
// logits of a file storing those q8_0 blocks (the embedding table excepted: read as stored, it
// is exact). And the one warning line.
class GgufLoadOnlyTypes : public ::testing::Test {
 protected:
  enum class Store { kLoadOnly, kF32, kQ8_0 };

  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("gguf_ds2_loadonly_" + std::to_string(::getpid()));
    base_ = (dir_ / "base.gguf").string();
    ASSERT_NO_FATAL_FAILURE(WriteF32BaseGguf(dir_, base_));
  }
  void TearDown() override { fs::remove_all(dir_); }

  // base.gguf with every matrix in a load-only type: rows of a multiple of 256 take Q3_K, Q2_K and
  // IQ4_XS in turn, rows of 32 are IQ4_NL (the same random blocks on every call).
  // kF32: those tensors hold their dequantised values in F32 instead; kQ8_0: those values
  // quantised to Q8_0 (token_embd: F32, as the embedding lookup reads stored rows). Returns the path.
  std::string Write(const std::string& name, Store store) {
    auto file = GgufFile::Open(base_);
    EXPECT_TRUE(file.ok());
    const GgufFile& g = **file;
    std::vector<std::pair<std::string, Tensor>> tensors;
    std::mt19937 rng(7);
    int k_types = 0;
    for (const GgufTensorInfo& info : g.tensors()) {
      Tensor t = g.Get(info.name).value();
      const std::string& n = info.name;
      const int64_t cols = t.shape().back();
      const bool matrix = Deepseek2GgufTensorType(n, t.shape(), DType::kQ8_0) != DType::kF32;
      DType type = DType::kF32;
      if (matrix && cols % 256 == 0) {
        type = std::array{DType::kQ3_K, DType::kQ2_K, DType::kIQ4_XS}[k_types++ % 3];
      } else if (matrix && cols % 32 == 0) {
        type = DType::kIQ4_NL;
      }
      if (type != DType::kF32) {
        Tensor q = Tensor::Zeros(type, t.shape()).value();
        const float sd = n == "token_embd.weight" ? 1.0f : 1.0f / std::sqrt(static_cast<float>(cols));
        for (int64_t r = 0; r < t.numel() / cols; ++r) {
          const std::vector<uint8_t> row = load_only_test::RandomLoadOnlyRow(type, cols, sd, &rng);
          std::memcpy(static_cast<uint8_t*>(q.raw()) + static_cast<size_t>(r) * row.size(), row.data(),
                      row.size());
        }
        types_.insert(type);
        t = q;
        if (store != Store::kLoadOnly) t = q.ToF32().value();
        if (store == Store::kQ8_0 && n != "token_embd.weight") {
          Tensor q8 = Tensor::Zeros(DType::kQ8_0, t.shape()).value();
          for (int64_t r = 0; r < t.numel() / cols; ++r) {
            QuantizeRow(
                DType::kQ8_0, t.data<float>() + r * cols, cols,
                static_cast<uint8_t*>(q8.raw()) + static_cast<size_t>(r) * DTypeRowBytes(DType::kQ8_0, cols));
          }
          t = q8;
        }
      }
      tensors.emplace_back(n, t);
    }
    const std::string out = (dir_ / name).string();
    auto w = GgufWriter::Create(out);
    EXPECT_TRUE(w.ok());
    for (const auto& [key, value] : g.metadata()) EXPECT_TRUE((*w)->AddKv(key, value).ok());
    for (const auto& [tn, t] : tensors) EXPECT_TRUE((*w)->AddTensor(tn, t.dtype(), t.shape()).ok()) << tn;
    for (const auto& [tn, t] : tensors) EXPECT_TRUE((*w)->Append(t.raw(), t.nbytes()).ok()) << tn;
    EXPECT_TRUE((*w)->Finish().ok());
    return out;
  }

  // Logits of every token of a fixed prompt (rank 0's of `tp` in-process ranks, deterministic).
  static std::vector<float> Logits(const std::string& path, std::optional<WeightFormat> format, int tp = 1) {
    auto worlds = InProcessWorld::Create(tp);
    std::vector<std::vector<float>> out(static_cast<size_t>(tp));
    std::vector<std::thread> threads;
    for (int r = 0; r < tp; ++r) {
      threads.emplace_back([&, r] {
        ThreadPool pool(1);
        ModelLoadOptions opt;
        opt.weight_format = format;
        opt.kernels.precision = ActivationPrecision::kF32;
        opt.parallel.tp = tp;
        opt.parallel.deterministic = true;
        auto m = OpenGgufDeepseek2(path);
        ASSERT_TRUE(m.ok()) << m.status().ToString();
        auto model = DeepseekModel::LoadFrom(std::move(m->tensors), m->config, opt, &pool, {},
                                             worlds[static_cast<size_t>(r)].get());
        ASSERT_TRUE(model.ok()) << model.status().ToString();
        const std::vector<int32_t> tokens = {295, 3, 17, 42, 256, 99, 7};
        KvCache cache((*model)->config(), 16);
        Status s = (*model)->Forward(tokens, &cache, true, &out[static_cast<size_t>(r)]);
        ASSERT_TRUE(s.ok()) << s.ToString();
      });
    }
    for (std::thread& t : threads) t.join();
    return out[0];
  }

  static void ExpectSameBits(const std::vector<float>& a, const std::vector<float>& b,
                             const std::string& what) {
    ASSERT_EQ(a.size(), b.size()) << what;
    ASSERT_FALSE(a.empty()) << what;
    for (float v : a) ASSERT_TRUE(std::isfinite(v)) << what;
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << what;
  }

  fs::path dir_;
  std::string base_;
  std::set<DType> types_;
};

TEST_F(GgufLoadOnlyTypes, DequantisedAtLoadLikeTheirF32Values) {
  const std::string file = Write("load-only.gguf", Store::kLoadOnly);
  EXPECT_EQ(types_.size(), 4u);  // every load-only type is in the file
  {
    auto src = OpenGgufDeepseek2(file);
    ASSERT_TRUE(src.ok()) << src.status().ToString();
    EXPECT_TRUE(IsLoadOnlyDType(src->tensors->Find(Deepseek2SplitKbName(0))->dtype));
    EXPECT_TRUE(IsLoadOnlyDType(src->tensors->Find("model.layers.1.mlp.experts.3.down_proj.weight")->dtype));
    const std::string warning = GgufConversionWarning(*src->file, std::nullopt);
    EXPECT_EQ(warning.rfind("moerun: " + file + ": Q2_K x ", 0), 0u) << warning;
    for (const char* t : {"Q3_K x ", "IQ4_NL x ", "IQ4_XS x "})
      EXPECT_NE(warning.find(t), std::string::npos) << warning;
    EXPECT_TRUE(warning.ends_with(" tensors are not native here: dequantised at load into q8_0")) << warning;
    EXPECT_TRUE(GgufConversionWarning(*src->file, WeightFormat::kBF16).ends_with("into bf16"));
    auto plain = GgufFile::Open(base_);
    ASSERT_TRUE(plain.ok());
    EXPECT_EQ(GgufConversionWarning(**plain, std::nullopt), "");
  }
  // --weight-format f32: every weight is its exact dequantised value.
  const std::vector<float> exact = Logits(file, WeightFormat::kF32);
  ExpectSameBits(exact, Logits(Write("f32.gguf", Store::kF32), WeightFormat::kF32), "f32");
  ExpectSameBits(exact, Logits(file, WeightFormat::kF32, 2), "f32 on two ranks");
  // Default: q8_0 re-quantised from the dequantised rows, the MLA halves included.
  ExpectSameBits(Logits(file, std::nullopt), Logits(Write("q8.gguf", Store::kQ8_0), std::nullopt), "q8_0");
}

// The transformers-v5 fused expert tensors (experts.gate_up_proj [E, 2I, H], experts.down_proj)
// convert to the same GGUF as the per-expert form of the same weights.
TEST(GgufDeepseek2Fused, FusedExpertsGiveTheSameFile) {
  const fs::path dir = fs::temp_directory_path() / ("gguf_ds2_fused_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  std::string bytes[2];
  for (int fused = 0; fused < 2; ++fused) {
    const fs::path hf = dir / (fused ? "fused" : "plain");
    const std::string cmd = std::string(MOERUN_SOURCE_DIR "/tools/make_test_model.py ") + hf.string() +
                            " --variant v3 --dtype bf16" + (fused ? " --fused-experts" : "") + " > /dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    WriteTokenizer(hf);
    auto ckpt = Checkpoint::Open(hf.string());
    ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
    Deepseek2GgufOptions opt;
    opt.target = DType::kBF16;
    const std::string out = (dir / (fused ? "fused.gguf" : "plain.gguf")).string();
    Status s = WriteDeepseek2Gguf(**ckpt, ReadFileToString((hf / "config.json").string()).value(),
                                  ReadFileToString((hf / "tokenizer.json").string()).value(), "", opt, out);
    ASSERT_TRUE(s.ok()) << s.ToString();
    bytes[fused] = ReadFileToString(out).value();
  }
  EXPECT_EQ(bytes[0].size(), bytes[1].size());
  EXPECT_TRUE(bytes[0] == bytes[1]);
  fs::remove_all(dir);
}

TEST(GgufDeepseek2Rules, TensorTypes) {
  EXPECT_EQ(Deepseek2GgufTensorType("blk.0.attn_norm.weight", {64}, DType::kQ8_0), DType::kF32);
  EXPECT_EQ(Deepseek2GgufTensorType("blk.0.attn_kv_a_norm.weight", {512}, DType::kQ8_0), DType::kF32);
  EXPECT_EQ(Deepseek2GgufTensorType("blk.1.ffn_gate_inp.weight", {64, 2048}, DType::kQ8_0), DType::kF32);
  EXPECT_EQ(Deepseek2GgufTensorType("blk.1.exp_probs_b.bias", {64}, DType::kQ8_0), DType::kF32);
  EXPECT_EQ(Deepseek2GgufTensorType("token_embd.weight", {102400, 2048}, DType::kQ8_0), DType::kQ8_0);
  EXPECT_EQ(Deepseek2GgufTensorType("blk.1.ffn_up_exps.weight", {64, 1408, 2048}, DType::kQ4_K),
            DType::kQ4_K);
  // Row length 1408 is not a multiple of 256: Q4_K falls back to Q5_0, Q6_K to Q8_0 (as llama.cpp).
  EXPECT_EQ(Deepseek2GgufTensorType("blk.1.ffn_down_exps.weight", {64, 2048, 1408}, DType::kQ4_K),
            DType::kQ5_0);
  EXPECT_EQ(Deepseek2GgufTensorType("blk.1.ffn_down_exps.weight", {64, 2048, 1408}, DType::kQ6_K),
            DType::kQ8_0);
  // Not even a multiple of 32: F16.
  EXPECT_EQ(Deepseek2GgufTensorType("blk.0.attn_k_b.weight", {16, 512, 128}, DType::kQ8_0), DType::kQ8_0);
  EXPECT_EQ(Deepseek2GgufTensorType("blk.0.attn_k_b.weight", {16, 512, 16}, DType::kQ8_0), DType::kF16);
  EXPECT_EQ(Deepseek2GgufTensorType("blk.0.attn_k_b.weight", {16, 512, 128}, DType::kQ4_K), DType::kQ5_0);
  EXPECT_EQ(Deepseek2GgufTensorType("blk.0.attn_k_b.weight", {16, 512, 24}, DType::kQ4_K), DType::kF16);
  EXPECT_EQ(Deepseek2GgufTensorType("output.weight", {300, 64}, DType::kBF16), DType::kBF16);
}

TEST(GgufDeepseek2Rules, RefusesUnrepresentableYarnAndOtherArchitectures) {
  const fs::path dir = fs::temp_directory_path() / ("gguf_ds2_mscale_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const std::string cmd = std::string(MOERUN_SOURCE_DIR "/tools/make_test_model.py ") +
                          (dir / "hf").string() + " --variant lite --dtype f32 --rope-mscale 1.0 > /dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  WriteTokenizer(dir / "hf");
  auto ckpt = Checkpoint::Open((dir / "hf").string());
  ASSERT_TRUE(ckpt.ok());
  Status s = WriteDeepseek2Gguf(**ckpt, ReadFileToString((dir / "hf/config.json").string()).value(),
                                ReadFileToString((dir / "hf/tokenizer.json").string()).value(), "", {},
                                (dir / "x.gguf").string());
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented) << s.ToString();
  EXPECT_NE(s.message().find("mscale_all_dim"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir / "x.gguf"));
  // A GGUF of another architecture is refused by name.
  auto w = GgufWriter::Create((dir / "llama.gguf").string());
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->AddKv("general.architecture", GgufValue::String("llama")).ok());
  ASSERT_TRUE((*w)->Finish().ok());
  auto m = OpenGgufDeepseek2((dir / "llama.gguf").string());
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("'llama'"), std::string::npos) << m.status().ToString();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace moerun
