// DeepseekModel: a DeepSeek-V2/V3-family model loaded from a Hugging Face checkpoint directory.
//
// Forward math follows docs/models.md §3: embeddings; per layer RMSNorm -> MLA attention ->
// residual -> RMSNorm -> dense MLP (layers < first_k_dense_replace) or MoE block -> residual;
// final RMSNorm; lm_head. MLA runs in the absorbed form (q_nope projected into the kv_lora latent
// through kv_b's K rows; values read back through kv_b's V rows), which is exactly equal in math
// to the expanded per-head form and lets the cache hold only c_kv and k_pe (KvCache). The kv_b
// halves stay in their stored format (f32/f16/bf16 or a GGUF block type, never re-quantised) and
// the two per-head products run on those bytes through kernels/row_ops.h.
// Validation before any weight is packed: every tensor the config implies is present with its
// shape, nothing else under model.* (bar the MTP layers of V3), float dtypes.
//
// Thread safety: immutable after Load; Forward uses internal scratch, so one sequence at a time.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "core/scratch_buffer.h"
#include "core/thread_pool.h"
#include "io/checkpoint.h"
#include "kernels/linear.h"
#include "kernels/packed_weight.h"
#include "kernels/row_ops.h"
#include "model/kv_cache.h"
#include "model/model_config.h"
#include "model/rope.h"
#include "moe/parallel_moe.h"
#include "parallel/rank_context.h"

namespace moerun {

struct ModelLoadOptions {
  // Packed format of the linear layers, e.g. kQ4_K; nullopt: as stored. Embeddings, norms and the
  // MoE router stay full precision, as in llama.cpp; MLA's kv_b stays as stored whatever this says.
  std::optional<WeightFormat> weight_format;
  KernelPolicy kernels;        // kernel rows (kernels/kernel_table.h)
  bool check_tensors = false;  // scan every tensor for NaN/Inf first
  // Layout (world = tp x dp). Attention heads are split over the TP ranks of a replica (row-
  // parallel o_proj, one all-reduce); MoE layers run on ParallelMoe with the same flags; dense
  // MLP, norms, embeddings and lm_head are replicated. Each DP replica runs its own sequences.
  ParallelOptions parallel;
};

struct AttentionWeights {
  PackedWeight q_proj;           // [nh * (dn + dr), H] when q_lora_rank == 0
  PackedWeight q_a_proj;         // [q_lora, H]
  std::vector<float> q_a_norm;   // [q_lora]
  PackedWeight q_b_proj;         // [nh * (dn + dr), q_lora]
  PackedWeight kv_a_proj;        // [r + dr, H]: rows [0, r) c_kv, [r, r + dr) k_pe
  std::vector<float> kv_a_norm;  // [r]
  // kv_b_proj [nh * (dn + dv), r] split per head into its K and V rows, for this rank's heads only
  // (local head k = global head h0 + k), in the stored dtype and bytes (kernels/row_ops.h):
  //   k_b_transposed == false (HF kv_b_proj, GGUF attn_kv_b): k_b [nh * dn, r], row k*dn + d =
  //     kv_b row h*(dn+dv) + d; q_lat = sum_d q_nope[d] * row  (RowsAxpy).
  //   k_b_transposed == true (GGUF attn_k_b [nh, r, dn]): k_b [nh * r, dn], row k*r + c = K[:, c]
  //     of head h; q_lat[c] = dot(row, q_nope)  (RowsDot).
  // v_b [nh * dv, r]: row k*dv + d = kv_b row h*(dn+dv) + dn + d (GGUF attn_v_b); o_head[d] =
  //   dot(row, o_lat)  (RowsDot).
  StoredRows k_b;
  bool k_b_transposed = false;
  StoredRows v_b;
  PackedWeight o_proj;  // [H, nh * dv]
};

struct LayerWeights {
  std::vector<float> input_norm;  // [H]
  std::vector<float> post_norm;   // [H]
  AttentionWeights attn;
  PackedWeight mlp_gate_up;          // dense layers: [intermediate (gate|up), H]
  PackedWeight mlp_down;             // [H, intermediate]
  std::unique_ptr<ParallelMoe> moe;  // MoE layers
};

// The sizes a layout splits (heads, vocabulary, experts): what ParallelLayout validates against.
LayoutDims ModelLayoutDims(const ModelConfig& config);

// Every tensor name and shape the config implies (MoE blocks in the per-expert form).
std::vector<std::pair<std::string, Shape>> ExpectedModelTensors(const ModelConfig& config);

class DeepseekModel {
 public:
  // `progress(fraction, what)` is called while loading (may be empty). `world` is this rank's
  // communicator (nullptr: a one-rank world of its own).
  static StatusOr<std::unique_ptr<DeepseekModel>> Load(
      const std::string& dir, const ModelLoadOptions& options, ThreadPool* pool,
      const std::function<void(double, const std::string&)>& progress = {}, Communicator* world = nullptr);
  // The same from any tensor source under HF names (e.g. a GGUF file through
  // model/gguf_deepseek2.h) and its config; the model keeps `source` alive (it may view its bytes).
  static StatusOr<std::unique_ptr<DeepseekModel>> LoadFrom(
      std::unique_ptr<TensorSource> source, ModelConfig config, const ModelLoadOptions& options,
      ThreadPool* pool, const std::function<void(double, const std::string&)>& progress = {},
      Communicator* world = nullptr);
  ~DeepseekModel();

