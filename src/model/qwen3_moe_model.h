// Qwen3MoeModel: the Qwen3-MoE architecture (registry entry qwen3_moe in model/arch.h): the shared
// decoder skeleton (model/decoder_model.h) with grouped-query attention.
//
// Attention per layer (docs/models.md §6.3; transformers modeling_qwen3_moe.py Qwen3MoeAttention):
//   q = a·q_projᵀ [T, nh·hd], k = a·k_projᵀ, v = a·v_projᵀ [T, nkv·hd]
//   q, k: RMSNorm per head over hd (q_norm / k_norm weights, rms_norm_eps), then rotate-half RoPE
//   query head h attends with KV head h / (nh / nkv); scale hd^-1/2; causal
//   o [T, nh·hd] -> o_proj (DecoderModel, row-parallel)
// The cache (GqaKvCache) holds the normed, roped keys and the values of this rank's KV heads.
// Every layer is MoE unless decoder_sparse_step / mlp_only_layers say otherwise (ModelConfig::
// IsMoeLayer); the MoE block is softmax top-k (renormalised when norm_topk_prob), no shared
// expert, run by ParallelMoe on every layout.
// Tensor parallel: query heads and KV heads are both split over the TP ranks (each rank holds
// nh/tp query heads and the nkv/tp KV heads they read); load refuses a tp that does not divide both.
//
// Thread safety: immutable after Load; ForwardBatch uses internal scratch, one call at a time.
#pragma once

#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "core/thread_pool.h"
#include "io/tensor_source.h"
#include "kernels/packed_weight.h"
#include "model/decoder_model.h"
#include "model/model.h"
#include "model/model_config.h"
#include "model/model_loading.h"
#include "model/rope.h"

namespace moerun {

// This rank's attention weights of one layer: query heads [h0, h1), KV heads [g0, g1).
struct GqaAttentionWeights {
  PackedWeight q_proj;        // [(h1 - h0) * hd, H]: q_proj rows h * hd + d of this rank's heads
  PackedWeight k_proj;        // [(g1 - g0) * hd, H]
  PackedWeight v_proj;        // [(g1 - g0) * hd, H]
  std::vector<float> q_norm;  // [hd], shared by every query head
  std::vector<float> k_norm;  // [hd], shared by every KV head
};

// The Qwen3-MoE tensor-name table for `config` (docs/models.md §6.2; MoE blocks by prefix).
TensorTable Qwen3MoeTensorTable(const ModelConfig& config);

class Qwen3MoeModel : public DecoderModel {
 public:
  // Validates `source` (HF names) against the config and loads this rank's part; the model keeps
  // `source` alive. `world`: this rank's communicator (nullptr: one rank). Tools load through the
  // registry (model/arch.h), which calls this.
  static StatusOr<std::unique_ptr<Qwen3MoeModel>> LoadFrom(std::unique_ptr<TensorSource> source,
                                                           ModelConfig config,
                                                           const ModelLoadOptions& options, ThreadPool* pool,
                                                           const LoadProgress& progress = {},
                                                           Communicator* world = nullptr);
  ~Qwen3MoeModel() override;

  using Model::NewCache;
  StatusOr<std::shared_ptr<KvBlockStorage>> NewKvStorage(int64_t n_blocks,
                                                         int64_t block_tokens) const override;
  StatusOr<std::unique_ptr<ModelCache>> NewCache(std::shared_ptr<KvBlockStorage> storage,
                                                 std::vector<int32_t> block_table,
                                                 int64_t capacity) const override;
  double CacheBytesPerToken() const override;

 protected:
  CacheKind cache_kind() const override { return CacheKind::kGqaKv; }
  void Attention(int64_t layer, const float* x, int64_t t_count, const RowPlace* rows, float* o) override;
  double AttentionWeightBytes(int64_t layer) const override;

 private:
  Qwen3MoeModel() = default;

  std::unique_ptr<RotateHalfRope> rope_;
  std::vector<GqaAttentionWeights> attn_;  // per layer
  int64_t kv_begin_ = 0, kv_end_ = 0;      // KV heads on this rank
};

}  // namespace moerun
