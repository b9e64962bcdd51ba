#include "model/deepseek_model.h"

#include <cmath>
#include <map>
#include <set>

#include "comm/in_process_comm.h"
#include "core/fixed_point.h"
#include "io/atomic_file.h"
#include "kernels/vector_ops.h"
#include "model/gguf_deepseek2.h"
#include "model/mla_attention.h"
#include "moe/moe_weights.h"
#include "parallel/transition.h"

namespace moerun {
namespace {

constexpr float kLatentNormEps = 1e-6f;  // q_a_layernorm / kv_a_layernorm use the module default

struct Expected {
  std::map<std::string, Shape> shapes;  // non-MoE tensors
  std::set<std::string> moe_prefixes;   // "model.layers.N.mlp." of MoE layers
};

Expected ExpectedTensors(const ModelConfig& c) {
  Expected e;
  const int64_t h = c.hidden_size, nh = c.num_attention_heads, qd = c.q_head_dim();
  e.shapes["model.embed_tokens.weight"] = {c.vocab_size, h};
  if (!c.tie_word_embeddings) e.shapes["lm_head.weight"] = {c.vocab_size, h};
  e.shapes["model.norm.weight"] = {h};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    e.shapes[p + "input_layernorm.weight"] = {h};
    e.shapes[p + "post_attention_layernorm.weight"] = {h};
    const std::string a = p + "self_attn.";
    if (c.q_lora_rank == 0) {
      e.shapes[a + "q_proj.weight"] = {nh * qd, h};
    } else {
      e.shapes[a + "q_a_proj.weight"] = {c.q_lora_rank, h};
      e.shapes[a + "q_a_layernorm.weight"] = {c.q_lora_rank};
      e.shapes[a + "q_b_proj.weight"] = {nh * qd, c.q_lora_rank};
    }
    e.shapes[a + "kv_a_proj_with_mqa.weight"] = {c.kv_lora_rank + c.qk_rope_head_dim, h};
    e.shapes[a + "kv_a_layernorm.weight"] = {c.kv_lora_rank};
    e.shapes[a + "kv_b_proj.weight"] = {nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank};
    e.shapes[a + "o_proj.weight"] = {h, nh * c.v_head_dim};
    if (c.IsMoeLayer(l)) {
      e.moe_prefixes.insert(p + "mlp.");
    } else {
      e.shapes[p + "mlp.gate_proj.weight"] = {c.intermediate_size, h};
      e.shapes[p + "mlp.up_proj.weight"] = {c.intermediate_size, h};
      e.shapes[p + "mlp.down_proj.weight"] = {h, c.intermediate_size};
    }
  }
  return e;
}

// Layer index of "model.layers.N.*", or -1.
int64_t LayerOf(const std::string& name) {
  constexpr std::string_view kPrefix = "model.layers.";
  if (name.rfind(kPrefix, 0) != 0) return -1;
  int64_t n = 0;
  size_t i = kPrefix.size();
  if (i >= name.size() || !std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) n = n * 10 + (name[i++] - '0');
  return n;
}

Status Validate(const ModelConfig& c, const TensorSource& ckpt, const Expected& e) {
  for (const auto& [name, shape] : e.shapes) {
    const TensorMeta* t = ckpt.Find(name);
    if (t == nullptr)
      return NotFound("{}: tensor '{}' is missing (expected shape {})", ckpt.path(), name,
                      ShapeToString(shape));
    if (t->shape != shape) {
      return InvalidArgument("{}: tensor '{}' has shape {}, expected {} from config.json", ckpt.path(), name,
                             ShapeToString(t->shape), ShapeToString(shape));
    }
    const bool dense = t->dtype == DType::kF32 || t->dtype == DType::kBF16 || t->dtype == DType::kF16;
    if (!dense && !(IsBlockDType(t->dtype) && shape.size() == 2)) {
      return InvalidArgument(
          "{}: tensor '{}' has dtype {}, expected F32, BF16, F16 (or a GGUF block type for a "
          "matrix)",
          ckpt.path(), name, DTypeName(t->dtype));
    }
  }
  for (const std::string& name : ckpt.Names()) {
    if (e.shapes.count(name)) continue;
    const int64_t layer = LayerOf(name);
    if (layer >= c.num_hidden_layers) continue;  // multi-token-prediction layers (V3): not used
    if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;
    bool in_moe = false;
    for (const std::string& p : e.moe_prefixes) in_moe |= name.rfind(p, 0) == 0;
    if (in_moe) continue;  // validated by MoeWeights::Load
    return InvalidArgument("{}: unexpected tensor '{}' (not used by the config: {})", ckpt.path(), name,
                           c.Summary());
  }
  return Status::Ok();
}

StatusOr<std::vector<float>> LoadVector(const TensorSource& ckpt, const std::string& name) {
  ASSIGN_OR_RETURN(Tensor t, ckpt.Get(name));
  ASSIGN_OR_RETURN(Tensor f, t.ToF32());
  return std::vector<float>(f.span<float>().begin(), f.span<float>().end());
}

// Packs W[:, c0:c1) in the requested format, or the nearest one whose K alignment divides
// `align_k` (the slice width, or a deterministic K-block).
StatusOr<PackedWeight> PackAs(const Tensor& t, std::optional<WeightFormat> requested, int64_t c0 = 0,
                              int64_t c1 = -1, int64_t align_k = 0) {
  if (c1 < 0) c1 = t.dim(1);
  const WeightFormat f = ResolveWeightFormat(requested, t.dtype(), align_k > 0 ? align_k : c1 - c0);
  return PackedWeight::Pack(t, f, c0, c1);
}

StatusOr<PackedWeight> LoadPacked(const TensorSource& ckpt, const std::string& name,
                                  std::optional<WeightFormat> requested) {
  ASSIGN_OR_RETURN(Tensor t, ckpt.Get(name));
  return PackAs(t, requested);
}

Status CheckFinite(const TensorSource& ckpt) {
  for (const std::string& name : ckpt.Names()) {
    ASSIGN_OR_RETURN(Tensor t, ckpt.Get(name));
    const bool dense = t.dtype() == DType::kF32 || t.dtype() == DType::kBF16 || t.dtype() == DType::kF16;
    if (!dense && !IsBlockDType(t.dtype())) continue;
    ASSIGN_OR_RETURN(Tensor f, t.ToF32());  // block types: dequantised (a NaN/Inf f16 scale shows up)
    const std::span<const float> v = f.span<float>();
    for (size_t i = 0; i < v.size(); ++i) {
      if (!std::isfinite(v[i])) {
        return InvalidArgument("{}: tensor '{}' holds {} at flat index {}", ckpt.path(), name, v[i], i);
      }
    }
  }
  return Status::Ok();
}

// Appends rows [r0, r1) of `t` viewed as [rows, cols] (row-major, t's dtype) to `out`.
void AppendRows(const Tensor& t, int64_t cols, int64_t r0, int64_t r1, StoredRows* out) {
  const size_t row_bytes = DTypeRowBytes(t.dtype(), cols);
  for (int64_t i = r0; i < r1; ++i) AppendRow(out, static_cast<const uint8_t*>(t.raw()) + i * row_bytes);
}

// MLA's kv_b halves of heads [h0, h1) in their stored dtype (AttentionWeights::k_b / v_b): from
// GGUF's split attn_k_b / attn_v_b when the source serves them (model/gguf_deepseek2.h), else
// from kv_b_proj.
Status LoadKvB(const ModelConfig& c, const TensorSource& ckpt, int64_t layer, int64_t h0, int64_t h1,
               AttentionWeights* at) {
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
    ASSIGN_OR_RETURN(at->k_b, MakeStoredRows(kb.dtype(), dn));
    ASSIGN_OR_RETURN(at->v_b, MakeStoredRows(vb.dtype(), r));
    at->k_b_transposed = true;
    AppendRows(kb, dn, h0 * r, h1 * r, &at->k_b);
    AppendRows(vb, r, h0 * dv, h1 * dv, &at->v_b);
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(Tensor kv_b, ckpt.Get(fmt::format("model.layers.{}.self_attn.kv_b_proj.weight", layer)));
  ASSIGN_OR_RETURN(at->k_b, MakeStoredRows(kv_b.dtype(), r));
  ASSIGN_OR_RETURN(at->v_b, MakeStoredRows(kv_b.dtype(), r));
  at->k_b_transposed = false;
  for (int64_t h = h0; h < h1; ++h) {
    AppendRows(kv_b, r, h * (dn + dv), h * (dn + dv) + dn, &at->k_b);
    AppendRows(kv_b, r, h * (dn + dv) + dn, (h + 1) * (dn + dv), &at->v_b);
  }
  return Status::Ok();
}

}  // namespace