  const ModelConfig& config() const { return config_; }

  // Bytes of weights this rank reads to decode one token: attention, dense MLPs, shared experts,
  // num_experts_per_tok routed experts per MoE layer (those it holds, on average), lm_head slice.
  double DecodeWeightBytesPerToken() const;

  // Runs a batch of sequences at once: each chunk's tokens at positions [cache->size(), +n) of its
  // own cache (appended). Linear layers and MoE see all rows together; attention stays within
  // each sequence. logits: [rows, vocab] for every row (all_logits) or for the last row of each
  // chunk with tokens, in chunk order.
  struct SequenceChunk {
    KvCache* cache;
    std::span<const int32_t> tokens;
  };
  Status ForwardBatch(std::span<const SequenceChunk> seqs, bool all_logits, std::vector<float>* logits);

  // Runs tokens at positions [cache->size(), cache->size() + T), appending to the cache.
  // logits: [T, vocab] when all_logits, else [1, vocab] for the last token. Under DP a replica
  // without a sequence calls it with no tokens to take part in the collectives (logits empty).
  Status Forward(std::span<const int32_t> tokens, KvCache* cache, bool all_logits,
                 std::vector<float>* logits);

  // Called after every ForwardBatch with this rank's collectives of that pass (op, group, bytes,
  // what and its states; `--stats`). Empty: the log is not read.
  using CollectiveSink = std::function<void(const std::vector<CollectiveRecord>&)>;
  void set_collective_sink(CollectiveSink sink) { collective_sink_ = std::move(sink); }
  // This rank's layout (coordinates and groups, made once at load).
  const ParallelLayout& layout() const { return context_->layout(); }

 private:
  DeepseekModel() = default;
  struct RowPlace {
    KvCache* cache;  // the row's sequence
    int64_t pos;     // the row's position in it
  };
  Status RunBatch(std::span<const SequenceChunk> seqs, bool all_logits, std::vector<float>* logits);
  void Attention(int64_t layer, const float* x, int64_t t_count, const RowPlace* rows, float* o);
  // o [T, local_heads * dv] -> out [T, H] summed over all heads (all TP ranks).
  Status OutputProjection(int64_t layer, const float* o, int64_t t_count, float* out);
  Status MoeLayer(int64_t layer, const float* x, int64_t t_count, float* out);
  void RmsNorm(const float* x, const std::vector<float>& w, int64_t rows, int64_t dim, float eps,
               float* y) const;

  ModelConfig config_;
  ModelLoadOptions options_;
  ThreadPool* pool_ = nullptr;
  std::unique_ptr<Rope> rope_;
  Tensor embed_;                        // [V, H] as stored (mmapped view)
  std::unique_ptr<TensorSource> ckpt_;  // keeps the mapping of embed_ alive
  std::vector<LayerWeights> layers_;
  std::vector<float> final_norm_;  // [H]
  PackedWeight lm_head_;           // [V_local, H]: this TP rank's vocab rows
  ActivationBuffer acts_;          // prepared activations for Linear
  LinearContext Ctx() { return {.pool = pool_, .policy = &options_.kernels, .acts = &acts_}; }

  std::unique_ptr<Communicator> own_world_;  // when loaded without a world
  Communicator* world_ = nullptr;
  std::shared_ptr<RankContext> context_;   // layout (groups split once), pool, MoE scratch
  int64_t head_begin_ = 0, head_end_ = 0;  // attention heads on this rank (layout().Heads())
  CollectiveSink collective_sink_;
  RowOpsIsa row_isa_ = RowOpsIsa::kRef;  // kv_b row ops (follows --kernel ref|avx2|avx512)
};

}  // namespace moerun
