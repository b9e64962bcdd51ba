#include "model/qwen3_moe_model.h"

#include <cmath>

#include "model/cached_attention.h"
#include "model/gqa_cache.h"

namespace moerun {

TensorTable Qwen3MoeTensorTable(const ModelConfig& c) {
  const int64_t h = c.hidden_size, hd = c.head_dim;
  const int64_t q_rows = c.num_attention_heads * hd, kv_rows = c.num_key_value_heads * hd;
  return DecoderTensorTable(c, [&](int64_t, const std::string& a, TensorTable* e) {
    e->shapes[a + "q_proj.weight"] = {q_rows, h};
    e->shapes[a + "k_proj.weight"] = {kv_rows, h};
    e->shapes[a + "v_proj.weight"] = {kv_rows, h};
    e->shapes[a + "o_proj.weight"] = {h, q_rows};
    e->shapes[a + "q_norm.weight"] = {hd};
    e->shapes[a + "k_norm.weight"] = {hd};
  });
}

Qwen3MoeModel::~Qwen3MoeModel() = default;

StatusOr<std::unique_ptr<Qwen3MoeModel>> Qwen3MoeModel::LoadFrom(
    std::unique_ptr<TensorSource> source, ModelConfig config, const ModelLoadOptions& options,
    ThreadPool* pool, const LoadProgress& progress, Communicator* world) {
  std::unique_ptr<Qwen3MoeModel> m(new Qwen3MoeModel());
  m->Init(std::move(source), std::move(config), options, pool, world);
  const ModelConfig& c = m->config_;
  const TensorSource& ckpt = *m->ckpt_;
  const ParallelOptions& par = options.parallel;
  if (c.num_key_value_heads % par.tp != 0) {
    return InvalidArgument(
        "--tp {} does not divide num_key_value_heads {} (qwen3_moe splits the KV heads over TP ranks; "
        "replicated KV heads are not supported)",
        par.tp, c.num_key_value_heads);
  }
  RETURN_IF_ERROR(m->SetUpLayout(c.head_dim));
  const int64_t kv = c.num_key_value_heads / par.tp;
  m->kv_begin_ = m->layout().tp_rank() * kv;
  m->kv_end_ = m->kv_begin_ + kv;
  RETURN_IF_ERROR(ValidateTensors(c, ckpt, Qwen3MoeTensorTable(c)));
  if (options.check_tensors) RETURN_IF_ERROR(CheckFinite(ckpt));

  m->rope_ = std::make_unique<RotateHalfRope>(c.head_dim, c.rope_theta);
  RETURN_IF_ERROR(m->LoadEmbeddingsAndHead());
  const std::optional<WeightFormat> w = options.weight_format;
  m->attn_.resize(static_cast<size_t>(c.num_hidden_layers));
  RETURN_IF_ERROR(m->LoadLayers(progress, [&](int64_t l) -> Status {
    const std::string a = fmt::format("model.layers.{}.self_attn.", l);
    GqaAttentionWeights& at = m->attn_[static_cast<size_t>(l)];
    const int64_t hd = c.head_dim;
    ASSIGN_OR_RETURN(Tensor q, ckpt.Get(a + "q_proj.weight"));
    ASSIGN_OR_RETURN(at.q_proj, PackAs(q.Rows(m->head_begin_ * hd, m->head_end_ * hd), w));
    ASSIGN_OR_RETURN(Tensor k, ckpt.Get(a + "k_proj.weight"));
    ASSIGN_OR_RETURN(at.k_proj, PackAs(k.Rows(m->kv_begin_ * hd, m->kv_end_ * hd), w));
    ASSIGN_OR_RETURN(Tensor v, ckpt.Get(a + "v_proj.weight"));
    ASSIGN_OR_RETURN(at.v_proj, PackAs(v.Rows(m->kv_begin_ * hd, m->kv_end_ * hd), w));
    ASSIGN_OR_RETURN(at.q_norm, LoadVector(ckpt, a + "q_norm.weight"));
    ASSIGN_OR_RETURN(at.k_norm, LoadVector(ckpt, a + "k_norm.weight"));
    return Status::Ok();
  }));
  return m;
}

StatusOr<std::shared_ptr<KvBlockStorage>> Qwen3MoeModel::NewKvStorage(int64_t n_blocks,
                                                                      int64_t block_tokens) const {
  return GqaKvCache::NewStorage(config_.num_hidden_layers, kv_end_ - kv_begin_, config_.head_dim, n_blocks,
                                block_tokens);
}

StatusOr<std::unique_ptr<ModelCache>> Qwen3MoeModel::NewCache(std::shared_ptr<KvBlockStorage> storage,
                                                              std::vector<int32_t> block_table,
                                                              int64_t capacity) const {
  ASSIGN_OR_RETURN(std::unique_ptr<GqaKvCache> cache,
                   GqaKvCache::Create(config_.num_hidden_layers, kv_end_ - kv_begin_, config_.head_dim,
                                      std::move(storage), std::move(block_table), capacity));
  return std::unique_ptr<ModelCache>(std::move(cache));
}

double Qwen3MoeModel::CacheBytesPerToken() const {
  return static_cast<double>(config_.num_hidden_layers * 2 * (kv_end_ - kv_begin_) * config_.head_dim) *
         sizeof(float);
}

double Qwen3MoeModel::AttentionWeightBytes(int64_t layer) const {
  const GqaAttentionWeights& at = attn_[static_cast<size_t>(layer)];
  return static_cast<double>(at.q_proj.bytes() + at.k_proj.bytes() + at.v_proj.bytes());
}

void Qwen3MoeModel::Attention(int64_t layer, const float* x, int64_t t_count, const RowPlace* rows,
                              float* o) {
  const ModelConfig& c = config_;
  const GqaAttentionWeights& at = attn_[static_cast<size_t>(layer)];
  const int64_t nh = local_heads(), nkv = kv_end_ - kv_begin_, hd = c.head_dim, group = nh / nkv;
  const float eps = static_cast<float>(c.rms_norm_eps);
  // Projections: q [T, nh * hd], k and v [T, nkv * hd].
  std::vector<float> q(static_cast<size_t>(t_count * nh * hd)), k(static_cast<size_t>(t_count * nkv * hd)),
      v(k.size());
  LinearForward(at.q_proj, x, t_count, q.data(), Ctx());
  LinearForward(at.k_proj, x, t_count, k.data(), Ctx());
  LinearForward(at.v_proj, x, t_count, v.data(), Ctx());
  // Per-head RMSNorm then RoPE on q (in place) and k (into the row's cache), v copied to the cache.
  for (int64_t t = 0; t < t_count; ++t) {
    const int64_t pos = rows[t].pos;
    GqaKvCache* cache = static_cast<GqaKvCache*>(rows[t].cache);
    float* qt = q.data() + t * nh * hd;
    RmsNorm(qt, at.q_norm, nh, hd, eps, qt);
    for (int64_t hh = 0; hh < nh; ++hh) rope_->Apply(qt + hh * hd, pos);
    float* kc = cache->key(layer, pos);
    RmsNorm(k.data() + t * nkv * hd, at.k_norm, nkv, hd, eps, kc);
    for (int64_t g = 0; g < nkv; ++g) rope_->Apply(kc + g * hd, pos);
    std::copy(v.data() + t * nkv * hd, v.data() + (t + 1) * nkv * hd, cache->value(layer, pos));
  }
  // Tasks: a run of tokens of one sequence (up to 16; one token when there are few) x one KV head.
  // The run's queries of that head's group are gathered into one CachedAttention call.
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  const int threads = pool_ ? pool_->size() : 1;
  const int64_t max_run = t_count < 2 * threads ? 1 : 16;
  std::vector<std::pair<int64_t, int64_t>> runs;  // [t0, t1): one cache, consecutive rows
  for (int64_t t = 0; t < t_count;) {
    int64_t t1 = t + 1;
    while (t1 < t_count && t1 - t < max_run && rows[t1].cache == rows[t].cache) ++t1;
    runs.emplace_back(t, t1);
    t = t1;
  }
  auto task = [&](int64_t id, int) {
    const auto [t0, t1] = runs[static_cast<size_t>(id / nkv)];
    const int64_t g = id % nkv, n = (t1 - t0) * group;
    std::vector<float> qb(static_cast<size_t>(n * hd)), ob(qb.size());
    std::vector<int64_t> pos(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = t0 + i / group, hh = g * group + i % group;
      std::copy(q.data() + (t * nh + hh) * hd, q.data() + (t * nh + hh + 1) * hd, qb.data() + i * hd);
      pos[static_cast<size_t>(i)] = rows[t].pos;
    }
    const GqaKvCache* cache = static_cast<const GqaKvCache*>(rows[t0].cache);
    CachedAttention(qb.data(), n, hd, pos.data(), cache->Keys(layer, g * hd, hd),
                    cache->Values(layer, g * hd, hd), scale, ob.data(), hd);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = t0 + i / group, hh = g * group + i % group;
      std::copy(ob.data() + i * hd, ob.data() + (i + 1) * hd, o + (t * nh + hh) * hd);
    }
  };
  const int64_t n_tasks = static_cast<int64_t>(runs.size()) * nkv;
  if (pool_) {
    pool_->ParallelFor(n_tasks, task);
  } else {
    for (int64_t i = 0; i < n_tasks; ++i) task(i, 0);
  }
}

}  // namespace moerun
