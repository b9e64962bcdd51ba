// DeepseekModel: the DeepSeek-V2/V3 architecture (registry entries deepseek_v2 / deepseek_v3 in
// model/arch.h): the shared decoder skeleton (model/decoder_model.h) with MLA attention.
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
// Thread safety: immutable after Load; ForwardBatch uses internal scratch, one call at a time.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "core/scratch_buffer.h"
#include "core/thread_pool.h"
#include "io/tensor_source.h"
#include "kernels/activations.h"
#include "kernels/packed_weight.h"
#include "kernels/row_ops.h"
#include "kernels/small_gemm.h"
#include "model/arch.h"  // ExpectedModelTensors, for existing callers
#include "model/decoder_model.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "model/model_config.h"
#include "model/model_loading.h"
#include "model/rope.h"

namespace moerun {

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
  // The same halves per local head packed for the matmul kernels (kernels/linear.h) when their
  // dtype is a block format with integer kernel rows (q8_0 ... q6_k), the row length a multiple of
  // its block and --precision is not f32 (PackKvBHeads); k_b / v_b are then empty. Their products
  // are then quantised matmuls like every other projection (activations rounded to 8 bits per 32
  // elements), not dequantise-and-dot row ops:
  //   k_b_heads[k] [r, dn] (only when k_b_transposed): q_lat = q_nope W^T;
  //   v_b_heads[k] [dv, r]: o_head = o_lat W^T.
  std::vector<PackedWeight> k_b_heads, v_b_heads;
  // o_proj [H, nh * dv] lives in DecoderModel::LayerWeights (shared by every architecture).
};

// The DeepSeek-V2/V3 tensor-name table for `config` (docs/models.md §2.1; MoE blocks by prefix).
TensorTable DeepseekTensorTable(const ModelConfig& config);

class DeepseekModel : public DecoderModel {
 public:
  // Validates `source` (HF names, e.g. a checkpoint or a GGUF file through model/gguf_deepseek2.h)
  // against the config and loads this rank's part; the model keeps `source` alive. `world` is this
  // rank's communicator (nullptr: a one-rank world of its own). Tools load through the registry
  // (model/arch.h), which calls this.
  static StatusOr<std::unique_ptr<DeepseekModel>> LoadFrom(std::unique_ptr<TensorSource> source,
                                                           ModelConfig config,
                                                           const ModelLoadOptions& options, ThreadPool* pool,
                                                           const LoadProgress& progress = {},
                                                           Communicator* world = nullptr);
  // The same from a checkpoint directory (config.json + safetensors).
  static StatusOr<std::unique_ptr<DeepseekModel>> Load(const std::string& dir,
                                                       const ModelLoadOptions& options, ThreadPool* pool,
                                                       const LoadProgress& progress = {},
                                                       Communicator* world = nullptr);
  ~DeepseekModel() override;

  using Model::NewCache;
  StatusOr<std::shared_ptr<KvBlockStorage>> NewKvStorage(int64_t n_blocks,
                                                         int64_t block_tokens) const override;
  StatusOr<std::unique_ptr<ModelCache>> NewCache(std::shared_ptr<KvBlockStorage> storage,
                                                 std::vector<int32_t> block_table,
                                                 int64_t capacity) const override;
  double CacheBytesPerToken() const override;

 protected:
  CacheKind cache_kind() const override { return CacheKind::kLatentMla; }
  Status Attention(int64_t layer, const float* x, int64_t t_count, const RowPlace* rows, float* o) override;
  double AttentionWeightBytes(int64_t layer) const override;

 private:
  DeepseekModel() = default;

  std::unique_ptr<Rope> rope_;
  std::vector<AttentionWeights> attn_;           // per layer, this rank's heads
  RowOpsIsa row_isa_ = RowOpsIsa::kRef;          // kv_b row ops (follows --kernel ref|avx2|avx512)
  SmallGemmIsa gemm_isa_ = SmallGemmIsa::kAuto;  // attention GEMMs over the cache (follows --kernel)
  std::vector<ActivationBuffer> head_acts_;      // per pool thread: the packed kv_b heads' inputs
  // Attention's per-call buffers, reused by every layer and step (a 512-token prefill needs tens
  // of MB per layer; fresh pages would be faulted in and zeroed each time). Every element is
  // written before it is read. Sizes in floats for T tokens of nh local heads:
  struct AttentionScratch {
    ScratchBuffer<float> q;      // [T, nh * qd] queries
    ScratchBuffer<float> ckv;    // [T, r + dr] kv_a output: c_kv | k_pe
    ScratchBuffer<float> qa;     // [T, q_lora_rank] q_a output (q-LoRA models)
    ScratchBuffer<float> q_cat;  // [T * nh, r + dr] absorbed queries: q_lat | roped q_pe
    ScratchBuffer<float> o_lat;  // [T * nh, r] latent attention output
    ScratchBuffer<float> rope;   // [T, dr] each token's rotation (Rope::Angles)
  } scratch_;
};

}  // namespace moerun
