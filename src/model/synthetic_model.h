// Synthetic DeepSeek-V2-family models with real shapes and random weights, for benchmarks and
// vLLM-style `--load-format dummy`: a TensorSource that generates each tensor the config implies
// on demand (seeded by the tensor's index, so any order gives the same bytes), plus writers for a
// safetensors directory or a GGUF file. (The tiny test models with a float64 reference come from
// tools/make_test_model.py.)
//
// Matrices come out in `matrix_dtype`: f32/bf16/f16 with N(0, 1/sqrt(K)) entries (embeddings
// N(0, 1)), or a GGUF block type written directly as random blocks of the same scale (no f32
// copy, no quantisation search), so a 16 B-parameter Q4_K file streams out in seconds per GB. A
// matrix whose rows do not fit the block size falls back exactly as the GGUF writer does
// (GgufMatrixType in model/gguf_deepseek2.h), so the writer copies every random block as is. Norms are 1, the
// router f32, the score-correction bias 0. Thread safety: Get is const and thread-safe (each call allocates
// its own tensor).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/thread_pool.h"
#include "io/tensor_source.h"
#include "model/model_config.h"

namespace moerun {

// The real DeepSeek-V2-Lite config.json (15.7 B parameters, 27 layers) with `layers` layers.
std::string SyntheticV2LiteConfigJson(int64_t layers);

class SyntheticTensorSource : public TensorSource {
 public:
  // `pool` (may be null) fills large tensors in parallel; it must outlive the source.
  static StatusOr<std::unique_ptr<SyntheticTensorSource>> Create(const ModelConfig& config,
                                                                 DType matrix_dtype, uint64_t seed,
                                                                 ThreadPool* pool);
  StatusOr<Tensor> Get(std::string_view name) const override;
  const TensorMeta* Find(std::string_view name) const override;
  std::vector<std::string> Names() const override;
  const std::string& path() const override { return path_; }

 private:
  SyntheticTensorSource() = default;
  std::vector<TensorMeta> metas_;  // sorted by name
  uint64_t seed_ = 0;
  ThreadPool* pool_ = nullptr;
  std::string path_ = "<synthetic>";
};

// Writes DIR/config.json and DIR/model.safetensors for the DeepSeek-V2-Lite architecture with
// `layers` layers (layer 0 dense, the rest MoE) in bf16.
Status WriteSyntheticV2Lite(const std::string& dir, int64_t layers, uint64_t seed, ThreadPool* pool);

}  // namespace moerun
