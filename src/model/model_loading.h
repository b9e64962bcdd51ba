// Weight-loading helpers shared by every architecture: the tensor-name table an architecture
// declares and its validation against a TensorSource, and the small loaders (a norm vector as f32,
// a matrix packed in the requested format, a NaN/Inf scan).
//
// Validation rule (docs/models.md §2.1): every tensor of the table is present with its shape and
// a float dtype (or, for a matrix, a GGUF block type or F8_E4M3 with its `_scale_inv`, §2.3); every
// tensor of the source (an FP8 weight's `_scale_inv` counting as that weight) is in the table, under
// a MoE prefix (validated by MoeWeights::Load), in a layer >= num_hidden_layers (V3's MTP layers,
// unused) or a rotary_emb.inv_freq buffer. Errors name the file, the tensor and the shape.
//
// FP8 weights are dequantised while packing, one row of the rank's slice at a time (StoredWeight,
// PackedWeight::Pack): loading holds no dequantised copy of a tensor, let alone of the model.
// Thread safety: plain functions.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "core/stored_weight.h"
#include "io/fp8_weights.h"
#include "io/tensor_source.h"
#include "kernels/packed_weight.h"
#include "kernels/row_ops.h"
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
// --check-tensors: every tensor whose name starts with `prefix` (all by default) scanned for
// NaN/Inf; the error names the file, the tensor, the value and its flat index.
Status CheckFinite(const TensorSource& ckpt, std::string_view prefix = {});

StatusOr<std::vector<float>> LoadVector(const TensorSource& ckpt, const std::string& name);
// Packs W[:, c0:c1) in the requested format, or the nearest one whose K alignment divides
// `align_k` (the slice width, or a deterministic K-block).
// An FP8 weight resolves like a bf16 one (auto: bf16).
StatusOr<PackedWeight> PackAs(const StoredWeight& w, std::optional<WeightFormat> requested, int64_t c0 = 0,
                              int64_t c1 = -1, int64_t align_k = 0);
inline StatusOr<PackedWeight> PackAs(const Tensor& t, std::optional<WeightFormat> requested, int64_t c0 = 0,
                                     int64_t c1 = -1, int64_t align_k = 0) {
  return PackAs(StoredWeight(t), requested, c0, c1, align_k);
}
// The weight `name` (any dtype, FP8 with its scales) packed whole.
StatusOr<PackedWeight> LoadPacked(const TensorSource& ckpt, const std::string& name,
                                  std::optional<WeightFormat> requested);

// How a checkpoint tensor is held once loaded, by the loaders' rules (for `inspect`): vectors
// (norms, biases, score-correction biases) and router gates (HF `mlp.gate`, `block_sparse_moe.gate`,
// `shared_expert_gate`; GGUF `ffn_gate_inp*`) as f32; token embeddings left in the file's pages as
// stored (rows are read on use); FP8 block scales folded into their weight (0 bytes); MLA's kv_b
// (HF `kv_b_proj`; GGUF `attn_kv_b`, `attn_k_b`, `attn_v_b`) in StoredRowsDType; every other matrix
// packed in ResolveWeightFormat(requested, stored, cols). `name` is an HF or a GGUF tensor
// name, `shape` outermost first with the row length (cols) last.
struct ResidentForm {
  std::string format;  // "q4_k", "f32", or "bf16 (mapped)"
  double bytes = 0;    // for the whole tensor (every TP rank's share together)
};
ResidentForm ResidentFormOf(std::string_view name, DType stored, std::span<const int64_t> shape,
                            std::optional<WeightFormat> requested);

// The dtype a matrix is kept in for the row ops (MLA's kv_b): its own `stored` dtype, or for FP8
// (F8_E4M3, block scaled) or a load-only block dtype (Q3_K, Q2_K, IQ4_NL, IQ4_XS) the storage of the format
// `requested` resolves to for `cols`-long rows (auto: bf16 for FP8, q8_0 for the block dtypes).
// --weight-format does not re-quantise the others: the row ops read every other dtype as stored.
DType StoredRowsDType(DType stored, std::optional<WeightFormat> requested, int64_t cols);
// An empty StoredRows of StoredRowsDType(w.dtype(), requested, cols).
StatusOr<StoredRows> MakeStoredRowsFor(const StoredWeight& w, std::optional<WeightFormat> requested,
                                       int64_t cols);
// Appends rows [r0, r1) of `w` to `out` (made by MakeStoredRowsFor for w): bytes as stored, or FP8 /
// load-only rows dequantised one at a time and converted to out->dtype.
void AppendWeightRows(const StoredWeight& w, int64_t r0, int64_t r1, StoredRows* out);

}  // namespace moerun
