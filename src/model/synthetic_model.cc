#include "model/synthetic_model.h"

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "model/deepseek_model.h"

namespace moerun {

Status WriteSyntheticV2Lite(const std::string& dir, int64_t layers, uint64_t seed, ThreadPool* pool) {
  if (layers < 1) return InvalidArgument("--layers {} must be >= 1", layers);
  // The real DeepSeek-V2-Lite config.json (models.md 1.1), with fewer layers.
  nlohmann::json j = {{"architectures", {"DeepseekV2ForCausalLM"}},
                      {"model_type", "deepseek_v2"},
                      {"vocab_size", 102400},
                      {"hidden_size", 2048},
                      {"intermediate_size", 10944},
                      {"moe_intermediate_size", 1408},
                      {"num_hidden_layers", layers},
                      {"num_attention_heads", 16},
                      {"num_key_value_heads", 16},
                      {"n_routed_experts", 64},
                      {"n_shared_experts", 2},
                      {"num_experts_per_tok", 6},
                      {"first_k_dense_replace", 1},
                      {"moe_layer_freq", 1},
                      {"kv_lora_rank", 512},
                      {"q_lora_rank", nullptr},
                      {"qk_nope_head_dim", 128},
                      {"qk_rope_head_dim", 64},
                      {"v_head_dim", 128},
                      {"max_position_embeddings", 163840},
                      {"rope_theta", 10000},
                      {"rope_scaling",
                       {{"type", "yarn"},
                        {"factor", 40},
                        {"original_max_position_embeddings", 4096},
                        {"beta_fast", 32},
                        {"beta_slow", 1},
                        {"mscale", 0.707},
                        {"mscale_all_dim", 0.707}}},
                      {"topk_method", "greedy"},
                      {"n_group", 1},
                      {"topk_group", 1},
                      {"scoring_func", "softmax"},
                      {"norm_topk_prob", false},
                      {"routed_scaling_factor", 1.0},
                      {"rms_norm_eps", 1e-6},
                      {"bos_token_id", 100000},
                      {"eos_token_id", 100001},
                      {"tie_word_embeddings", false},
                      {"torch_dtype", "bfloat16"}};
  const std::string text = j.dump(2);
  ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromJson(text, "synthetic V2-Lite"));
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return IOError("cannot create {}: {}", dir, ec.message());
  RETURN_IF_ERROR(WriteFileAtomically(dir + "/config.json", text + "\n"));

  const auto specs = ExpectedModelTensors(config);
  std::vector<NamedTensor> tensors(specs.size());
  std::vector<Status> errors(specs.size());
  pool->ParallelFor(static_cast<int64_t>(specs.size()), [&](int64_t i, int) {
    const auto& [name, shape] = specs[static_cast<size_t>(i)];
    auto t = Tensor::Zeros(DType::kBF16, shape);
    if (!t.ok()) {
      errors[static_cast<size_t>(i)] = t.status();
      return;
    }
    std::mt19937_64 rng(seed * 1000003u + static_cast<uint64_t>(i));
    const bool is_norm = shape.size() == 1;
    const bool is_embed = name == "model.embed_tokens.weight";
    const float stddev =
        is_embed ? 1.0f : (is_norm ? 0.0f : 1.0f / std::sqrt(static_cast<float>(shape.back())));
    std::normal_distribution<float> dist(0.0f, 1.0f);
    uint16_t* d = t->data<uint16_t>();
    for (int64_t k = 0; k < t->numel(); ++k) d[k] = F32ToBf16(is_norm ? 1.0f : stddev * dist(rng));
    tensors[static_cast<size_t>(i)] = {name, std::move(*t)};
  });
  for (const Status& s : errors) RETURN_IF_ERROR(s);
  return WriteSafetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
}

}  // namespace moerun
