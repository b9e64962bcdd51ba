// DecoderModel: the pre-norm decoder skeleton every registered architecture shares, with the
// shared layers; an architecture (DeepseekModel, GqaModel) supplies only its attention.
//
//   h = embed_tokens[ids]
//   per layer l:  a = RMSNorm(h; input_layernorm)
//                 h += OutputProjection(Attention(l, a))      architecture hook -> o_proj (row-parallel)
//                 a = RMSNorm(h; post_attention_layernorm)
//                 h += MoE(a) (ParallelMoe) if IsMoeLayer(l), else dense SwiGLU MLP
//   logits = RMSNorm(h; model.norm) · lm_headᵀ                   vocab-parallel, all-gathered
//
// (docs/models.md §3.1 for DeepSeek, §6–§9 for the GQA families.) The MoE block of layer l is at
// ModelConfig::MoePrefix(l) ("model.layers.l.mlp.", Mixtral's "…block_sparse_moe."). Parallel layout:
// attention heads are split over the TP ranks of a replica, [head_begin, head_end); the attention hook writes
// o [T, local heads x o_head_dim] and o_proj's matching columns are summed over TP (one all-reduce, or
// 128-bit fixed point per head in --deterministic mode); MoE layers run on ParallelMoe (every layout it
// supports, SP all-gathers over TP here); dense MLPs, norms and embeddings are replicated.
//
// Thread safety: immutable after load; ForwardBatch uses internal scratch, one call at a time,
// from the rank's own thread (collectives are issued only there).
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "core/thread_pool.h"
#include "io/tensor_source.h"
#include "kernels/linear.h"
#include "kernels/packed_weight.h"
#include "model/model.h"
#include "model/model_config.h"
#include "model/model_loading.h"
#include "moe/parallel_moe.h"
#include "parallel/rank_context.h"

namespace moerun {

// The sizes a layout splits (heads, o_proj columns per head, vocabulary, experts) and the down
// projections' format alignment (deterministic K-blocks): what ParallelLayout validates against,
// for every registered architecture.
LayoutDims ModelLayoutDims(const ModelConfig& config, const DownAlignment& align = {});
// The widest down-projection format alignment over the model's MoE layers (MoeDownAlignment), for
// deterministic mode's K-blocks; `requested` as --weight-format (nullopt: as stored).
DownAlignment ModelDownAlignment(const ModelConfig& config, const TensorSource& ckpt,
                                 std::optional<WeightFormat> requested);

// One row of a batch: its sequence's cache (of the model's CacheKind) and its position there.
struct RowPlace {
  ModelCache* cache;
  int64_t pos;  // e.g. 17
};

class DecoderModel : public Model {
 public:
  ~DecoderModel() override;

  const ModelConfig& hparams() const override { return config_; }
  const ModelConfig& config() const { return config_; }
  Status ForwardBatch(std::span<const SequenceChunk> seqs, bool all_logits,
                      std::vector<float>* logits) override;
  double DecodeWeightBytesPerToken() const override;
  void set_collective_sink(CollectiveSink sink) override { collective_sink_ = std::move(sink); }
  std::vector<std::vector<uint64_t>> RoutedTokenCounts() const override;
  // This rank's layout (coordinates and groups, made once at load).
  const ParallelLayout& layout() const { return context_->layout(); }
  // y = w ⊙ x / sqrt(mean(x²) + eps) per row of `dim` (sum of squares in double, over 8 fixed
  // interleaved lanes: the same bits on every machine); y may alias x.
  static void RmsNorm(const float* x, const std::vector<float>& w, int64_t rows, int64_t dim, float eps,
                      float* y);

 protected:  // The weights every architecture has per layer; attention's own live in the subclass.
  struct LayerWeights {
    std::vector<float> input_norm;     // [H]
    std::vector<float> post_norm;      // [H]
    PackedWeight o_proj;               // [H, local heads * o_head_dim]: this rank's heads' columns
    PackedWeight mlp_gate_up;          // dense layers: [intermediate (gate|up), H]
    PackedWeight mlp_down;             // [H, intermediate]
    std::unique_ptr<ParallelMoe> moe;  // MoE layers
  };

  DecoderModel() = default;

  // Load, step 1: options, pool, world (nullptr: a one-rank world of its own), config, source.
  void Init(std::unique_ptr<TensorSource> source, ModelConfig config, const ModelLoadOptions& options,
            ThreadPool* pool, Communicator* world);
  // Step 2: the rank's layout, validated and split into groups once for every layer
  // (parallel/layout.h, sizes from ModelLayoutDims), and its heads [h0, h1); o_head_dim = o_proj
  // columns per head, e.g. 128.
  Status SetUpLayout(int64_t o_head_dim);
  // Step 3 (after validation): embeddings (a view), final norm, this TP rank's lm_head vocab rows.
  Status LoadEmbeddingsAndHead();
  // Step 4: per layer, the norms, load_attention(l) (the architecture's tensors), o_proj's columns
  // of this rank's heads, and the dense MLP or the MoE block; drops file pages as it goes.
  Status LoadLayers(const LoadProgress& progress, const std::function<Status(int64_t)>& load_attention);

  // Architecture hooks.
  virtual CacheKind cache_kind() const = 0;
  // o [T, local heads * o_head_dim] from the normed input x [T, H]; writes each row's cache entry.
  // Called on every rank of a replica, also with no rows (an attention may issue collectives).
  virtual Status Attention(int64_t layer, const float* x, int64_t t_count, const RowPlace* rows,
                           float* o) = 0;
  // Bytes of this layer's attention weights besides o_proj, read per decoded token.
  virtual double AttentionWeightBytes(int64_t layer) const = 0;

  LinearContext Ctx() { return {.pool = pool_, .policy = &options_.kernels, .acts = &acts_}; }
  int world_size() const override { return world_->size(); }
  int64_t local_heads() const { return head_end_ - head_begin_; }

  ModelConfig config_;
  ModelLoadOptions options_;
  ThreadPool* pool_ = nullptr;
  std::unique_ptr<TensorSource> ckpt_;  // keeps the mapping of embed_ alive
  std::vector<LayerWeights> layers_;
  Communicator* world_ = nullptr;
  std::shared_ptr<RankContext> context_;   // layout (groups split once), pool, MoE scratch
  int64_t head_begin_ = 0, head_end_ = 0;  // attention heads on this rank (layout().Heads())
  int64_t o_head_dim_ = 0;                 // o_proj columns per head, e.g. 128

 private:
  // o [T, local_heads * o_head_dim] -> out [T, H] summed over all heads (all TP ranks).
  Status OutputProjection(int64_t layer, const float* o, int64_t t_count, float* out);
  Status MoeLayer(int64_t layer, const float* x, int64_t t_count, float* out);
  Status RunBatch(std::span<const SequenceChunk> seqs, bool all_logits, std::vector<float>* logits);

  Tensor embed_;                             // [V, H] as stored (mmapped view)
  std::vector<float> final_norm_;            // [H]
  PackedWeight lm_head_;                     // [V_local, H]: this TP rank's vocab rows
  ActivationBuffer acts_;                    // prepared activations for Linear
  std::unique_ptr<Communicator> own_world_;  // when loaded without a world
  CollectiveSink collective_sink_;
};

}  // namespace moerun
