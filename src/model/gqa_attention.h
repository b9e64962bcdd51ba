// GqaAttention: grouped-query attention over the paged GQA cache (model/gqa_cache.h), shared by
// every GQA family of the registry — Qwen3-MoE, Qwen2-MoE, Mixtral, OLMoE (docs/models.md §6.3,
// §7.2, §8.2, §9.2). The families differ only in ModelConfig's switches. Per layer, for the normed
// input a [T, H] at positions p, on this rank's query heads [h0, h1) and KV heads [g0, g1):
//
//   q = a·q_projᵀ (+ q_proj.bias), k = a·k_projᵀ (+ k_proj.bias), v = a·v_projᵀ (+ v_proj.bias)
//                                                                   biases: qkv_bias (Qwen2-MoE)
//   q[t, h] = RMSNorm(q[t, h]; q_norm [hd]), k likewise              kPerHead (Qwen3-MoE)
//   q[t] = RMSNorm(q[t]; q_norm [nh·hd]), k[t] = RMSNorm(k[t]; k_norm [nkv·hd])   kWhole (OLMoE)
//   q, k, v = clamp(·, −clip_qkv, clip_qkv)                          clip_qkv > 0 (OLMoE option)
//   q, k = rotate-half RoPE(p, rope_theta); cache[l, p] = (k, v)
//   o[t, h] = Σ_{j ≤ p_t} softmax_j(q[t, h]·k[j, h / (nh/nkv)] / sqrt(hd)) · v[j, h / (nh/nkv)]
//
// o is [T, (h1 − h0)·hd]; the model's o_proj (row-parallel, model/decoder_model.h) sums it over
// TP. The whole-projection norm needs every head's squares: each rank sums its heads' squares per
// head (double, sent as the float pair hi, lo), one all_gather over TP per layer ("layer L q/k norm
// sums") gives every rank all heads' sums, and each rank adds them in head order — the same
// additions as on one rank, so the result does not depend on the layout (bitwise).
//
// KV heads over TP (GqaKvHeads): with tp dividing nkv each rank holds nkv / tp of them; with tp a
// multiple of nkv (e.g. Qwen3-30B-A3B's 4 KV heads on --tp 8) each rank's query heads share one
// KV head, held (weights and cache) by the tp / nkv ranks of that group, as vLLM replicates them;
// the whole-projection norm then counts each KV head's squares once (from its first holder).
//
// Thread safety: immutable after loading; Forward uses the pool of its LinearContext and issues
// its collective from the calling (rank) thread.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/tensor_source.h"
#include "kernels/linear.h"
#include "kernels/packed_weight.h"
#include "model/decoder_model.h"
#include "model/model_config.h"
#include "model/model_loading.h"
#include "model/rope.h"
#include "parallel/layout.h"

namespace moerun {

// Adds one layer's attention tensors under `prefix` ("model.layers.N.self_attn."): q/k/v/o_proj
// weights, the q/k/v biases (qkv_bias), q_norm / k_norm ([hd] per head, or [nh·hd] / [nkv·hd]).
void AddGqaAttentionTensors(const ModelConfig& config, const std::string& prefix, TensorTable* table);

// The KV heads TP rank `tp_rank` of `tp` holds (above), e.g. [1, 2) for rank 2 of 8 with 4 KV
// heads. InvalidArgument naming both counts when neither of tp and num_key_value_heads divides the
// other.
StatusOr<Range> GqaKvHeads(const ModelConfig& config, int tp, int tp_rank);
// TP ranks that hold each KV head: tp / num_key_value_heads when replicated, else 1.
int64_t GqaKvReplicas(const ModelConfig& config, int tp);

class GqaAttention {
 public:
  // This rank's query heads `heads` (e.g. [0, 16) of 32) and KV heads `kv_heads` (e.g. [0, 2) of 4).
  GqaAttention(const ModelConfig& config, Range heads, Range kv_heads);

  // Loads layer `layer`'s part of this rank (layers in order, 0 first; names validated before).
  Status LoadLayer(const TensorSource& ckpt, int64_t layer, std::optional<WeightFormat> format);
  // o [t_count, local heads · hd] from x [t_count, H]; writes each row's K and V into its
  // GqaKvCache. Every TP rank of a replica calls it, also with no rows (the kWhole all_gather).
  Status Forward(int64_t layer, const float* x, int64_t t_count, const RowPlace* rows, float* o,
                 const LinearContext& ctx, const ParallelLayout& layout) const;
  // Bytes of layer `layer`'s q/k/v projections on this rank (read per decoded token).
  double WeightBytes(int64_t layer) const;

 private:
  struct Layer {
    PackedWeight q_proj, k_proj, v_proj;        // [local heads · hd, H], [local KV heads · hd, H] x2
    std::vector<float> q_bias, k_bias, v_bias;  // this rank's rows; empty without qkv_bias
    std::vector<float> q_norm, k_norm;          // kPerHead: [hd]; kWhole: this rank's slice; else empty
  };
  // kWhole: RMSNorm of q [T, nh·hd] and k [T, nkv·hd] over all TP ranks' heads (see above).
  Status WholeNorm(int64_t layer, const Layer& at, float* q, float* k, int64_t t_count,
                   const ParallelLayout& layout) const;

  const ModelConfig& config_;  // owned by the model, outlives this
  Range heads_, kv_;
  RotateHalfRope rope_;
  std::vector<Layer> layers_;
};

}  // namespace moerun
