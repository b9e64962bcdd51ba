#include "model/deepseek_model.h"

#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "comm/in_process_comm.h"
#include "core/block_quant.h"
#include "core/fixed_point.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "kernels/linear.h"
#include "model/gguf_deepseek2.h"
#include "model/mla_attention.h"
#include "moe/moe_weights.h"

namespace moerun {
namespace {

constexpr float kLatentNormEps = 1e-6f;  // q_a_layernorm / kv_a_layernorm use the module default
// Decode contexts (positions) from which a token's attention over its heads is spread over the
// threads (LatentAttentionSpread: three loops, the cache read once between the threads) instead of
// each thread attending with its share of the heads over the whole cache. In-process A/B of the
// attention phase (V2-Lite Q4_K, AMD Zen 5, 2 threads, layers alternating), spread against shares:
// 1.30 x the time at contexts 1-64, 1.00 x at 257-320, 0.79-0.80 x at 1025-1088, 0.71 x at 4097-4128.
constexpr int64_t kSpreadMinContext = 512;

// Packs `rows` (`heads` equal runs of rows, one per local head) per head for the matmul kernels
// when its dtype is a block format with integer kernel rows whose block divides the row length,
// then releases the stored rows (one resident copy); leaves them as they are otherwise.
Status PackKvBHeads(int64_t heads, StoredRows* rows, std::vector<PackedWeight>* out) {
  const std::optional<WeightFormat> format = FormatOfDType(rows->dtype);
  if (!format || Traits(*format).layout != PackedLayout::kInterleaved16 ||
      rows->cols % Traits(*format).k_alignment != 0 || rows->rows % heads != 0) {
    return Status::Ok();
  }
  const int64_t per_head = rows->rows / heads;
  out->reserve(static_cast<size_t>(heads));
  for (int64_t k = 0; k < heads; ++k) {
    const Tensor head =
        Tensor::View(rows->dtype, Shape{per_head, rows->cols},
                     rows->bytes.data() + static_cast<size_t>(k * per_head) * rows->row_bytes);
    ASSIGN_OR_RETURN(PackedWeight packed, PackedWeight::Pack(head, *format));
    out->push_back(std::move(packed));
  }
  rows->rows = 0;
  std::vector<uint8_t>().swap(rows->bytes);
  return Status::Ok();
}

double PackedBytes(const std::vector<PackedWeight>& heads) {
  double bytes = 0;
  for (const PackedWeight& p : heads) bytes += static_cast<double>(p.bytes());
  return bytes;
}

// MLA's kv_b halves of heads [h0, h1) in their stored dtype (AttentionWeights::k_b / v_b): from
// GGUF's split attn_k_b / attn_v_b when the source serves them (model/gguf_deepseek2.h), else
// from kv_b_proj. An FP8 or load-only block dtype (Q3_K, Q2_K, IQ4_NL, IQ4_XS) is converted row by row into
// `requested`'s format (MakeStoredRowsFor).
// With `pack_heads` (every --precision but f32), block-format halves whose rows are the per-head
// product's rows are then packed per head for the matmul kernels (PackKvBHeads).
Status LoadKvB(const ModelConfig& c, const TensorSource& ckpt, int64_t layer, int64_t h0, int64_t h1,
               std::optional<WeightFormat> requested, bool pack_heads, AttentionWeights* at) {
  const int64_t nh = c.num_attention_heads, dn = c.qk_nope_head_dim, dv = c.v_head_dim, r = c.kv_lora_rank;
  const std::string kb_name = Deepseek2SplitKbName(layer), vb_name = Deepseek2SplitVbName(layer);
  if (ckpt.Has(kb_name) && ckpt.Has(vb_name)) {
    ASSIGN_OR_RETURN(Tensor kb, ckpt.Get(kb_name));  // [nh, r, dn]
    ASSIGN_OR_RETURN(Tensor vb, ckpt.Get(vb_name));  // [nh, dv, r]
    if (kb.shape() != Shape{nh, r, dn} || vb.shape() != Shape{nh, dv, r}) {
      return InvalidArgument("{}: layer {}: attn_k_b {} / attn_v_b {}, expected {} / {}", ckpt.path(), layer,
                             ShapeToString(kb.shape()), ShapeToString(vb.shape()), ShapeToString({nh, r, dn}),
                             ShapeToString({nh, dv, r}));
    }
    const StoredWeight kb2(kb.Flatten2D()), vb2(vb.Flatten2D());  // [nh * r, dn], [nh * dv, r]
    ASSIGN_OR_RETURN(at->k_b, MakeStoredRowsFor(kb2, requested, dn));
    ASSIGN_OR_RETURN(at->v_b, MakeStoredRowsFor(vb2, requested, r));
    at->k_b_transposed = true;
    AppendWeightRows(kb2, h0 * r, h1 * r, &at->k_b);
    AppendWeightRows(vb2, h0 * dv, h1 * dv, &at->v_b);
    if (!pack_heads) return Status::Ok();
    RETURN_IF_ERROR(PackKvBHeads(h1 - h0, &at->k_b, &at->k_b_heads));
    return PackKvBHeads(h1 - h0, &at->v_b, &at->v_b_heads);
  }
  ASSIGN_OR_RETURN(StoredWeight kv_b,
                   GetStoredWeight(ckpt, fmt::format("model.layers.{}.self_attn.kv_b_proj.weight", layer)));
  ASSIGN_OR_RETURN(at->k_b, MakeStoredRowsFor(kv_b, requested, r));
  ASSIGN_OR_RETURN(at->v_b, MakeStoredRowsFor(kv_b, requested, r));
  at->k_b_transposed = false;
  for (int64_t h = h0; h < h1; ++h) {
    AppendWeightRows(kv_b, h * (dn + dv), h * (dn + dv) + dn, &at->k_b);
    AppendWeightRows(kv_b, h * (dn + dv) + dn, (h + 1) * (dn + dv), &at->v_b);
  }
  if (!pack_heads) return Status::Ok();
  return PackKvBHeads(h1 - h0, &at->v_b, &at->v_b_heads);  // k_b's rows are K's columns: row ops
}

}  // namespace

TensorTable DeepseekTensorTable(const ModelConfig& c) {
  const int64_t h = c.hidden_size, nh = c.num_attention_heads, qd = c.q_head_dim();
  return DecoderTensorTable(c, [&](int64_t, const std::string& a, TensorTable* e) {
    if (c.q_lora_rank == 0) {
      e->shapes[a + "q_proj.weight"] = {nh * qd, h};
    } else {
      e->shapes[a + "q_a_proj.weight"] = {c.q_lora_rank, h};
      e->shapes[a + "q_a_layernorm.weight"] = {c.q_lora_rank};
      e->shapes[a + "q_b_proj.weight"] = {nh * qd, c.q_lora_rank};
    }
    e->shapes[a + "kv_a_proj_with_mqa.weight"] = {c.kv_lora_rank + c.qk_rope_head_dim, h};
    e->shapes[a + "kv_a_layernorm.weight"] = {c.kv_lora_rank};
    e->shapes[a + "kv_b_proj.weight"] = {nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank};
    e->shapes[a + "o_proj.weight"] = {h, nh * c.v_head_dim};
  });
}

DeepseekModel::~DeepseekModel() = default;

StatusOr<std::unique_ptr<DeepseekModel>> DeepseekModel::Load(const std::string& dir,
                                                             const ModelLoadOptions& options,
                                                             ThreadPool* pool, const LoadProgress& progress,
                                                             Communicator* world) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(dir + "/config.json"));
  ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromJson(text, dir + "/config.json"));
  if (config.kv_lora_rank == 0)
    return InvalidArgument("{}: model_type '{}' is not a DeepSeek model", dir, config.model_type);
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(dir));
  return LoadFrom(std::move(ckpt), std::move(config), options, pool, progress, world);
}

