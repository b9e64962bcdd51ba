// The architecture registry: model_type -> how to parse its config.json, its tensor-name table,
// its cache kind and its loader. Tools and the engine load every model through here and see it
// only as a Model (model/model.h); adding an architecture is one entry in arch.cc plus its
// Model subclass (usually a DecoderModel with its own attention, model/decoder_model.h).
//
// Registered (docs/models.md): deepseek_v2 and deepseek_v3 (DeepseekModel: MLA, latent cache,
// dense + MoE layers by first_k_dense_replace / moe_layer_freq) and the GQA families (GqaModel:
// GQA attention over a K/V cache, model/gqa_model.h): qwen3_moe (per-head q/k RMSNorm), qwen2_moe
// (q/k/v biases, sigmoid-gated shared expert), mixtral (block_sparse_moe experts w1/w3/w2, top-2
// renormalised) and olmoe (q/k RMSNorm over the whole projection, optional clip_qkv).
// Layer kinds (dense MLP or MoE) follow ModelConfig::IsMoeLayer, whose rule fields each parser sets.
//
// Thread safety: the registry is immutable; the functions are thread-safe.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "io/tensor_source.h"
#include "model/model.h"
#include "model/model_config.h"
#include "model/model_loading.h"

namespace moerun {

struct Arch {
  const char* model_type;  // config.json model_type, e.g. "qwen3_moe"
  const char* family;      // for messages, e.g. "Qwen3-MoE (GQA)"
  CacheKind cache_kind;    // what NewCache returns
  // Every architecture field of config.json into `config` (model_type already set).
  Status (*parse_config)(const std::string& text, const std::string& source, ModelConfig* config);
  // Every tensor the config implies (MoE blocks by prefix; their names: moe/moe_weights.h).
  TensorTable (*tensor_table)(const ModelConfig& config);
  // Validates `source` against the table and loads this rank's part.
  StatusOr<std::unique_ptr<Model>> (*load)(std::unique_ptr<TensorSource> source, ModelConfig config,
                                           const ModelLoadOptions& options, ThreadPool* pool,
                                           const LoadProgress& progress, Communicator* world);
};

// The entry of `model_type`, or nullptr.
const Arch* FindArch(std::string_view model_type);
// The registered model_types, e.g. "deepseek_v2, deepseek_v3, qwen3_moe, qwen2_moe, mixtral, olmoe".
std::string ArchNames();

// Every tensor name and shape the config implies, MoE blocks in the per-expert form.
std::vector<std::pair<std::string, Shape>> ExpectedModelTensors(const ModelConfig& config);

// Loads a model of any registered architecture from a tensor source under HF names (a checkpoint,
// a GGUF file through model/gguf_deepseek2.h, synthetic weights) and its config; the model keeps
// `source` alive. `world`: this rank's communicator (nullptr: a one-rank world of its own).
StatusOr<std::unique_ptr<Model>> LoadModelFromSource(std::unique_ptr<TensorSource> source, ModelConfig config,
                                                     const ModelLoadOptions& options, ThreadPool* pool,
                                                     const LoadProgress& progress = {},
                                                     Communicator* world = nullptr);
// The same from a Hugging Face checkpoint directory (config.json + safetensors).
StatusOr<std::unique_ptr<Model>> LoadModelFromDir(const std::string& dir, const ModelLoadOptions& options,
                                                  ThreadPool* pool, const LoadProgress& progress = {},
                                                  Communicator* world = nullptr);

}  // namespace moerun