LayoutDims ModelLayoutDims(const ModelConfig& c) {
  LayoutDims d = MoeLayoutDims(c.moe);
  d.attention_heads = c.num_attention_heads;
  d.v_head_dim = c.v_head_dim;
  d.vocab = c.vocab_size;
  return d;
}

std::vector<std::pair<std::string, Shape>> ExpectedModelTensors(const ModelConfig& c) {
  const Expected e = ExpectedTensors(c);
  std::vector<std::pair<std::string, Shape>> out(e.shapes.begin(), e.shapes.end());
  for (const std::string& prefix : e.moe_prefixes) {
    for (const MoeTensorSpec& spec : ExpectedMoeTensors(c.moe))
      out.emplace_back(prefix + spec.name, spec.shape);
  }
  return out;
}

DeepseekModel::~DeepseekModel() = default;

StatusOr<std::unique_ptr<DeepseekModel>> DeepseekModel::Load(
    const std::string& dir, const ModelLoadOptions& options, ThreadPool* pool,
    const std::function<void(double, const std::string&)>& progress, Communicator* world) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(dir + "/config.json"));
  ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromJson(text, dir + "/config.json"));
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(dir));
  return LoadFrom(std::move(ckpt), std::move(config), options, pool, progress, world);
}

StatusOr<std::unique_ptr<DeepseekModel>> DeepseekModel::LoadFrom(
    std::unique_ptr<TensorSource> source, ModelConfig config, const ModelLoadOptions& options,
    ThreadPool* pool, const std::function<void(double, const std::string&)>& progress, Communicator* world) {
  std::unique_ptr<DeepseekModel> m(new DeepseekModel());
  m->options_ = options;
  // Deterministic mode needs batch-invariant kernels: one kernel row whatever the row count.
  m->options_.kernels.deterministic = m->options_.kernels.deterministic || options.parallel.deterministic;
  m->pool_ = pool;
  if (world == nullptr) {
    m->own_world_ = std::move(InProcessWorld::Create(1)[0]);
    world = m->own_world_.get();
  }
  m->world_ = world;
  m->config_ = std::move(config);
  const ModelConfig& c = m->config_;
  m->ckpt_ = std::move(source);
  const TensorSource& ckpt = *m->ckpt_;
  const ParallelOptions& par = options.parallel;
  // The rank's layout: validated and split into groups once for every layer.
  ASSIGN_OR_RETURN(m->context_, RankContext::Create(par, ModelLayoutDims(c), *world, pool));
  const ParallelLayout& layout = m->context_->layout();
  m->head_begin_ = layout.Heads().begin;
  m->head_end_ = layout.Heads().end;
  m->row_isa_ = SelectRowOpsIsa(options.kernels.forced);
  const Expected expected = ExpectedTensors(c);
  RETURN_IF_ERROR(Validate(c, ckpt, expected));
  if (options.check_tensors) RETURN_IF_ERROR(CheckFinite(ckpt));

  m->rope_ = std::make_unique<Rope>(c);
  ASSIGN_OR_RETURN(m->embed_, ckpt.Get("model.embed_tokens.weight"));
  ASSIGN_OR_RETURN(m->final_norm_, LoadVector(ckpt, "model.norm.weight"));
  // Vocab-parallel lm_head: each TP rank holds rows [v0, v1) and the logits are all-gathered.
  {
    ASSIGN_OR_RETURN(Tensor head,
                     ckpt.Get(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"));
    ASSIGN_OR_RETURN(m->lm_head_,
                     PackAs(head.Rows(layout.Vocab().begin, layout.Vocab().end), options.weight_format));
  }
  const std::optional<WeightFormat> w = options.weight_format;
  m->layers_.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    // What was packed is resident twice (packed + file pages): drop the file pages as we go, so
    // the peak stays near one copy of the model.
    ckpt.ReleaseResidentPages();
    if (progress)
      progress(static_cast<double>(l) / static_cast<double>(c.num_hidden_layers), fmt::format("layer {}", l));
    LayerWeights& lw = m->layers_[static_cast<size_t>(l)];
    const std::string p = fmt::format("model.layers.{}.", l), a = p + "self_attn.";
    ASSIGN_OR_RETURN(lw.input_norm, LoadVector(ckpt, p + "input_layernorm.weight"));
    ASSIGN_OR_RETURN(lw.post_norm, LoadVector(ckpt, p + "post_attention_layernorm.weight"));
    // Attention: this rank's heads [h0, h1): q rows, kv_b rows, o_proj columns; kv_a replicated.
    AttentionWeights& at = lw.attn;
    const int64_t h0 = m->head_begin_, h1 = m->head_end_, qd = c.q_head_dim();
    if (c.q_lora_rank == 0) {
      ASSIGN_OR_RETURN(Tensor q, ckpt.Get(a + "q_proj.weight"));
      ASSIGN_OR_RETURN(at.q_proj, PackAs(q.Rows(h0 * qd, h1 * qd), w));
    } else {
      ASSIGN_OR_RETURN(at.q_a_proj, LoadPacked(ckpt, a + "q_a_proj.weight", w));
      ASSIGN_OR_RETURN(at.q_a_norm, LoadVector(ckpt, a + "q_a_layernorm.weight"));
      ASSIGN_OR_RETURN(Tensor qb, ckpt.Get(a + "q_b_proj.weight"));
      ASSIGN_OR_RETURN(at.q_b_proj, PackAs(qb.Rows(h0 * qd, h1 * qd), w));
    }
    ASSIGN_OR_RETURN(at.kv_a_proj, LoadPacked(ckpt, a + "kv_a_proj_with_mqa.weight", w));
    ASSIGN_OR_RETURN(at.kv_a_norm, LoadVector(ckpt, a + "kv_a_layernorm.weight"));
    RETURN_IF_ERROR(LoadKvB(c, ckpt, l, h0, h1, &at));
    ASSIGN_OR_RETURN(Tensor o, ckpt.Get(a + "o_proj.weight"));
    // Deterministic mode sums o_proj per head (K-blocks of v_head_dim columns).
    ASSIGN_OR_RETURN(
        at.o_proj, PackAs(o, w, h0 * c.v_head_dim, h1 * c.v_head_dim, par.deterministic ? c.v_head_dim : 0));
    if (c.IsMoeLayer(l)) {
      // One set of MoE expert buffers for the whole rank (the context's), shared by every layer.
      ASSIGN_OR_RETURN(lw.moe,
                       ParallelMoe::Create(c.moe, ckpt, p + "mlp.", m->context_, w, m->options_.kernels));
    } else {
      ASSIGN_OR_RETURN(Tensor gate, ckpt.Get(p + "mlp.gate_proj.weight"));
      ASSIGN_OR_RETURN(Tensor up, ckpt.Get(p + "mlp.up_proj.weight"));
      ASSIGN_OR_RETURN(lw.mlp_gate_up,
                       PackedWeight::PackGateUp(gate, up, ResolveWeightFormat(w, gate.dtype(), gate.dim(1))));
      ASSIGN_OR_RETURN(lw.mlp_down, LoadPacked(ckpt, p + "mlp.down_proj.weight", w));
    }
  }
  ckpt.ReleaseResidentPages();
  if (progress) progress(1.0, "done");
  return m;
}

void DeepseekModel::RmsNorm(const float* x, const std::vector<float>& w, int64_t rows, int64_t dim, float eps,
                            float* y) const {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
    for (int64_t i = 0; i < dim; ++i) y[r * dim + i] = xr[i] * inv * w[static_cast<size_t>(i)];
  }
}

