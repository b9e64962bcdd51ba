// The GQA families' GGUF mapping (model/gguf_gqa.h) at the tensor level: llama's q/k row order
// against the numpy definition of convert_hf_to_gguf.py's LlamaModel.permute, and for each family
// an HF checkpoint -> GGUF -> HF round trip at F32 (every tensor bit-identical, the config fields
// equal) and at Q8_0 (block-quantised matrices come back in Q8_0, the llama q/k rows too).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "model/gguf_common.h"
#include "model/gguf_gqa.h"
#include "model/gguf_model.h"

namespace moerun {
namespace {

namespace fs = std::filesystem;

// numpy: w.reshape(n_head, 2, hd // 2, ...).swapaxes(1, 2).reshape(w.shape): output row r holds
// input row src[r], computed by walking the swapped index space in C order.
std::vector<int64_t> NumpyPermute(int64_t n_head, int64_t hd) {
  std::vector<int64_t> src;
  for (int64_t h = 0; h < n_head; ++h) {
    for (int64_t j = 0; j < hd / 2; ++j) {          // axis 1 after the swap (was axis 2)
      for (int64_t t = 0; t < 2; ++t) {             // axis 2 after the swap (was axis 1)
        src.push_back((h * 2 + t) * (hd / 2) + j);  // the element's C-order index before the swap
      }
    }
  }
  return src;
}

// The vocabulary object a GGUF tokenizer becomes: the same JSON as ordered_json's operator[] key
// by key (insertion order; a repeated key keeps its first place and takes the last value).
TEST(OrderedObjectBuilder, GivesOperatorBracketsObject) {
  const std::vector<std::pair<std::string, int>> puts = {{"b", 0}, {"a", 1}, {"\u0120the", 2}, {"a", 3},
                                                         {"", 4},  {"c", 5}, {"b", 6}};
  gguf_internal::OrderedObjectBuilder built;
  gguf_internal::OJson expected = gguf_internal::OJson::object();
  for (const auto& [key, value] : puts) {
    built.Put(key, value);
    expected[key] = value;
  }
  const gguf_internal::OJson got = std::move(built).Take();
  EXPECT_EQ(got.dump(), expected.dump());
  EXPECT_EQ(got.dump(), "{\"b\":6,\"a\":3,\"\u0120the\":2,\"\":4,\"c\":5}");
  EXPECT_EQ(std::move(gguf_internal::OrderedObjectBuilder()).Take().dump(), "{}");
}

TEST(LlamaQkRowOrder, IsConvertsPermuteAndItsInverse) {
  for (const auto& [heads, hd] : {std::pair<int64_t, int64_t>{1, 4}, {8, 16}, {4, 128}, {3, 2}}) {
    const std::vector<int64_t> to = LlamaQkRowOrder(heads, hd, /*to_gguf=*/true);
    const std::vector<int64_t> from = LlamaQkRowOrder(heads, hd, /*to_gguf=*/false);
    EXPECT_EQ(to, NumpyPermute(heads, hd)) << heads << "x" << hd;
    for (size_t r = 0; r < to.size(); ++r)
      EXPECT_EQ(from[static_cast<size_t>(to[r])], static_cast<int64_t>(r));
  }
}

struct Family {
  const char* model_type;
  const char* arch;
  const char* make_flags;
  const char* tokenizer;
};

class GgufGqaRoundTrip : public ::testing::TestWithParam<Family> {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / (std::string("gguf_gqa_") + GetParam().model_type);
    fs::remove_all(dir_);
    hf_ = (dir_ / "hf").string();
    const std::string make = std::string("/usr/bin/python3 " MOERUN_SOURCE_DIR "/tools/make_test_model.py ") +
                             hf_ + " --arch " + GetParam().model_type + " " + GetParam().make_flags +
                             " > /dev/null 2>&1";
    ASSERT_EQ(std::system(make.c_str()), 0) << make;
    const std::string tok =
        std::string("/usr/bin/python3 " MOERUN_SOURCE_DIR "/tests/compat/place_gqa_tokenizer.py ") + hf_ +
        " --kind " + GetParam().tokenizer;
    ASSERT_EQ(std::system(tok.c_str()), 0) << tok;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Write(DType target) {
    const std::string out = (dir_ / (std::string(DTypeName(target)) + ".gguf")).string();
    auto ckpt = Checkpoint::Open(hf_);
    EXPECT_TRUE(ckpt.ok()) << ckpt.status().ToString();
    GgufWriteOptions opt;
    opt.target = target;
    const Status s = WriteGgufModel(**ckpt, ReadFileToString(hf_ + "/config.json").value(),
                                    ReadFileToString(hf_ + "/tokenizer.json").value(),
                                    ReadFileToString(hf_ + "/tokenizer_config.json").value(), opt, out);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  fs::path dir_;
  std::string hf_;
};

TEST_P(GgufGqaRoundTrip, F32IsBitExactWithTheSameConfig) {
  const std::string path = Write(DType::kF32);
  auto m = OpenGgufModel(path);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->file->GetString("general.architecture").value(), GetParam().arch);
  auto ckpt = Checkpoint::Open(hf_);
  ASSERT_TRUE(ckpt.ok());
  auto hf_config = ModelConfig::FromJson(ReadFileToString(hf_ + "/config.json").value(), "config.json");
  ASSERT_TRUE(hf_config.ok());
  const ModelConfig& a = *hf_config;
  const ModelConfig& b = m->config;
  EXPECT_EQ(a.model_type, b.model_type);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.qkv_bias, b.qkv_bias);
  EXPECT_EQ(a.qk_norm, b.qk_norm);
  EXPECT_EQ(static_cast<float>(a.rms_norm_eps), static_cast<float>(b.rms_norm_eps));
  EXPECT_EQ(static_cast<float>(a.rope_theta), static_cast<float>(b.rope_theta));
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_id, b.eos_token_id);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.moe_block, b.moe_block);
  EXPECT_EQ(a.moe.n_routed_experts, b.moe.n_routed_experts);
  EXPECT_EQ(a.moe.num_experts_per_tok, b.moe.num_experts_per_tok);
  EXPECT_EQ(a.moe.moe_intermediate_size, b.moe.moe_intermediate_size);
  EXPECT_EQ(a.moe.shared_intermediate_size, b.moe.shared_intermediate_size);
  EXPECT_EQ(a.moe.shared_expert_gated, b.moe.shared_expert_gated);
  EXPECT_EQ(a.moe.norm_topk_prob, b.moe.norm_topk_prob);
  for (int64_t l = 0; l < a.num_hidden_layers; ++l) EXPECT_EQ(a.IsMoeLayer(l), b.IsMoeLayer(l)) << l;
  EXPECT_EQ((*ckpt)->Names(), m->tensors->Names());
  for (const std::string& name : (*ckpt)->Names()) {
    auto x = (*ckpt)->Get(name);
    auto y = m->tensors->Get(name);
    ASSERT_TRUE(x.ok() && y.ok()) << name;
    ASSERT_EQ(x->shape(), y->shape()) << name;
    ASSERT_EQ(y->dtype(), DType::kF32) << name;
    EXPECT_EQ(std::memcmp(x->raw(), y->raw(), x->nbytes()), 0) << name;
  }
}

