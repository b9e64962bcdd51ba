// Weight-loading helpers shared by every architecture: the tensor-name table an architecture
// declares and its validation against a TensorSource, and the small loaders (a norm vector as f32,
// a matrix packed in the requested format, a NaN/Inf scan).
//
// Validation rule (docs/models.md §2.1): every tensor of the table is present with its shape and
// a float dtype (or a GGUF block type for a matrix); every tensor of the source is in the table,
// under a MoE prefix (validated by MoeWeights::Load), a layer index >= num_hidden_layers (V3's MTP
// layers, unused) or a rotary_emb.inv_freq buffer. Errors name the file, the tensor and the shape.
// Thread safety: plain functions.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/status.h"
#include "io/tensor_source.h"
#include "kernels/packed_weight.h"
#include "model/model_config.h"

namespace moerun {

// The tensors an architecture expects for one config.
struct TensorTable {
  std::map<std::string, Shape> shapes;  // non-MoE tensors, e.g. "model.norm.weight" -> [H]
  std::set<std::string> moe_prefixes;   // ModelConfig::MoePrefix of MoE layers (MoeWeights names)
};

// The decoder skeleton's tensors (embeddings, lm_head unless tied, final norm, per layer the two
// norms and the dense MLP or the MoE prefix) plus, per layer, what `add_attention(layer, prefix,
// table)` adds under prefix "model.layers.N.self_attn." (its projections and o_proj).
TensorTable DecoderTensorTable(
    const ModelConfig& c,
    const std::function<void(int64_t, const std::string&, TensorTable*)>& add_attention);

Status ValidateTensors(const ModelConfig& c, const TensorSource& ckpt, const TensorTable& table);
Status CheckFinite(const TensorSource& ckpt);

StatusOr<std::vector<float>> LoadVector(const TensorSource& ckpt, const std::string& name);
// Packs W[:, c0:c1) in the requested format, or the nearest one whose K alignment divides
// `align_k` (the slice width, or a deterministic K-block).
StatusOr<PackedWeight> PackAs(const Tensor& t, std::optional<WeightFormat> requested, int64_t c0 = 0,
                              int64_t c1 = -1, int64_t align_k = 0);
StatusOr<PackedWeight> LoadPacked(const TensorSource& ckpt, const std::string& name,
                                  std::optional<WeightFormat> requested);

}  // namespace moerun