void DeepseekModel::Attention(int64_t layer, const float* x, int64_t t_count, const RowPlace* rows,
                              float* o) {
  const ModelConfig& c = config_;
  const AttentionWeights& at = layers_[static_cast<size_t>(layer)].attn;
  const int64_t nh = head_end_ - head_begin_, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim;
  const int64_t dv = c.v_head_dim, r = c.kv_lora_rank, qd = c.q_head_dim();
  // Projections: q [T, nh * qd], ckv [T, r + dr].
  std::vector<float> q(static_cast<size_t>(t_count * nh * qd)), ckv(static_cast<size_t>(t_count * (r + dr)));
  if (c.q_lora_rank == 0) {
    LinearForward(at.q_proj, x, t_count, q.data(), Ctx());
  } else {
    std::vector<float> qa(static_cast<size_t>(t_count * c.q_lora_rank));
    LinearForward(at.q_a_proj, x, t_count, qa.data(), Ctx());
    RmsNorm(qa.data(), at.q_a_norm, t_count, c.q_lora_rank, kLatentNormEps, qa.data());
    LinearForward(at.q_b_proj, qa.data(), t_count, q.data(), Ctx());
  }
  LinearForward(at.kv_a_proj, x, t_count, ckv.data(), Ctx());
  // Cache: normalised c_kv and roped k_pe per token (each row in its own sequence's cache).
  for (int64_t t = 0; t < t_count; ++t) {
    float* e = rows[t].cache->entry(layer, rows[t].pos);
    RmsNorm(ckv.data() + t * (r + dr), at.kv_a_norm, 1, r, kLatentNormEps, e);
    std::copy(ckv.data() + t * (r + dr) + r, ckv.data() + (t + 1) * (r + dr), e + r);
    rope_->Apply(e + r, rows[t].pos);
  }
  // Absorbed attention. A task is a run of tokens of one sequence x a range of heads: it absorbs
  // its queries (q_cat = [q_nope through kv_b's K rows | roped q_pe]), attends over the latent
  // cache (model/mla_attention.h: one score GEMM and one value GEMM for all its rows) and reads
  // the values back through kv_b's V rows. Prefill: runs of up to 16 tokens x all heads; a few
  // tokens (decode): one token x a slice of the heads, so every thread has work.
  const float scale = static_cast<float>(c.SoftmaxScale());
  const int threads = pool_ ? pool_->size() : 1;
  const bool few = t_count < 2 * threads;
  const int64_t heads_per_task = few ? std::max<int64_t>(1, nh / (2 * threads)) : nh;
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
  std::vector<float> q_cat(static_cast<size_t>(t_count * nh * qc)),
      o_lat(static_cast<size_t>(t_count * nh * r));
  auto task = [&](int64_t id, int) {
    const auto [t0, t1] = runs[static_cast<size_t>(id / head_groups)];
    const int64_t h_a = (id % head_groups) * heads_per_task, h_b = std::min(nh, h_a + heads_per_task);
    const int64_t m = t1 - t0;
    for (int64_t hd = h_a; hd < h_b; ++hd) {  // the run's tokens as one batch of the row ops
      const float* qn = q.data() + t0 * nh * qd + hd * qd;
      float* ql = q_cat.data() + (t0 * nh + hd) * qc;
      const RowBatch batch{.m = m, .ldx = nh * qd, .ldy = nh * qc};
      for (int64_t i = 0; i < m; ++i) std::fill(ql + i * nh * qc, ql + i * nh * qc + r, 0.0f);
      if (at.k_b_transposed) {
        RowsDot(row_isa_, at.k_b.View(hd * r, (hd + 1) * r), qn, ql, batch);  // rows [r] of dn
      } else {
        RowsAxpy(row_isa_, at.k_b.View(hd * dn, (hd + 1) * dn), qn, ql, batch);  // rows [dn] of r
      }
      for (int64_t i = 0; i < m; ++i) {
        std::copy(qn + i * nh * qd + dn, qn + i * nh * qd + qd, ql + i * nh * qc + r);
        rope_->Apply(ql + i * nh * qc + r, rows[t0 + i].pos);
      }
    }
    const KvCache* cache = rows[t0].cache;
    const LatentCacheView view{cache->entry(layer, 0), cache->stride(), r};
    if (h_b - h_a == nh) {  // rows (t, h) of the run are contiguous
      std::vector<int64_t> pos(static_cast<size_t>((t1 - t0) * nh));
      for (int64_t i = 0; i < static_cast<int64_t>(pos.size()); ++i) pos[i] = rows[t0 + i / nh].pos;
      LatentAttention(q_cat.data() + t0 * nh * qc, (t1 - t0) * nh, qc, pos.data(), view, scale,
                      o_lat.data() + t0 * nh * r, r);
    } else {
      for (int64_t t = t0; t < t1; ++t) {
        const std::vector<int64_t> pos(static_cast<size_t>(h_b - h_a), rows[t].pos);
        LatentAttention(q_cat.data() + (t * nh + h_a) * qc, h_b - h_a, qc, pos.data(), view, scale,
                        o_lat.data() + (t * nh + h_a) * r, r);
      }
    }
    for (int64_t hd = h_a; hd < h_b; ++hd) {  // V rows [dv] of r
      RowsDot(row_isa_, at.v_b.View(hd * dv, (hd + 1) * dv), o_lat.data() + (t0 * nh + hd) * r,
              o + t0 * nh * dv + hd * dv, {.m = m, .ldx = nh * r, .ldy = nh * dv});
    }
  };
  const int64_t n_tasks = static_cast<int64_t>(runs.size()) * head_groups;
  if (pool_) {
    pool_->ParallelFor(n_tasks, task);
  } else {
    for (int64_t i = 0; i < n_tasks; ++i) task(i, 0);
  }
}