TEST_P(GgufGqaRoundTrip, Q8_0KeepsMatricesQuantised) {
  const std::string path = Write(DType::kQ8_0);
  auto m = OpenGgufModel(path);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  for (const char* name : {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
                           "model.layers.0.self_attn.o_proj.weight", "model.embed_tokens.weight"}) {
    const TensorMeta* meta = m->tensors->Find(name);
    ASSERT_NE(meta, nullptr) << name;
    EXPECT_EQ(meta->dtype, DType::kQ8_0) << name;
    auto t = m->tensors->Get(name);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    EXPECT_EQ(t->dtype(), DType::kQ8_0) << name;
  }
  // The router and the norms stay F32, as convert_hf_to_gguf.py keeps them.
  EXPECT_EQ(m->tensors->Find("model.layers.0.input_layernorm.weight")->dtype, DType::kF32);
  EXPECT_EQ(m->tensors->Find("model.layers.0." + m->config.moe_block + "gate.weight")->dtype, DType::kF32);
}

INSTANTIATE_TEST_SUITE_P(
    Families, GgufGqaRoundTrip,
    ::testing::Values(Family{"qwen2_moe", "qwen2moe", "--qwen-mlp-only-layers=", "qwen2"},
                      Family{"qwen3_moe", "qwen3moe", "", "qwen2"},
                      Family{"olmoe", "olmoe", "--kv-heads 8", "olmo"},
                      Family{"mixtral", "llama", "", "spm"}),
    [](const ::testing::TestParamInfo<Family>& p) { return std::string(p.param.model_type); });

}  // namespace
}  // namespace moerun
