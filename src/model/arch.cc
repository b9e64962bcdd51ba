#include "model/arch.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <string_view>

#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "model/deepseek_model.h"
#include "model/gqa_model.h"
#include "moe/moe_weights.h"

namespace moerun {
namespace {

template <class M>
StatusOr<std::unique_ptr<Model>> LoadAs(std::unique_ptr<TensorSource> source, ModelConfig config,
                                        const ModelLoadOptions& options, ThreadPool* pool,
                                        const LoadProgress& progress, Communicator* world) {
  ASSIGN_OR_RETURN(std::unique_ptr<M> m,
                   M::LoadFrom(std::move(source), std::move(config), options, pool, progress, world));
  return std::unique_ptr<Model>(std::move(m));
}

constexpr std::array<Arch, 6> kArchs = {{
    {"deepseek_v2", "DeepSeek-V2 (MLA)", CacheKind::kLatentMla, &ParseDeepseekConfig, &DeepseekTensorTable,
     &LoadAs<DeepseekModel>},
    {"deepseek_v3", "DeepSeek-V3 (MLA)", CacheKind::kLatentMla, &ParseDeepseekConfig, &DeepseekTensorTable,
     &LoadAs<DeepseekModel>},
    {"qwen3_moe", "Qwen3-MoE (GQA, per-head q/k norm)", CacheKind::kGqaKv, &ParseQwen3MoeConfig,
     &GqaTensorTable, &LoadAs<GqaModel>},
    {"qwen2_moe", "Qwen2-MoE (GQA, q/k/v biases, gated shared expert)", CacheKind::kGqaKv,
     &ParseQwen2MoeConfig, &GqaTensorTable, &LoadAs<GqaModel>},
    {"mixtral", "Mixtral (GQA, block_sparse_moe top-2)", CacheKind::kGqaKv, &ParseMixtralConfig,
     &GqaTensorTable, &LoadAs<GqaModel>},
    {"olmoe", "OLMoE (GQA, whole-projection q/k norm)", CacheKind::kGqaKv, &ParseOlmoeConfig, &GqaTensorTable,
     &LoadAs<GqaModel>},
}};

// The checkpoint's layers ("model.layers.N." names) must be exactly config.json's
// num_hidden_layers: fewer is caught as a missing tensor, but more would be dropped silently.
Status CheckLayerCount(const TensorSource& source, const ModelConfig& config, const std::string& dir) {
  constexpr std::string_view kPrefix = "model.layers.";
  int64_t layers = 0;
  for (const std::string& name : source.Names()) {
    if (name.compare(0, kPrefix.size(), kPrefix) != 0) continue;
    const int64_t n = std::strtoll(name.c_str() + kPrefix.size(), nullptr, 10);
    if (n < 0 || n > (int64_t{1} << 40)) continue;  // not a layer index: a missing-tensor error later
    layers = std::max(layers, n + 1);
  }
  if (layers > config.num_hidden_layers) {
    return InvalidArgument(
        "{}/config.json: num_hidden_layers {} is smaller than the checkpoint's {} layers "
        "(model.layers.{}.*); "
        "moerun does not drop layers",
        dir, config.num_hidden_layers, layers, layers - 1);
  }
  return Status::Ok();
}

}  // namespace

const Arch* FindArch(std::string_view model_type) {
  for (const Arch& a : kArchs)
    if (model_type == a.model_type) return &a;
  return nullptr;
}

std::string ArchNames() {
  std::string s;
  for (const Arch& a : kArchs) s += (s.empty() ? "" : ", ") + std::string(a.model_type);
  return s;
}

std::vector<std::pair<std::string, Shape>> ExpectedModelTensors(const ModelConfig& c) {
  const Arch* arch = FindArch(c.model_type);
  if (arch == nullptr) return {};
  const TensorTable e = arch->tensor_table(c);
  std::vector<std::pair<std::string, Shape>> out(e.shapes.begin(), e.shapes.end());
  for (const std::string& prefix : e.moe_prefixes) {
    for (const MoeTensorSpec& spec : ExpectedMoeTensors(c.moe))
      out.emplace_back(prefix + spec.name, spec.shape);
  }
  return out;
}

StatusOr<std::unique_ptr<Model>> LoadModelFromSource(std::unique_ptr<TensorSource> source, ModelConfig config,
                                                     const ModelLoadOptions& options, ThreadPool* pool,
                                                     const LoadProgress& progress, Communicator* world) {
  const Arch* arch = FindArch(config.model_type);
  if (arch == nullptr) {
    return InvalidArgument("model_type '{}' is not a supported architecture (expected one of {})",
                           config.model_type, ArchNames());
  }
  return arch->load(std::move(source), std::move(config), options, pool, progress, world);
}

StatusOr<std::unique_ptr<Model>> LoadModelFromDir(const std::string& dir, const ModelLoadOptions& options,
                                                  ThreadPool* pool, const LoadProgress& progress,
                                                  Communicator* world) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(dir + "/config.json"));
  ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromJson(text, dir + "/config.json"));
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(dir));
  RETURN_IF_ERROR(CheckLayerCount(*ckpt, config, dir));
  return LoadModelFromSource(std::move(ckpt), std::move(config), options, pool, progress, world);
}

}  // namespace moerun