Status DeepseekModel::OutputProjection(int64_t layer, const float* o, int64_t t_count, float* out) {
  const AttentionWeights& at = layers_[static_cast<size_t>(layer)].attn;
  const int64_t h = config_.hidden_size, dv = config_.v_head_dim, nh = head_end_ - head_begin_;
  if (!options_.parallel.deterministic) {
    // Row-parallel o_proj: a partial sum over this rank's heads, all-reduced over TP.
    LinearForward(at.o_proj, o, t_count, out, Ctx());
    StatedBuffer sum = StatedBuffer::F32(ReductionState::Partial(Group::kTp), t_count, h, out);
    return Transition(layout(), &sum, ReductionState::Replicated(Group::kTp),
                      fmt::format("layer {} o_proj output", layer));
  }
  // Deterministic: every head's contribution (a fixed K-block of o_proj) is summed exactly in
  // fixed point, so the result does not depend on how heads are split over ranks.
  const int64_t k = nh * dv;
  std::vector<Fixed128> acc(static_cast<size_t>(t_count * h), 0);
  std::vector<float> part(static_cast<size_t>(t_count * h));
  const MatmulKernel& kernel = SelectKernel(at.o_proj.format(), t_count, options_.kernels);
  MatmulJob job{.rows = t_count,
                .x = acts_.Prepare(kernel.acts, o, t_count, k, k, pool_),
                .w = &at.o_proj,
                .kernel = &kernel,
                .y = part.data(),
                .ldy = h};
  for (int64_t hd = 0; hd < nh; ++hd) {
    job.k_begin = hd * dv;
    job.k_end = (hd + 1) * dv;
    RunMatmul(job, pool_);
    for (size_t i = 0; i < part.size(); ++i) acc[i] += ToFixed(part[i]);
  }
  StatedBuffer sum = StatedBuffer::Fixed(ReductionState::Partial(Group::kTp), t_count, h, acc.data());
  RETURN_IF_ERROR(Transition(layout(), &sum, ReductionState::Replicated(Group::kTp),
                             fmt::format("layer {} o_proj output", layer)));
  for (size_t i = 0; i < acc.size(); ++i) out[i] = FromFixed(acc[i]);
  return Status::Ok();
}  // namespace moerun