StatusOr<std::unique_ptr<DeepseekModel>> DeepseekModel::LoadFrom(
    std::unique_ptr<TensorSource> source, ModelConfig config, const ModelLoadOptions& options,
    ThreadPool* pool, const LoadProgress& progress, Communicator* world) {
  std::unique_ptr<DeepseekModel> m(new DeepseekModel());
  m->Init(std::move(source), std::move(config), options, pool, world);
  const ModelConfig& c = m->config_;
  const TensorSource& ckpt = *m->ckpt_;
  // The rank's layout (validated once: heads, experts, vocabulary) and its heads.
  RETURN_IF_ERROR(m->SetUpLayout(c.v_head_dim));
  m->row_isa_ = SelectRowOpsIsa(options.kernels.forced);
  m->gemm_isa_ = SelectSmallGemmIsa(options.kernels.forced);
  RETURN_IF_ERROR(ValidateTensors(c, ckpt, DeepseekTensorTable(c)));
  if (options.check_tensors) RETURN_IF_ERROR(CheckFinite(ckpt));

  m->rope_ = std::make_unique<Rope>(c);
  RETURN_IF_ERROR(m->LoadEmbeddingsAndHead());
  const std::optional<WeightFormat> w = options.weight_format;
  m->attn_.resize(static_cast<size_t>(c.num_hidden_layers));
  RETURN_IF_ERROR(m->LoadLayers(progress, [&](int64_t l) -> Status {
    const std::string a = fmt::format("model.layers.{}.self_attn.", l);
    // Attention: this rank's heads [h0, h1): q rows, kv_b rows (o_proj columns: LoadLayers);
    // kv_a replicated.
    AttentionWeights& at = m->attn_[static_cast<size_t>(l)];
    const int64_t h0 = m->head_begin_, h1 = m->head_end_, qd = c.q_head_dim();
    if (c.q_lora_rank == 0) {
      ASSIGN_OR_RETURN(StoredWeight q, GetStoredWeight(ckpt, a + "q_proj.weight"));
      ASSIGN_OR_RETURN(at.q_proj, PackAs(q.Rows(h0 * qd, h1 * qd), w));
    } else {
      ASSIGN_OR_RETURN(at.q_a_proj, LoadPacked(ckpt, a + "q_a_proj.weight", w));
      ASSIGN_OR_RETURN(at.q_a_norm, LoadVector(ckpt, a + "q_a_layernorm.weight"));
      ASSIGN_OR_RETURN(StoredWeight qb, GetStoredWeight(ckpt, a + "q_b_proj.weight"));
      ASSIGN_OR_RETURN(at.q_b_proj, PackAs(qb.Rows(h0 * qd, h1 * qd), w));
    }
    ASSIGN_OR_RETURN(at.kv_a_proj, LoadPacked(ckpt, a + "kv_a_proj_with_mqa.weight", w));
    ASSIGN_OR_RETURN(at.kv_a_norm, LoadVector(ckpt, a + "kv_a_layernorm.weight"));
    return LoadKvB(c, ckpt, l, h0, h1, w, options.kernels.precision != ActivationPrecision::kF32, &at);
  }));
  return m;
}

