// GqaModel: the grouped-query-attention MoE families of the registry (model/arch.h) — qwen3_moe,
// qwen2_moe, mixtral and olmoe: the shared decoder skeleton (model/decoder_model.h) with the shared
// GQA attention (model/gqa_attention.h) over the GQA K/V cache (model/gqa_cache.h). What differs
// between the families is data, set by their config parsers (model/gqa_config.cc):
//
//   family     q/k/v bias  q/k RMSNorm                MoE block                          layers
//   qwen3_moe  no          per head [hd]              mlp.: softmax top-k                sparse step
//   qwen2_moe  yes         none                       mlp.: + shared × sigmoid(gate)     sparse step
//   mixtral    no          none                       block_sparse_moe.: w1/w3/w2        all MoE
//   olmoe      no          whole [nh·hd] (+clip_qkv)  mlp.: softmax top-k                all MoE
//
// (top-k renormalised as norm_topk_prob says; always for Mixtral. "sparse step": decoder_sparse_step
// and mlp_only_layers choose the dense layers.)
// docs/models.md §6–§9. Tensor parallel: query heads and KV heads are both split over the TP
// ranks (each rank holds nh/tp query heads and the nkv/tp KV heads they read); load refuses a tp
// that does not divide both. Every MoE layout (--ep, --sp, --dp, --dispatch) runs through
// ParallelMoe as for DeepSeek.
//
// Thread safety: immutable after Load; ForwardBatch uses internal scratch, one call at a time.
#pragma once

#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "core/thread_pool.h"
#include "io/tensor_source.h"
#include "model/decoder_model.h"
#include "model/gqa_attention.h"
#include "model/model.h"
#include "model/model_config.h"
#include "model/model_loading.h"

namespace moerun {

// The tensor-name table of any GQA family for `config` (docs/models.md §6.2, §7.2, §8.2, §9.2;
// MoE blocks by prefix).
TensorTable GqaTensorTable(const ModelConfig& config);

class GqaModel : public DecoderModel {
 public:
  // Validates `source` (HF names) against the config and loads this rank's part; the model keeps
  // `source` alive. `world`: this rank's communicator (nullptr: one rank). Tools load through the
  // registry (model/arch.h), which calls this.
  static StatusOr<std::unique_ptr<GqaModel>> LoadFrom(std::unique_ptr<TensorSource> source,
                                                      ModelConfig config, const ModelLoadOptions& options,
                                                      ThreadPool* pool, const LoadProgress& progress = {},
                                                      Communicator* world = nullptr);
  ~GqaModel() override;

  using Model::NewCache;
  StatusOr<std::shared_ptr<KvBlockStorage>> NewKvStorage(int64_t n_blocks,
                                                         int64_t block_tokens) const override;
  StatusOr<std::unique_ptr<ModelCache>> NewCache(std::shared_ptr<KvBlockStorage> storage,
                                                 std::vector<int32_t> block_table,
                                                 int64_t capacity) const override;
  double CacheBytesPerToken() const override;

 protected:
  CacheKind cache_kind() const override { return CacheKind::kGqaKv; }
  Status Attention(int64_t layer, const float* x, int64_t t_count, const RowPlace* rows, float* o) override;
  double AttentionWeightBytes(int64_t layer) const override { return attention_->WeightBytes(layer); }

 private:
  GqaModel() = default;

  std::unique_ptr<GqaAttention> attention_;
  int64_t kv_begin_ = 0, kv_end_ = 0;  // KV heads on this rank
};

}  // namespace moerun
