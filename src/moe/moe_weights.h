// MoeWeights: one MoE block's weights, validated against MoeConfig and packed for the kernels.
//
// Tensor names are relative to the block (HF layout), after `prefix` (e.g. "model.layers.3.mlp."):
//   gate.weight                         [E, H]   router (kept in f32, as DeepSeek computes it)
//   gate.e_score_correction_bias        [E]      noaux_tc only (required there, refused elsewhere)
//   experts.{e}.{gate,up}_proj.weight   [I, H]   e < E, or the fused experts.gate_up_proj [E, 2I, H]
//   experts.{e}.down_proj.weight        [H, I]   or the fused experts.down_proj [E, H, I]
//     (Mixtral names them experts.{e}.w1 (gate), w3 (up), w2 (down): MoeConfig::expert_names,
//     ExpertTensorName; prefix "model.layers.N.block_sparse_moe.")
//   shared_experts.{gate,up}_proj.weight [S, H], shared_experts.down_proj.weight [H, S]  (DeepSeek)
//   shared_expert.{gate,up,down}_proj.weight + shared_expert_gate.weight [1, H]          (Qwen2-MoE)
// Validation happens before any weight is packed: every expected tensor present with its exact
// shape and a float dtype (matrices: also a GGUF block type, or F8_E4M3 with its `_scale_inv`,
// docs/models.md §2.3), and no unexpected tensor under the prefix (an extra expert means the
// config and the weights disagree). Errors name the tensor, its shape and the expected shape.
// FP8 experts are dequantised row by row while packed, only this rank's slice (PackedWeight::Pack).
//
// Thread safety: immutable after Load; shared read-only.
#pragma once

#include <string>
#include <vector>

#include "core/tensor.h"
#include "core/thread_pool.h"
#include "io/checkpoint.h"
#include "kernels/packed_weight.h"
#include "moe/moe_config.h"

namespace moerun {

// Expected tensor names and shapes of a block (relative names), for validation and generators.
struct MoeTensorSpec {
  std::string name;  // e.g. "experts.3.up_proj.weight"
  Shape shape;       // e.g. [1408, 2048]
};
std::vector<MoeTensorSpec> ExpectedMoeTensors(const MoeConfig& config);
// A routed expert's matrix name relative to the block: "experts.{e}.{name}.weight" with the
// config's names, e.g. "experts.3.gate_proj.weight", or "experts.3.w1.weight" for Mixtral's gate.
enum class ExpertMatrix { kGate, kUp, kDown };
std::string ExpertTensorName(const MoeConfig& config, int64_t expert, ExpertMatrix matrix);
// The name prefix of shared-expert tensors: "shared_experts." (DeepSeek) or "shared_expert." (Qwen2).
std::string SharedExpertPrefix(const MoeConfig& config);

// Which part of a block one rank holds. Defaults: everything.
struct MoeShard {
  int64_t expert_begin = 0, expert_end = -1;  // routed experts held, e.g. [16, 32) under --ep
  int64_t i_begin = 0, i_end = -1;            // slice of moe_intermediate_size held, e.g. [704, 1408)
  int64_t s_begin = 0, s_end = -1;            // slice of the shared MLP width held
};

struct MoeWeights {
  Tensor router;                              // [E, H] f32
  PackedWeight router_packed;                 // the same, packed f32 for the matmul kernels
  std::vector<float> score_bias;              // [E] e_score_correction_bias, empty if absent
  std::vector<PackedWeight> gate_up;          // E x [I (gate|up interleaved), H]
  std::vector<PackedWeight> down;             // E x [H, I]
  PackedWeight shared_gate_up;                // [S, H] interleaved; empty when S = 0
  PackedWeight shared_down;                   // [H, S]
  std::vector<float> shared_gate;             // [H] Qwen2-MoE sigmoid gate row, empty otherwise
  WeightFormat format = WeightFormat::kBF16;  // of the routed gate/up weights, e.g. kQ4_K (a down
                                              // slice may fall back, see ResolveWeightFormat)

  // Validates and loads the block at `prefix` in `ckpt`. `requested` packs experts in that
  // format; nullopt means "as stored" (bf16 stays bf16, a GGUF Q4_K stays Q4_K, ...).
  // `shard` selects what this rank packs (only those bytes of the mapping are read).
  static StatusOr<MoeWeights> Load(const MoeConfig& config, const TensorSource& ckpt,
                                   const std::string& prefix, std::optional<WeightFormat> requested,
                                   ThreadPool* pool, MoeShard shard = {});
};

// The K alignment (1, 32 or 256 columns) of the formats the block at `prefix` packs its routed and
// shared down projections in, resolved on their full widths as Load does: deterministic mode's
// K-blocks must be whole blocks of them (LayoutDims::routed_down_align). A model takes the maximum
// over its MoE layers (Merge). Missing tensors count as 1: Load names them.
struct DownAlignment {
  int64_t routed = 1;  // e.g. 32 for q8_0 experts
  int64_t shared = 1;
  void Merge(const DownAlignment& o);
};
DownAlignment MoeDownAlignment(const MoeConfig& config, const TensorSource& ckpt, const std::string& prefix,
                               std::optional<WeightFormat> requested);

// The shared expert's multiplier for one token: sigmoid(x . shared_expert_gate) for Qwen2-MoE,
// 1 otherwise. x_row: [H]. One fixed summation order, so every layout gets the same bits.
float SharedGateValue(const MoeWeights& w, const float* x_row, int64_t hidden);

}  // namespace moerun
