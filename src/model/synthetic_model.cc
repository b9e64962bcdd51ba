#include "model/synthetic_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "model/arch.h"
#include "model/gguf_deepseek2.h"

namespace moerun {
namespace {

// splitmix64: a fast, seedable stream (one per tensor row, so rows fill in parallel).
struct Rng {
  uint64_t s;
  uint64_t Next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Approximately N(0, 1): the sum of four uniforms, rescaled (variance 4/12).
  float Normal() {
    const uint64_t r = Next();
    float sum = 0;
    for (int i = 0; i < 4; ++i) sum += static_cast<float>((r >> (16 * i)) & 0xffff) / 65535.0f;
    return (sum - 2.0f) * 1.7320508f;
  }
};

// One row of `cols` random values of standard deviation `sd` in `dtype` (dense or block).
void FillRow(DType dtype, int64_t cols, float sd, Rng* rng, uint8_t* dst) {
  if (!IsBlockDType(dtype)) {
    for (int64_t c = 0; c < cols; ++c) {
      const float v = sd * rng->Normal();
      if (dtype == DType::kF32) {
        std::memcpy(dst + c * 4, &v, 4);
      } else {
        const uint16_t h = dtype == DType::kBF16 ? F32ToBf16(v) : F32ToF16(v);
        std::memcpy(dst + c * 2, &h, 2);
      }
    }
    return;
  }
  // Random block bytes, then the scale fields set so values have about `sd` spread. Layouts:
  // docs/formats.md.
  const size_t bytes = DTypeRowBytes(dtype, cols), bb = DTypeBlockBytes(dtype);
  for (size_t i = 0; i < bytes; i += 8) {
    const uint64_t r = rng->Next();
    std::memcpy(dst + i, &r, std::min<size_t>(8, bytes - i));
  }
  for (uint8_t* b = dst; b < dst + bytes; b += bb) {
    switch (dtype) {
      case DType::kQ8_0: {  // d * q, q uniform in [-128, 127]: sd ~ 74 d
        const uint16_t d = F32ToF16(sd / 74.0f);
        std::memcpy(b, &d, 2);
        break;
      }
      case DType::kQ4_0: {  // d * (q - 8), q uniform in [0, 15]: sd ~ 4.6 d
        const uint16_t d = F32ToF16(sd / 4.6f);
        std::memcpy(b, &d, 2);
        break;
      }
      case DType::kQ5_0: {  // d * (q - 16), q uniform in [0, 31]: sd ~ 9.2 d
        const uint16_t d = F32ToF16(sd / 9.2f);
        std::memcpy(b, &d, 2);
        break;
      }
      case DType::kQ5_1: {  // d * q + m, q uniform in [0, 31]: sd ~ 9.2 d; m = -15.5 d (mean 0)
        const float d = sd / 9.2f;
        const uint16_t hd = F32ToF16(d), hm = F32ToF16(-15.5f * d);
        std::memcpy(b, &hd, 2);
        std::memcpy(b + 2, &hm, 2);
        break;
      }
      case DType::kQ4_K:
      case DType::kQ5_K: {  // d * sc * q - dmin * m, every sub-block sc = 32, m = 16 (mean 0)
        // q uniform in [0, 15] (Q4_K: mean 7.5, sd 4.6) or [0, 31] (Q5_K: mean 15.5, sd 9.2).
        const bool q5 = dtype == DType::kQ5_K;
        const float mean = q5 ? 15.5f : 7.5f, spread = q5 ? 9.2f : 4.6f;
        const uint16_t d = F32ToF16(sd / (spread * 32.0f)), dmin = F32ToF16(sd * mean / 16.0f / spread);
        std::memcpy(b, &d, 2);
        std::memcpy(b + 2, &dmin, 2);
        for (int j = 0; j < 4; ++j) {
          b[4 + j] = 32 | (2 << 6);  // sc[j] = 32; top bits: sc[j + 4] = 2 << 4
          b[8 + j] = 16 | (1 << 6);  // m[j] = 16; top bits: m[j + 4] = 1 << 4
          b[12 + j] = 0;             // low nibbles of sc[j + 4] and m[j + 4]
        }
        break;
      }
      case DType::kQ6_K: {  // d * sc * (q - 32), q uniform in [0, 63]: sd ~ 18.5 d sc; sc = 16
        for (int j = 0; j < 16; ++j) b[192 + j] = 16;
        const uint16_t d = F32ToF16(sd / (18.5f * 16.0f));
        std::memcpy(b + 208, &d, 2);
        break;
      }
      default:
        break;
    }
  }
}

float StdDev(const std::string& name, const Shape& shape) {
  if (name == "model.embed_tokens.weight") return 1.0f;
  return 1.0f / std::sqrt(static_cast<float>(shape.back()));
}

}  // namespace

std::string SyntheticV2LiteConfigJson(int64_t layers) {
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
  return j.dump(2);
}

StatusOr<std::unique_ptr<SyntheticTensorSource>> SyntheticTensorSource::Create(const ModelConfig& config,
                                                                               DType matrix_dtype,
                                                                               uint64_t seed,
                                                                               ThreadPool* pool) {
  if (matrix_dtype != DType::kF32 && matrix_dtype != DType::kBF16 && matrix_dtype != DType::kF16 &&
      !IsBlockDType(matrix_dtype)) {
    return InvalidArgument("synthetic weights cannot be {}", DTypeName(matrix_dtype));
  }
  std::unique_ptr<SyntheticTensorSource> s(new SyntheticTensorSource());
  s->seed_ = seed;
  s->pool_ = pool;
  for (const auto& [name, shape] : ExpectedModelTensors(config)) {
    const bool router = name.ends_with(".gate.weight");  // mlp.gate / block_sparse_moe.gate
    const bool vector = shape.size() == 1;
    const DType t = vector || router ? DType::kF32 : GgufMatrixType(matrix_dtype, shape.back());
    s->metas_.push_back({name, t, shape});
  }
  std::sort(s->metas_.begin(), s->metas_.end(),
            [](const TensorMeta& a, const TensorMeta& b) { return a.name < b.name; });
  return s;
}

const TensorMeta* SyntheticTensorSource::Find(std::string_view name) const {
  auto it = std::lower_bound(metas_.begin(), metas_.end(), name,
                             [](const TensorMeta& m, std::string_view n) { return m.name < n; });
  return it != metas_.end() && it->name == name ? &*it : nullptr;
}

std::vector<std::string> SyntheticTensorSource::Names() const {
  std::vector<std::string> names;
  for (const TensorMeta& m : metas_) names.push_back(m.name);
  return names;
}

StatusOr<Tensor> SyntheticTensorSource::Get(std::string_view name) const {
  const TensorMeta* m = Find(name);
  if (m == nullptr) return NotFound("tensor '{}' is not part of the synthetic model", name);
  ASSIGN_OR_RETURN(Tensor t, Tensor::Zeros(m->dtype, m->shape));
  const bool norm = m->shape.size() == 1;
  if (norm) {
    // Norm weights 1; the score-correction bias 0.
    if (!m->name.ends_with("e_score_correction_bias"))
      std::fill(t.data<float>(), t.data<float>() + t.numel(), 1.0f);
    return t;
  }
  const int64_t rows = t.numel() / m->shape.back(), cols = m->shape.back();
  const size_t row_bytes = DTypeRowBytes(m->dtype, cols);
  const float sd = StdDev(m->name, m->shape);
  const uint64_t base = seed_ * 0x100000001b3ull ^ std::hash<std::string_view>{}(name);
  auto fill = [&](int64_t chunk, int) {
    for (int64_t r = chunk * 64; r < std::min(rows, (chunk + 1) * 64); ++r) {
      Rng rng{base + static_cast<uint64_t>(r) * 0x9e3779b97f4a7c15ull};
      FillRow(m->dtype, cols, sd, &rng, t.data<uint8_t>() + static_cast<size_t>(r) * row_bytes);
    }
  };
  const int64_t chunks = (rows + 63) / 64;
  ParallelForOn(pool_, chunks, fill);
  return t;
}

Status WriteSyntheticV2Lite(const std::string& dir, int64_t layers, uint64_t seed, ThreadPool* pool) {
  if (layers < 1) return InvalidArgument("--layers {} must be >= 1", layers);
  const std::string text = SyntheticV2LiteConfigJson(layers);
  ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromJson(text, "synthetic V2-Lite"));
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return IOError("cannot create {}: {}", dir, ec.message());
  RETURN_IF_ERROR(WriteFileAtomically(dir + "/config.json", text + "\n"));
  ASSIGN_OR_RETURN(auto source, SyntheticTensorSource::Create(config, DType::kBF16, seed, pool));
  std::vector<NamedTensor> tensors;
  for (const std::string& name : source->Names()) {
    ASSIGN_OR_RETURN(Tensor t, source->Get(name));
    tensors.push_back({name, std::move(t)});
  }
  return WriteSafetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
}

}  // namespace moerun