Status DeepseekModel::MoeLayer(int64_t layer, const float* x, int64_t t_count, float* out) {
  ParallelMoe& moe = *layers_[static_cast<size_t>(layer)].moe;
  const int64_t h = config_.hidden_size;
  if (!options_.parallel.sp) {
    ASSIGN_OR_RETURN(Tensor y, moe.Forward(Tensor::View(DType::kF32, {t_count, h}, const_cast<float*>(x)),
                                           static_cast<int>(layer), nullptr));
    std::copy(y.data<float>(), y.data<float>() + t_count * h, out);
    return Status::Ok();
  }
  // Sequence-parallel MoE: this TP rank runs its slice of the replica's tokens; the layer returns
  // its requested state, Complete(token-shard of tp), and the model all-gathers the slices.
  const ParallelLayout& lay = layout();
  const Range mine = lay.SpShard(t_count);
  ASSIGN_OR_RETURN(Tensor y, moe.Forward(Tensor::View(DType::kF32, {mine.size(), h},
                                                      const_cast<float*>(x) + mine.begin * h),
                                         static_cast<int>(layer), nullptr));
  std::vector<int64_t> shards;
  for (int q = 0; q < lay.GroupSize(Group::kTp); ++q) shards.push_back(lay.SpShard(t_count, q).size());
  StatedBuffer shard = StatedBuffer::F32(moe.RequestedState(), mine.size(), h, y.data<float>());
  StatedBuffer all = StatedBuffer::F32(moe.RequestedState(), t_count, h, out);
  return Transition(lay, &shard, ReductionState::Replicated(Group::kTp),
                    fmt::format("layer {} MoE output (SP)", layer), &all, shards);
}

