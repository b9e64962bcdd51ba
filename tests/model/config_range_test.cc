// Numbers never pass silently: config values out of range are refused at parse time naming the
// field and the bound, and a NaN/Inf at a layer boundary stops the forward pass naming the layer
// and the position, on one rank and on in-process TP ranks, in fast and deterministic mode.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "comm/in_process_comm.h"
#include "model/arch.h"
#include "model/synthetic_model.h"

namespace moerun {
namespace {

// SyntheticV2LiteConfigJson(2) with the fields of `patch` set (at the top level).
std::string LiteWith(const nlohmann::json& patch) {
  nlohmann::json j = nlohmann::json::parse(SyntheticV2LiteConfigJson(2));
  j.update(patch);
  return j.dump();
}
std::string LiteWith(const std::string& field, const nlohmann::json& value) {
  return LiteWith({{field, value}});
}

std::string QwenWith(const std::string& field, const nlohmann::json& value) {
  nlohmann::json j = {{"model_type", "qwen3_moe"},  {"vocab_size", 64},
                      {"hidden_size", 32},          {"intermediate_size", 64},
                      {"num_hidden_layers", 2},     {"num_attention_heads", 4},
                      {"num_key_value_heads", 2},   {"head_dim", 8},
                      {"num_experts", 4},           {"num_experts_per_tok", 2},
                      {"moe_intermediate_size", 16}};
  j[field] = value;
  return j.dump();
}

TEST(ConfigRanges, NormEpsilonAndRopeBaseMustBePositive) {
  struct Case {
    std::string json, want;
  };
  const std::vector<Case> cases = {
      {LiteWith("rms_norm_eps", -1e-6), "cfg: field 'rms_norm_eps' = -1e-06 must be > 0"},
      {LiteWith("rms_norm_eps", 0), "cfg: field 'rms_norm_eps' = 0 must be > 0"},
      {LiteWith("rope_theta", 0), "cfg: field 'rope_theta' = 0 must be > 0"},
      {LiteWith("rope_theta", -10000), "cfg: field 'rope_theta' = -10000 must be > 0"},
      {QwenWith("rms_norm_eps", -1), "cfg: field 'rms_norm_eps' = -1 must be > 0"},
      {QwenWith("rope_theta", 0), "cfg: rope_theta 0 must be > 0"},
      {LiteWith("rope_scaling", {{"type", "yarn"}, {"factor", 0}}), "cfg rope_scaling: factor 0 must be > 0"},
      {LiteWith("rope_scaling", {{"type", "yarn"}, {"factor", 4}, {"beta_fast", 0}}),
       "cfg rope_scaling: field 'beta_fast' = 0 must be > 0"},
      {LiteWith({{"rope_theta", 1}, {"rope_scaling", {{"type", "yarn"}, {"factor", 4}}}}),
       "cfg: field 'rope_theta' = 1 must be > 1 with YaRN scaling"},
  };
  for (const Case& c : cases) {
    const StatusOr<ModelConfig> got = ModelConfig::FromJson(c.json, "cfg");
    ASSERT_FALSE(got.ok()) << c.want;
    EXPECT_EQ(got.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(got.status().message().find(c.want), std::string::npos) << got.status().message();
  }
  EXPECT_TRUE(ModelConfig::FromJson(LiteWith("rms_norm_eps", 1e-5), "cfg").ok());
  EXPECT_TRUE(ModelConfig::FromJson(QwenWith("rope_theta", 1e6), "cfg").ok());
}

TEST(ConfigRanges, NumbersBeyondDoubleAreRefused) {
  std::string text = LiteWith("rms_norm_eps", "HUGE");
  text.replace(text.find("\"HUGE\""), 6, "1e999");
  EXPECT_FALSE(ModelConfig::FromJson(text, "cfg").ok());  // the JSON parser refuses it already
}

// A synthetic source whose tensor `poisoned` has row `row` set to NaN (same dtype as generated).
class PoisonedSource : public TensorSource {
 public:
  PoisonedSource(std::unique_ptr<TensorSource> inner, std::string poisoned, int64_t row)
      : inner_(std::move(inner)), poisoned_(std::move(poisoned)), row_(row) {}
  StatusOr<Tensor> Get(std::string_view name) const override {
    ASSIGN_OR_RETURN(Tensor t, inner_->Get(name));
    if (name != poisoned_) return t;
    ASSIGN_OR_RETURN(Tensor f, t.ToF32());
    ASSIGN_OR_RETURN(Tensor copy, Tensor::Zeros(DType::kF32, f.shape()));
    std::memcpy(copy.raw(), f.raw(), f.nbytes());
    const int64_t cols = copy.numel() / copy.dim(0);
    for (int64_t c = 0; c < cols; ++c) copy.data<float>()[row_ * cols + c] = std::nanf("");
    return copy;
  }
  const TensorMeta* Find(std::string_view name) const override {
    const TensorMeta* m = inner_->Find(name);
    if (m == nullptr || name != poisoned_) return m;
    meta_ = *m;
    meta_.dtype = DType::kF32;
    return &meta_;
  }
  std::vector<std::string> Names() const override { return inner_->Names(); }
  const std::string& path() const override { return inner_->path(); }

 private:
  std::unique_ptr<TensorSource> inner_;
  std::string poisoned_;
  int64_t row_;
  mutable TensorMeta meta_;
};

// The V2-Lite layout (a dense layer 0, MoE layer 1, YaRN) at toy sizes, so loading is instant.
std::string TinyDeepseekJson() {
  return LiteWith({{"vocab_size", 64},
                   {"hidden_size", 64},
                   {"intermediate_size", 128},
                   {"moe_intermediate_size", 32},
                   {"num_attention_heads", 2},
                   {"num_key_value_heads", 2},
                   {"n_routed_experts", 4},
                   {"n_shared_experts", 1},
                   {"num_experts_per_tok", 2},
                   {"kv_lora_rank", 32},
                   {"qk_nope_head_dim", 16},
                   {"qk_rope_head_dim", 8},
                   {"v_head_dim", 16},
                   {"bos_token_id", 1},
                   {"eos_token_id", 2}});
}

// Loads the 2-layer tiny DeepSeek with `poisoned` row `row` NaN on this rank and runs the
// chunks one forward pass each (a decode after a prefill: a NaN key/value row of a later position in
// the same chunk would reach earlier rows through 0 x NaN in the masked value sum).
Status RunPoisoned(Communicator* world, const ParallelOptions& par, const std::string& poisoned, int64_t row,
                   const std::vector<std::vector<int32_t>>& chunks) {
  const ModelConfig c = ModelConfig::FromJson(TinyDeepseekJson(), "tiny").value();
  ThreadPool pool(1);
  ASSIGN_OR_RETURN(std::unique_ptr<SyntheticTensorSource> inner,
                   SyntheticTensorSource::Create(c, DType::kBF16, 3, &pool));
  ModelLoadOptions o;
  o.parallel = par;
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                   LoadModelFromSource(std::make_unique<PoisonedSource>(std::move(inner), poisoned, row), c,
                                       o, &pool, {}, world));
  std::unique_ptr<ModelCache> cache = model->NewCache(16);
  for (const std::vector<int32_t>& ids : chunks) {
    const Model::SequenceChunk chunk{cache.get(), ids};
    std::vector<float> logits;
    RETURN_IF_ERROR(model->ForwardBatch(std::span<const Model::SequenceChunk>(&chunk, 1), false, &logits));
  }
  return Status::Ok();
}

TEST(LayerBoundary, ANanEmbeddingRowStopsAtLayerZeroNamingItsPosition) {
  for (const bool deterministic : {false, true}) {
    ParallelOptions par;
    par.deterministic = deterministic;
    const Status s = RunPoisoned(nullptr, par, "model.embed_tokens.weight", 5,
                                 std::vector<std::vector<int32_t>>{{1, 2}, {5}, {3}});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(s.message().rfind("layer 0 output: nan at position 2 (batch row 0, column ", 0), 0u)
        << s.message();
  }
}

TEST(LayerBoundary, ANanNormStopsAtItsLayerOnEveryTpRank) {
  for (const bool deterministic : {false, true}) {
    ParallelOptions par;
    par.tp = 2;
    par.deterministic = deterministic;
    std::vector<std::string> messages(2);
    const auto t0 = std::chrono::steady_clock::now();
    const Status s = RunRanks(2, [&](Communicator& world) -> Status {
      world.set_timeout(std::chrono::seconds(60));
      const Status r = RunPoisoned(&world, par, "model.layers.1.post_attention_layernorm.weight", 0,
                                   std::vector<std::vector<int32_t>>{{1, 2, 3}});
      messages[static_cast<size_t>(world.rank())] = r.message();
      return r;
    });
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30));
    EXPECT_FALSE(s.ok());
    for (const std::string& m : messages) {
      EXPECT_EQ(m.rfind("layer 1 output: nan at position 0 (batch row 0, column ", 0), 0u) << m;
    }
  }
}

}  // namespace
}  // namespace moerun