StatusOr<std::shared_ptr<KvBlockStorage>> DeepseekModel::NewKvStorage(int64_t n_blocks,
                                                                      int64_t block_tokens) const {
  return KvCache::NewStorage(config_, n_blocks, block_tokens);
}

StatusOr<std::unique_ptr<ModelCache>> DeepseekModel::NewCache(std::shared_ptr<KvBlockStorage> storage,
                                                              std::vector<int32_t> block_table,
                                                              int64_t capacity) const {
  ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache,
                   KvCache::Create(config_, std::move(storage), std::move(block_table), capacity));
  return std::unique_ptr<ModelCache>(std::move(cache));
}

double DeepseekModel::CacheBytesPerToken() const {
  return static_cast<double>(config_.num_hidden_layers * (config_.kv_lora_rank + config_.qk_rope_head_dim)) *
         sizeof(float);
}

Status DeepseekModel::Attention(int64_t layer, const float* x, int64_t t_count, const RowPlace* rows,
                                float* o) {
  const ModelConfig& c = config_;
  const AttentionWeights& at = attn_[static_cast<size_t>(layer)];
  const int64_t nh = local_heads(), dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim;
  const int64_t dv = c.v_head_dim, r = c.kv_lora_rank, qd = c.q_head_dim();
  // Projections: q [T, nh * qd], ckv [T, r + dr].
  float* q = scratch_.q.Get(static_cast<size_t>(t_count * nh * qd));
  float* ckv = scratch_.ckv.Get(static_cast<size_t>(t_count * (r + dr)));
  // The projections that read x (q or q_a, and kv_a) in one parallel loop.
  float* qa = scratch_.qa.Get(static_cast<size_t>(t_count * c.q_lora_rank));
  const LinearOutput from_x[] = {
      c.q_lora_rank == 0 ? LinearOutput{&at.q_proj, q} : LinearOutput{&at.q_a_proj, qa},
      {&at.kv_a_proj, ckv}};
  LinearForwardSameInput(from_x, x, t_count, Ctx());
  if (c.q_lora_rank > 0) {
    RmsNorm(qa, at.q_a_norm, t_count, c.q_lora_rank, kLatentNormEps, qa);
    LinearForward(at.q_b_proj, qa, t_count, q, Ctx());
  }
  // Each token's rotation, once for its k_pe and every head's q_pe: [T, dr].
  float* rope_cs = scratch_.rope.Get(static_cast<size_t>(t_count * dr));
  for (int64_t t = 0; t < t_count; ++t) rope_->Angles(rows[t].pos, rope_cs + t * dr);
  // Cache: normalised c_kv and roped k_pe per token (each row in its own sequence's cache).
  for (int64_t t = 0; t < t_count; ++t) {
    float* e = static_cast<KvCache*>(rows[t].cache)->entry(layer, rows[t].pos);
    RmsNorm(ckv + t * (r + dr), at.kv_a_norm, 1, r, kLatentNormEps, e);
    std::copy(ckv + t * (r + dr) + r, ckv + (t + 1) * (r + dr), e + r);
    rope_->ApplyAngles(e + r, rope_cs + t * dr);
  }
  // Absorbed attention. A task is a run of tokens of one sequence x a range of heads: it absorbs
  // its queries (q_cat = [q_nope through kv_b's K rows | roped q_pe]), attends over the latent
  // cache (model/mla_attention.h: one score GEMM and one value GEMM for all its rows) and reads
  // the values back through kv_b's V rows. Prefill: runs of up to 16 tokens x all heads; a few
  // tokens (decode): one token x a thread's share of the heads, so every thread has work and reads
  // the cache once. With shares of half that size (two tasks per thread, each reading the whole
  // cache) this phase took 1.08-1.11 x the time at tg128 and 1.14 x at tg512 (in-process A/B,
  // V2-Lite Q4_K and Q8_0 files, AMD Zen 5, 2 threads). A row's bits do not depend on its task
  // (PagedModelTest.EveryThreadCountGivesTheOneThreadLogits).
  const float scale = static_cast<float>(c.SoftmaxScale());
  const int threads = pool_ ? pool_->size() : 1;
  const bool few = t_count < 2 * threads;
  const int64_t heads_per_task = few ? std::max<int64_t>(1, (nh + threads - 1) / threads) : nh;
  const int64_t head_groups = (nh + heads_per_task - 1) / heads_per_task;
  const int64_t max_run = few ? 1 : 16;
  std::vector<std::pair<int64_t, int64_t>> runs;  // [t0, t1): one cache, consecutive rows
  for (int64_t t = 0; t < t_count;) {
    int64_t t1 = t + 1;
    while (t1 < t_count && t1 - t < max_run && rows[t1].cache == rows[t].cache) ++t1;
    runs.emplace_back(t, t1);
    t = t1;
  }
  const int64_t qc = r + dr;  // q_cat row: [q_lat (r) | q_pe (dr)], like a cache entry
  float* q_cat = scratch_.q_cat.Get(static_cast<size_t>(t_count * nh * qc));
  float* o_lat = scratch_.o_lat.Get(static_cast<size_t>(t_count * nh * r));
  if (head_acts_.size() < static_cast<size_t>(threads)) head_acts_.resize(static_cast<size_t>(threads));
  // Task `id`: run id / head_groups, heads [h_a, h_b).
  struct HeadTask {
    int64_t t0, t1, h_a, h_b;
  };
  const auto task_of = [&](int64_t id) {
    const auto [t0, t1] = runs[static_cast<size_t>(id / head_groups)];
    const int64_t h_a = (id % head_groups) * heads_per_task;
    return HeadTask{t0, t1, h_a, std::min(nh, h_a + heads_per_task)};
  };
  const auto head_ctx_of = [&](int thread) {
    LinearContext head_ctx = Ctx();  // the packed kv_b heads: on this thread, its own buffer
    head_ctx.pool = nullptr;
    head_ctx.acts = &head_acts_[static_cast<size_t>(thread)];
    return head_ctx;
  };
  // One token (decode): a task's heads in one call, their packed kv_b slices read as memory
  // streams together where the kernel row has them (LinearForwardRowPerWeight). In-process A/B of
  // the attention phase against a call per head (V2-Lite, AMD Zen 5, 2 threads, tg128): 0.90-0.92 x
  // the time on the Q4_0 file, 0.94-1.05 x on Q8_0, 0.91-1.11 x (median 0.95) on Q4_K (its k_b
  // heads are Q5_0 streams, its v_b heads Q4_K one by one).
  const auto share = [](const std::vector<PackedWeight>& heads, const HeadTask& k) {
    return std::span(heads).subspan(static_cast<size_t>(k.h_a), static_cast<size_t>(k.h_b - k.h_a));
  };
  // q_cat rows of the task's tokens and heads: q_nope absorbed through kv_b's K rows, roped q_pe.
  const auto absorb = [&](const HeadTask& k, const LinearContext& head_ctx) {
    const int64_t m = k.t1 - k.t0;
    const bool heads_at_once = m == 1;
    if (heads_at_once && !at.k_b_heads.empty()) {
      LinearForwardRowPerWeight(share(at.k_b_heads, k), q + k.t0 * nh * qd + k.h_a * qd, qd,
                                q_cat + (k.t0 * nh + k.h_a) * qc, qc, head_ctx);
    }
    for (int64_t hd = k.h_a; hd < k.h_b; ++hd) {  // the run's tokens as one batch of the row ops
      const float* qn = q + k.t0 * nh * qd + hd * qd;
      float* ql = q_cat + (k.t0 * nh + hd) * qc;
      const RowBatch batch{.m = m, .ldx = nh * qd, .ldy = nh * qc};
      if (!at.k_b_heads.empty()) {
        if (!heads_at_once)
          LinearForward(at.k_b_heads[static_cast<size_t>(hd)], qn, m, ql, head_ctx, false, nh * qc, nh * qd);
      } else if (at.k_b_transposed) {
        RowsDot(row_isa_, at.k_b.View(hd * r, (hd + 1) * r), qn, ql, batch);  // rows [r] of dn
      } else {  // the axpy adds into q_lat; the two paths above store every element
        for (int64_t i = 0; i < m; ++i) std::fill(ql + i * nh * qc, ql + i * nh * qc + r, 0.0f);
        RowsAxpy(row_isa_, at.k_b.View(hd * dn, (hd + 1) * dn), qn, ql, batch);  // rows [dn] of r
      }
      for (int64_t i = 0; i < m; ++i) {
        std::copy(qn + i * nh * qd + dn, qn + i * nh * qd + qd, ql + i * nh * qc + r);
        rope_->ApplyAngles(ql + i * nh * qc + r, rope_cs + (k.t0 + i) * dr);
      }
    }
  };
  // o_lat rows of the task's tokens and heads, over their sequence's latent cache.
  const auto attend = [&](const HeadTask& k) {
    const LatentCacheView view = static_cast<const KvCache*>(rows[k.t0].cache)->View(layer);
    if (k.h_b - k.h_a == nh) {  // rows (t, h) of the run are contiguous
      std::vector<int64_t> pos(static_cast<size_t>((k.t1 - k.t0) * nh));
      for (int64_t i = 0; i < static_cast<int64_t>(pos.size()); ++i) pos[i] = rows[k.t0 + i / nh].pos;
      LatentAttention(q_cat + k.t0 * nh * qc, (k.t1 - k.t0) * nh, qc, pos.data(), view, scale,
                      o_lat + k.t0 * nh * r, r, gemm_isa_);
      return;
    }
    for (int64_t t = k.t0; t < k.t1; ++t) {
      const std::vector<int64_t> pos(static_cast<size_t>(k.h_b - k.h_a), rows[t].pos);
      LatentAttention(q_cat + (t * nh + k.h_a) * qc, k.h_b - k.h_a, qc, pos.data(), view, scale,
                      o_lat + (t * nh + k.h_a) * r, r, gemm_isa_);
    }
  };
  // Attention outputs of the task's tokens and heads: o_lat read back through kv_b's V rows.
  const auto read_back = [&](const HeadTask& k, const LinearContext& head_ctx) {
    const int64_t m = k.t1 - k.t0;
    if (m == 1 && !at.v_b_heads.empty()) {
      LinearForwardRowPerWeight(share(at.v_b_heads, k), o_lat + (k.t0 * nh + k.h_a) * r, r,
                                o + k.t0 * nh * dv + k.h_a * dv, dv, head_ctx);
      return;
    }
    for (int64_t hd = k.h_a; hd < k.h_b; ++hd) {  // V rows [dv] of r
      if (!at.v_b_heads.empty()) {
        LinearForward(at.v_b_heads[static_cast<size_t>(hd)], o_lat + (k.t0 * nh + hd) * r, m,
                      o + k.t0 * nh * dv + hd * dv, head_ctx, false, nh * dv, nh * r);
        continue;
      }
      RowsDot(row_isa_, at.v_b.View(hd * dv, (hd + 1) * dv), o_lat + (k.t0 * nh + hd) * r,
              o + k.t0 * nh * dv + hd * dv, {.m = m, .ldx = nh * r, .ldy = nh * dv});
    }
  };
  const int64_t n_tasks = static_cast<int64_t>(runs.size()) * head_groups;
  int64_t longest = 0;  // context of the longest run's last token
  for (int64_t t = 0; t < t_count; ++t) longest = std::max(longest, rows[t].pos + 1);
  if (!few || threads == 1 || longest < kSpreadMinContext) {
    ParallelForOn(pool_, n_tasks, [&](int64_t id, int thread) {
      const HeadTask k = task_of(id);
      const LinearContext head_ctx = head_ctx_of(thread);
      absorb(k, head_ctx);
      attend(k);
      read_back(k, head_ctx);
    });
    return Status::Ok();
  }
  // A long context: each token's attention over all its heads spread over the threads, so the
  // cache is read once between them (LatentAttentionSpread: the same bits).
  ParallelForOn(pool_, n_tasks, [&](int64_t id, int thread) { absorb(task_of(id), head_ctx_of(thread)); });
  for (int64_t t = 0; t < t_count; ++t) {
    const std::vector<int64_t> pos(static_cast<size_t>(nh), rows[t].pos);
    LatentAttentionSpread(pool_, q_cat + t * nh * qc, nh, qc, pos.data(),
                          static_cast<const KvCache*>(rows[t].cache)->View(layer), scale, o_lat + t * nh * r,
                          r, gemm_isa_);
  }
  ParallelForOn(pool_, n_tasks, [&](int64_t id, int thread) { read_back(task_of(id), head_ctx_of(thread)); });
  return Status::Ok();
}

double DeepseekModel::AttentionWeightBytes(int64_t layer) const {
  const AttentionWeights& at = attn_[static_cast<size_t>(layer)];
  return static_cast<double>(at.q_proj.bytes() + at.q_a_proj.bytes() + at.q_b_proj.bytes() +
                             at.kv_a_proj.bytes()) +
         static_cast<double>(at.k_b.nbytes() + at.v_b.nbytes()) + PackedBytes(at.k_b_heads) +
         PackedBytes(at.v_b_heads);  // kv_b as stored or packed
}

}  // namespace moerun
