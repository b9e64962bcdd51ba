#include "model/gqa_attention.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "model/cached_attention.h"
#include "model/gqa_cache.h"
#include "parallel/transition.h"

namespace moerun {
namespace {

StatusOr<std::vector<float>> LoadSlice(const TensorSource& ckpt, const std::string& name, int64_t begin,
                                       int64_t end) {
  ASSIGN_OR_RETURN(std::vector<float> v, LoadVector(ckpt, name));
  return std::vector<float>(v.begin() + begin, v.begin() + end);
}

void AddBias(float* y, int64_t rows, const std::vector<float>& bias) {
  if (bias.empty()) return;
  const int64_t n = static_cast<int64_t>(bias.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) y[r * n + i] += bias[static_cast<size_t>(i)];
}

// The float pair (hi, lo) with hi + lo = s to ~2^-48 relative: a double sum carried in f32 buffers.
void PutDouble(double s, float* out) {
  out[0] = static_cast<float>(s);
  out[1] = static_cast<float>(s - static_cast<double>(out[0]));
}

}  // namespace

void AddGqaAttentionTensors(const ModelConfig& c, const std::string& a, TensorTable* e) {
  const int64_t h = c.hidden_size, hd = c.head_dim;
  const int64_t q_rows = c.num_attention_heads * hd, kv_rows = c.num_key_value_heads * hd;
  e->shapes[a + "q_proj.weight"] = {q_rows, h};
  e->shapes[a + "k_proj.weight"] = {kv_rows, h};
  e->shapes[a + "v_proj.weight"] = {kv_rows, h};
  e->shapes[a + "o_proj.weight"] = {h, q_rows};
  if (c.qkv_bias) {
    e->shapes[a + "q_proj.bias"] = {q_rows};
    e->shapes[a + "k_proj.bias"] = {kv_rows};
    e->shapes[a + "v_proj.bias"] = {kv_rows};
  }
  if (c.qk_norm == QkNorm::kPerHead) {
    e->shapes[a + "q_norm.weight"] = {hd};
    e->shapes[a + "k_norm.weight"] = {hd};
  } else if (c.qk_norm == QkNorm::kWhole) {
    e->shapes[a + "q_norm.weight"] = {q_rows};
    e->shapes[a + "k_norm.weight"] = {kv_rows};
  }
}

StatusOr<Range> GqaKvHeads(const ModelConfig& c, int tp, int tp_rank) {
  const int64_t nkv = c.num_key_value_heads;
  if (nkv % tp == 0) return Range{tp_rank * (nkv / tp), (tp_rank + 1) * (nkv / tp)};
  if (tp % nkv == 0) {
    const int64_t group = tp_rank / (tp / nkv);  // the KV head of this rank's query heads
    return Range{group, group + 1};
  }
  return InvalidArgument(
      "--tp {} and num_key_value_heads {} of {}: one must divide the other (KV heads are split over the TP "
      "ranks, or each replicated on tp / num_key_value_heads ranks)",
      tp, nkv, c.model_type);
}

int64_t GqaKvReplicas(const ModelConfig& c, int tp) {
  return tp > c.num_key_value_heads ? tp / c.num_key_value_heads : 1;
}

GqaAttention::GqaAttention(const ModelConfig& config, Range heads, Range kv_heads)
    : config_(config), heads_(heads), kv_(kv_heads), rope_(config.head_dim, config.rope_theta) {}

Status GqaAttention::LoadLayer(const TensorSource& ckpt, int64_t layer, std::optional<WeightFormat> w) {
  if (layer != static_cast<int64_t>(layers_.size()))
    return Internal("GQA attention layer {} loaded after {} layers", layer, layers_.size());
  const std::string a = fmt::format("model.layers.{}.self_attn.", layer);
  const int64_t hd = config_.head_dim;
  const int64_t q0 = heads_.begin * hd, q1 = heads_.end * hd, k0 = kv_.begin * hd, k1 = kv_.end * hd;
  Layer at;
  ASSIGN_OR_RETURN(Tensor q, ckpt.Get(a + "q_proj.weight"));
  ASSIGN_OR_RETURN(at.q_proj, PackAs(q.Rows(q0, q1), w));
  ASSIGN_OR_RETURN(Tensor k, ckpt.Get(a + "k_proj.weight"));
  ASSIGN_OR_RETURN(at.k_proj, PackAs(k.Rows(k0, k1), w));
  ASSIGN_OR_RETURN(Tensor v, ckpt.Get(a + "v_proj.weight"));
  ASSIGN_OR_RETURN(at.v_proj, PackAs(v.Rows(k0, k1), w));
  if (config_.qkv_bias) {
    ASSIGN_OR_RETURN(at.q_bias, LoadSlice(ckpt, a + "q_proj.bias", q0, q1));
    ASSIGN_OR_RETURN(at.k_bias, LoadSlice(ckpt, a + "k_proj.bias", k0, k1));
    ASSIGN_OR_RETURN(at.v_bias, LoadSlice(ckpt, a + "v_proj.bias", k0, k1));
  }
  if (config_.qk_norm == QkNorm::kPerHead) {
    ASSIGN_OR_RETURN(at.q_norm, LoadVector(ckpt, a + "q_norm.weight"));
    ASSIGN_OR_RETURN(at.k_norm, LoadVector(ckpt, a + "k_norm.weight"));
  } else if (config_.qk_norm == QkNorm::kWhole) {
    ASSIGN_OR_RETURN(at.q_norm, LoadSlice(ckpt, a + "q_norm.weight", q0, q1));
    ASSIGN_OR_RETURN(at.k_norm, LoadSlice(ckpt, a + "k_norm.weight", k0, k1));
  }
  layers_.push_back(std::move(at));
  return Status::Ok();
}

double GqaAttention::WeightBytes(int64_t layer) const {
  const Layer& at = layers_[static_cast<size_t>(layer)];
  return static_cast<double>(at.q_proj.bytes() + at.k_proj.bytes() + at.v_proj.bytes());
}

Status GqaAttention::WholeNorm(int64_t layer, const Layer& at, float* q, float* k, int64_t t_count,
                               const ParallelLayout& layout) const {
  const int64_t nh = heads_.size(), nkv = kv_.size(), hd = config_.head_dim;
  const int64_t cols = 2 * (nh + nkv);  // per token: (hi, lo) of each local q head, then k head
  std::vector<float> mine(static_cast<size_t>(t_count * cols));
  auto head_sums = [&](const float* x, int64_t heads, float* out) {
    for (int64_t g = 0; g < heads; ++g) {
      double ss = 0;
      for (int64_t i = 0; i < hd; ++i) ss += static_cast<double>(x[g * hd + i]) * x[g * hd + i];
      PutDouble(ss, out + 2 * g);
    }
  };
  for (int64_t t = 0; t < t_count; ++t) {
    head_sums(q + t * nh * hd, nh, mine.data() + t * cols);
    head_sums(k + t * nkv * hd, nkv, mine.data() + t * cols + 2 * nh);
  }
  const int tp = layout.GroupSize(Group::kTp);
  std::vector<float> all;
  if (tp == 1) {
    all = std::move(mine);
  } else {  // every TP rank holds as many heads: the gathered row is [rank 0 | rank 1 | ...]
    all.resize(static_cast<size_t>(t_count * cols * tp));
    std::vector<int64_t> shards(static_cast<size_t>(tp), cols);
    StatedBuffer part =
        StatedBuffer::F32(ReductionState::ColumnShard(Group::kTp), t_count, cols, mine.data());
    StatedBuffer out =
        StatedBuffer::F32(ReductionState::ColumnShard(Group::kTp), t_count, cols * tp, all.data());
    RETURN_IF_ERROR(Transition(layout, &part, ReductionState::Replicated(Group::kTp),
                               fmt::format("layer {} q/k norm sums", layer), &out, shards));
  }
  const float eps = static_cast<float>(config_.rms_norm_eps);
  const double q_dim = static_cast<double>(config_.num_attention_heads * hd);
  const double k_dim = static_cast<double>(config_.num_key_value_heads * hd);
  const int64_t kv_replicas = GqaKvReplicas(config_, tp);  // count a replicated head once
  for (int64_t t = 0; t < t_count; ++t) {
    double sq = 0, sk = 0;  // every head's sums in head order (rank blocks are in head order)
    for (int r = 0; r < tp; ++r) {
      const float* b = all.data() + (t * tp + r) * cols;
      for (int64_t g = 0; g < nh; ++g)
        sq += static_cast<double>(b[2 * g]) + static_cast<double>(b[2 * g + 1]);
      if (r % kv_replicas != 0) continue;
      for (int64_t g = 0; g < nkv; ++g)
        sk += static_cast<double>(b[2 * (nh + g)]) + static_cast<double>(b[2 * (nh + g) + 1]);
    }
    // As DecoderModel::RmsNorm: inverse in double, rounded to f32, then x * inv * w.
    const float inv_q = static_cast<float>(1.0 / std::sqrt(sq / q_dim + eps));
    const float inv_k = static_cast<float>(1.0 / std::sqrt(sk / k_dim + eps));
    float* qt = q + t * nh * hd;
    for (int64_t i = 0; i < nh * hd; ++i) qt[i] = qt[i] * inv_q * at.q_norm[static_cast<size_t>(i)];
    float* kt = k + t * nkv * hd;
    for (int64_t i = 0; i < nkv * hd; ++i) kt[i] = kt[i] * inv_k * at.k_norm[static_cast<size_t>(i)];
  }
  return Status::Ok();
}

Status GqaAttention::Forward(int64_t layer, const float* x, int64_t t_count, const RowPlace* rows, float* o,
                             const LinearContext& ctx, const ParallelLayout& layout) const {
  const ModelConfig& c = config_;
  const Layer& at = layers_[static_cast<size_t>(layer)];
  const int64_t nh = heads_.size(), nkv = kv_.size(), hd = c.head_dim, group = nh / nkv;
  const float eps = static_cast<float>(c.rms_norm_eps);
  // Projections: q [T, nh * hd], k and v [T, nkv * hd].
  std::vector<float> q(static_cast<size_t>(t_count * nh * hd)), k(static_cast<size_t>(t_count * nkv * hd)),
      v(k.size());
  const LinearOutput qkv[] = {{&at.q_proj, q.data()}, {&at.k_proj, k.data()}, {&at.v_proj, v.data()}};
  LinearForwardSameInput(qkv, x, t_count, ctx);
  AddBias(q.data(), t_count, at.q_bias);
  AddBias(k.data(), t_count, at.k_bias);
  AddBias(v.data(), t_count, at.v_bias);
  if (c.qk_norm == QkNorm::kPerHead) {
    DecoderModel::RmsNorm(q.data(), at.q_norm, t_count * nh, hd, eps, q.data());
    DecoderModel::RmsNorm(k.data(), at.k_norm, t_count * nkv, hd, eps, k.data());
  } else if (c.qk_norm == QkNorm::kWhole) {
    RETURN_IF_ERROR(WholeNorm(layer, at, q.data(), k.data(), t_count, layout));
  }
  if (c.clip_qkv > 0) {
    const float clip = static_cast<float>(c.clip_qkv);
    for (std::vector<float>* buf : {&q, &k, &v})
      for (float& e : *buf) e = std::clamp(e, -clip, clip);
  }
  // RoPE on q (in place) and k (into the row's cache); v copied to the cache.
  for (int64_t t = 0; t < t_count; ++t) {
    const int64_t pos = rows[t].pos;
    GqaKvCache* cache = static_cast<GqaKvCache*>(rows[t].cache);
    float* qt = q.data() + t * nh * hd;
    for (int64_t hh = 0; hh < nh; ++hh) rope_.Apply(qt + hh * hd, pos);
    float* kc = cache->key(layer, pos);
    std::copy(k.data() + t * nkv * hd, k.data() + (t + 1) * nkv * hd, kc);
    for (int64_t g = 0; g < nkv; ++g) rope_.Apply(kc + g * hd, pos);
    std::copy(v.data() + t * nkv * hd, v.data() + (t + 1) * nkv * hd, cache->value(layer, pos));
  }
  // Tasks: a run of tokens of one sequence (up to 16; one token when there are few) x one KV head.
  // The run's queries of that head's group are gathered into one CachedAttention call.
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  ThreadPool* pool = ctx.pool;
  const SmallGemmIsa gemm_isa = SelectSmallGemmIsa(ctx.policy->forced);
  const int threads = pool ? pool->size() : 1;
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
                    cache->Values(layer, g * hd, hd), scale, ob.data(), hd, gemm_isa);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = t0 + i / group, hh = g * group + i % group;
      std::copy(ob.data() + i * hd, ob.data() + (i + 1) * hd, o + (t * nh + hh) * hd);
    }
  };
  const int64_t n_tasks = static_cast<int64_t>(runs.size()) * nkv;
  ParallelForOn(pool, n_tasks, task);
  return Status::Ok();
}

}  // namespace moerun
