#include "model/gqa_model.h"

#include "model/gqa_cache.h"

namespace moerun {

TensorTable GqaTensorTable(const ModelConfig& c) {
  return DecoderTensorTable(
      c, [&](int64_t, const std::string& prefix, TensorTable* e) { AddGqaAttentionTensors(c, prefix, e); });
}

GqaModel::~GqaModel() = default;

StatusOr<std::unique_ptr<GqaModel>> GqaModel::LoadFrom(std::unique_ptr<TensorSource> source,
                                                       ModelConfig config, const ModelLoadOptions& options,
                                                       ThreadPool* pool, const LoadProgress& progress,
                                                       Communicator* world) {
  std::unique_ptr<GqaModel> m(new GqaModel());
  m->Init(std::move(source), std::move(config), options, pool, world);
  const ModelConfig& c = m->config_;
  const TensorSource& ckpt = *m->ckpt_;
  const ParallelOptions& par = options.parallel;
  RETURN_IF_ERROR(m->SetUpLayout(c.head_dim));
  ASSIGN_OR_RETURN(const Range kv, GqaKvHeads(c, par.tp, m->layout().tp_rank()));
  m->kv_begin_ = kv.begin;
  m->kv_end_ = kv.end;
  RETURN_IF_ERROR(ValidateTensors(c, ckpt, GqaTensorTable(c)));
  if (options.check_tensors) RETURN_IF_ERROR(CheckFinite(ckpt));

  m->attention_ = std::make_unique<GqaAttention>(c, m->layout().Heads(), Range{m->kv_begin_, m->kv_end_});
  RETURN_IF_ERROR(m->LoadEmbeddingsAndHead());
  const std::optional<WeightFormat> w = options.weight_format;
  RETURN_IF_ERROR(m->LoadLayers(progress, [&](int64_t l) { return m->attention_->LoadLayer(ckpt, l, w); }));
  return m;
}

StatusOr<std::shared_ptr<KvBlockStorage>> GqaModel::NewKvStorage(int64_t n_blocks,
                                                                 int64_t block_tokens) const {
  return GqaKvCache::NewStorage(config_.num_hidden_layers, kv_end_ - kv_begin_, config_.head_dim, n_blocks,
                                block_tokens);
}

StatusOr<std::unique_ptr<ModelCache>> GqaModel::NewCache(std::shared_ptr<KvBlockStorage> storage,
                                                         std::vector<int32_t> block_table,
                                                         int64_t capacity) const {
  ASSIGN_OR_RETURN(std::unique_ptr<GqaKvCache> cache,
                   GqaKvCache::Create(config_.num_hidden_layers, kv_end_ - kv_begin_, config_.head_dim,
                                      std::move(storage), std::move(block_table), capacity));
  return std::unique_ptr<ModelCache>(std::move(cache));
}

double GqaModel::CacheBytesPerToken() const {
  return static_cast<double>(config_.num_hidden_layers * 2 * (kv_end_ - kv_begin_) * config_.head_dim) *
         sizeof(float);
}

Status GqaModel::Attention(int64_t layer, const float* x, int64_t t_count, const RowPlace* rows, float* o) {
  return attention_->Forward(layer, x, t_count, rows, o, Ctx(), layout());
}

}  // namespace moerun