Status DeepseekModel::Forward(std::span<const int32_t> tokens, KvCache* cache, bool all_logits,
                              std::vector<float>* logits) {
  if (tokens.empty() && world_->size() == 1) return InvalidArgument("no tokens to run");
  const SequenceChunk chunk{cache, tokens};
  return ForwardBatch(std::span<const SequenceChunk>(&chunk, 1), all_logits, logits);
}

Status DeepseekModel::ForwardBatch(std::span<const SequenceChunk> seqs, bool all_logits,
                                   std::vector<float>* logits) {
  CollectiveLog* log = collective_sink_ ? world_->log() : nullptr;
  if (log != nullptr) (void)log->Take();  // e.g. the previous step's broadcast: not this pass's
  const Status s = RunBatch(seqs, all_logits, logits);
  if (log != nullptr && s.ok()) collective_sink_(log->Take());
  return s;
}

Status DeepseekModel::RunBatch(std::span<const SequenceChunk> seqs, bool all_logits,
                               std::vector<float>* logits) {
  const ModelConfig& c = config_;
  const int64_t h = c.hidden_size;
  // Rows of the batch: every token of every sequence, in order, each with its cache and position.
  std::vector<RowPlace> rows;
  std::vector<int32_t> tokens;
  std::vector<int64_t> last_rows;  // the last row of each sequence with tokens
  for (const SequenceChunk& sc : seqs) {
    const int64_t start = sc.cache->size(), n = static_cast<int64_t>(sc.tokens.size());
    if (start + n > sc.cache->capacity()) {
      return OutOfRange("{} tokens after {} cached exceed the context of {} tokens", n, start,
                        sc.cache->capacity());
    }
    for (int64_t t = 0; t < n; ++t) {
      if (sc.tokens[t] < 0 || sc.tokens[t] >= c.vocab_size) {
        return OutOfRange("token id {} at position {} is outside the vocabulary [0, {})", sc.tokens[t],
                          start + t, c.vocab_size);
      }
      rows.push_back({sc.cache, start + t});
      tokens.push_back(sc.tokens[t]);
    }
    if (n > 0) last_rows.push_back(static_cast<int64_t>(rows.size()) - 1);
  }
  const int64_t t_count = static_cast<int64_t>(rows.size());
  if (t_count == 0 && world_->size() == 1) {  // nothing to do and no peers to meet
    logits->clear();
    return Status::Ok();
  }
  // Embeddings.
  std::vector<float> hs(static_cast<size_t>(t_count * h)), a(hs.size()), out(hs.size());
  std::vector<float> o(static_cast<size_t>(t_count * (head_end_ - head_begin_) * c.v_head_dim));
  const size_t row_bytes = DTypeRowBytes(embed_.dtype(), h);  // GGUF files may hold Q4_K etc.
  for (int64_t t = 0; t < t_count; ++t) {
    ConvertToF32(embed_.dtype(), embed_.data<char>() + static_cast<size_t>(tokens[t]) * row_bytes,
                 hs.data() + t * h, static_cast<size_t>(h));
  }
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights& lw = layers_[static_cast<size_t>(l)];
    RmsNorm(hs.data(), lw.input_norm, t_count, h, static_cast<float>(c.rms_norm_eps), a.data());
    Attention(l, a.data(), t_count, rows.data(), o.data());
    RETURN_IF_ERROR(OutputProjection(l, o.data(), t_count, out.data()));
    for (size_t i = 0; i < hs.size(); ++i) hs[i] += out[i];
    RmsNorm(hs.data(), lw.post_norm, t_count, h, static_cast<float>(c.rms_norm_eps), a.data());
    if (lw.moe) {
      RETURN_IF_ERROR(MoeLayer(l, a.data(), t_count, out.data()));
      for (size_t i = 0; i < hs.size(); ++i) hs[i] += out[i];
    } else {
      std::vector<float> act(static_cast<size_t>(t_count * c.intermediate_size));
      LinearForward(lw.mlp_gate_up, a.data(), t_count, act.data(), Ctx(), /*swiglu=*/true);
      LinearForward(lw.mlp_down, act.data(), t_count, out.data(), Ctx());
      for (size_t i = 0; i < hs.size(); ++i) hs[i] += out[i];
    }
  }
  for (const SequenceChunk& sc : seqs)
    sc.cache->set_size(sc.cache->size() + static_cast<int64_t>(sc.tokens.size()));
  if (t_count == 0) {
    logits->clear();
    return Status::Ok();
  }
  // Final norm on the rows whose logits are wanted: all, or each sequence's last.
  std::vector<int64_t> out_rows;
  if (all_logits) {
    for (int64_t r = 0; r < t_count; ++r) out_rows.push_back(r);
  } else {
    out_rows = last_rows;
  }
  const int64_t rows_out = static_cast<int64_t>(out_rows.size());
  for (int64_t i = 0; i < rows_out; ++i) {
    RmsNorm(hs.data() + out_rows[i] * h, final_norm_, 1, h, static_cast<float>(c.rms_norm_eps),
            a.data() + i * h);
  }
  const int64_t n_rows = rows_out;
  logits->assign(static_cast<size_t>(n_rows * c.vocab_size), 0.0f);
  const ParallelLayout& lay = layout();
  const int tp = lay.GroupSize(Group::kTp);
  if (tp == 1) {  // the whole vocabulary: Complete(replicated over tp) already
    LinearForward(lm_head_, a.data(), n_rows, logits->data(), Ctx());
    return Status::Ok();
  }
  // Vocabulary-parallel lm_head: this rank's columns of the logits, gathered where sampled.
  std::vector<float> mine(static_cast<size_t>(n_rows * lm_head_.out_features()));
  LinearForward(lm_head_, a.data(), n_rows, mine.data(), Ctx());
  std::vector<int64_t> shards;
  for (int q = 0; q < tp; ++q) shards.push_back(lay.Vocab(q).size());
  StatedBuffer part = StatedBuffer::F32(ReductionState::ColumnShard(Group::kTp), n_rows,
                                        lm_head_.out_features(), mine.data());
  StatedBuffer all =
      StatedBuffer::F32(ReductionState::ColumnShard(Group::kTp), n_rows, c.vocab_size, logits->data());
  return Transition(lay, &part, ReductionState::Replicated(Group::kTp), "lm_head logits", &all, shards);
}

double DeepseekModel::DecodeWeightBytesPerToken() const {
  double bytes = static_cast<double>(lm_head_.bytes());
  for (const LayerWeights& lw : layers_) {
    const AttentionWeights& at = lw.attn;
    bytes += static_cast<double>(at.q_proj.bytes() + at.q_a_proj.bytes() + at.q_b_proj.bytes() +
                                 at.kv_a_proj.bytes() + at.o_proj.bytes());
    bytes += static_cast<double>(at.k_b.nbytes() + at.v_b.nbytes());  // as stored
    bytes += static_cast<double>(lw.mlp_gate_up.bytes() + lw.mlp_down.bytes());
    if (!lw.moe) continue;
    const MoeWeights& w = lw.moe->weights();
    bytes += static_cast<double>(w.shared_gate_up.bytes() + w.shared_down.bytes() + w.router_packed.bytes());
    double experts = 0;
    for (size_t e = 0; e < w.gate_up.size(); ++e)
      experts += static_cast<double>(w.gate_up[e].bytes() + w.down[e].bytes());
    // A token visits k of the E experts; this rank holds its share of them.
    bytes += experts * static_cast<double>(config_.moe.num_experts_per_tok) /
             static_cast<double>(config_.moe.n_routed_experts);
  }
  return bytes;
}

}  // namespace moerun
