#include "model/decoder_model.h"

#include <cmath>

#include "comm/in_process_comm.h"
#include "core/finite_scan.h"
#include "core/fixed_point.h"
#include "parallel/transition.h"

namespace moerun {

DecoderModel::~DecoderModel() = default;

void DecoderModel::Init(std::unique_ptr<TensorSource> source, ModelConfig config,
                        const ModelLoadOptions& options, ThreadPool* pool, Communicator* world) {
  options_ = options;
  // Deterministic mode needs batch-invariant kernels: one kernel row whatever the row count.
  options_.kernels.deterministic = options_.kernels.deterministic || options.parallel.deterministic;
  pool_ = pool;
  if (world == nullptr) {
    own_world_ = std::move(InProcessWorld::Create(1)[0]);
    world = own_world_.get();
  }
  world_ = world;
  config_ = std::move(config);
  ckpt_ = std::move(source);
}

LayoutDims ModelLayoutDims(const ModelConfig& c, const DownAlignment& align) {
  LayoutDims d = MoeLayoutDims(c.moe, align);
  d.attention_heads = c.num_attention_heads;
  d.v_head_dim = c.v_head_dim > 0 ? c.v_head_dim : c.head_dim;  // o_proj columns per head
  d.vocab = c.vocab_size;
  return d;
}

DownAlignment ModelDownAlignment(const ModelConfig& c, const TensorSource& ckpt,
                                 std::optional<WeightFormat> requested) {
  DownAlignment align;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    if (c.IsMoeLayer(l)) align.Merge(MoeDownAlignment(c.moe, ckpt, c.MoePrefix(l), requested));
  }
  return align;
}

Status DecoderModel::SetUpLayout(int64_t o_head_dim) {
  // Only deterministic mode cuts K-blocks (and reads every layer's format for them).
  const DownAlignment align = options_.parallel.deterministic
                                  ? ModelDownAlignment(config_, *ckpt_, options_.weight_format)
                                  : DownAlignment{};
  ASSIGN_OR_RETURN(context_,
                   RankContext::Create(options_.parallel, ModelLayoutDims(config_, align), *world_, pool_));
  head_begin_ = layout().Heads().begin;
  head_end_ = layout().Heads().end;
  o_head_dim_ = o_head_dim;
  return Status::Ok();
}

Status DecoderModel::LoadEmbeddingsAndHead() {
  const ModelConfig& c = config_;
  const TensorSource& ckpt = *ckpt_;
  ASSIGN_OR_RETURN(embed_, ckpt.Get("model.embed_tokens.weight"));
  ASSIGN_OR_RETURN(final_norm_, LoadVector(ckpt, "model.norm.weight"));
  // Vocab-parallel lm_head: each TP rank holds rows [v0, v1) and the logits are all-gathered.
  ASSIGN_OR_RETURN(Tensor head,
                   ckpt.Get(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"));
  ASSIGN_OR_RETURN(lm_head_,
                   PackAs(head.Rows(layout().Vocab().begin, layout().Vocab().end), options_.weight_format));
  return Status::Ok();
}

Status DecoderModel::LoadLayers(const LoadProgress& progress,
                                const std::function<Status(int64_t)>& load_attention) {
  const ModelConfig& c = config_;
  const TensorSource& ckpt = *ckpt_;
  const ParallelOptions& par = options_.parallel;
  const std::optional<WeightFormat> w = options_.weight_format;
  layers_.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    // What was packed is resident twice (packed + file pages): drop the file pages as we go, so
    // the peak stays near one copy of the model.
    ckpt.ReleaseResidentPages();
    if (progress)
      progress(static_cast<double>(l) / static_cast<double>(c.num_hidden_layers), fmt::format("layer {}", l));
    LayerWeights& lw = layers_[static_cast<size_t>(l)];
    const std::string p = fmt::format("model.layers.{}.", l);
    ASSIGN_OR_RETURN(lw.input_norm, LoadVector(ckpt, p + "input_layernorm.weight"));
    ASSIGN_OR_RETURN(lw.post_norm, LoadVector(ckpt, p + "post_attention_layernorm.weight"));
    RETURN_IF_ERROR(load_attention(l));
    ASSIGN_OR_RETURN(StoredWeight o, GetStoredWeight(ckpt, p + "self_attn.o_proj.weight"));
    // Deterministic mode sums o_proj per head (K-blocks of o_head_dim columns).
    const int64_t d = o_head_dim_;
    ASSIGN_OR_RETURN(lw.o_proj, PackAs(o, w, head_begin_ * d, head_end_ * d, par.deterministic ? d : 0));
    if (c.IsMoeLayer(l)) {
      // One set of MoE expert buffers for the whole rank (the context's), shared by every layer.
      ASSIGN_OR_RETURN(lw.moe,
                       ParallelMoe::Create(c.moe, ckpt, c.MoePrefix(l), context_, w, options_.kernels));
    } else {
      ASSIGN_OR_RETURN(StoredWeight gate, GetStoredWeight(ckpt, p + "mlp.gate_proj.weight"));
      ASSIGN_OR_RETURN(StoredWeight up, GetStoredWeight(ckpt, p + "mlp.up_proj.weight"));
      ASSIGN_OR_RETURN(lw.mlp_gate_up,
                       PackedWeight::PackGateUp(gate, up, ResolveWeightFormat(w, gate.dtype(), gate.cols())));
      ASSIGN_OR_RETURN(lw.mlp_down, LoadPacked(ckpt, p + "mlp.down_proj.weight", w));
    }
  }
  ckpt.ReleaseResidentPages();
  if (progress) progress(1.0, "done");
  return Status::Ok();
}

namespace {

// Σ x[i]² in double over kLanes interleaved lanes (element i into lane i % kLanes), the lanes then
// added in a fixed tree: the same bits on every machine, and a loop the compiler vectorises
// without reassociating anything. One chain of dependent double adds (the plain loop) took
// 2.5 us for a 2048-wide row on AMD Zen 5, twice per layer in decode.
double SumOfSquares(const float* x, int64_t n) {
  constexpr int64_t kLanes = 8;
  double lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) lane[j] += static_cast<double>(x[i + j]) * x[i + j];
  }
  for (int64_t j = 0; i < n; ++i, ++j) lane[j] += static_cast<double>(x[i]) * x[i];
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

}  // namespace

void DecoderModel::RmsNorm(const float* x, const std::vector<float>& w, int64_t rows, int64_t dim, float eps,
                           float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    const double ss = SumOfSquares(xr, dim);
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
    for (int64_t i = 0; i < dim; ++i) y[r * dim + i] = xr[i] * inv * w[static_cast<size_t>(i)];
  }
}

Status DecoderModel::OutputProjection(int64_t layer, const float* o, int64_t t_count, float* out) {
  const LayerWeights& lw = layers_[static_cast<size_t>(layer)];
  const int64_t h = config_.hidden_size, dv = o_head_dim_, nh = head_end_ - head_begin_;
  if (!options_.parallel.deterministic) {
    // Row-parallel o_proj: a partial sum over this rank's heads, all-reduced over TP.
    LinearForward(lw.o_proj, o, t_count, out, Ctx());
    StatedBuffer sum = StatedBuffer::F32(ReductionState::Partial(Group::kTp), t_count, h, out);
    return Transition(layout(), &sum, ReductionState::Replicated(Group::kTp),
                      fmt::format("layer {} o_proj output", layer));
  }
  // Deterministic: every head's contribution (a fixed K-block of o_proj) is summed exactly in
  // fixed point, so the result does not depend on how heads are split over ranks.
  const int64_t k = nh * dv;
  std::vector<Fixed128> acc(static_cast<size_t>(t_count * h), 0);
  std::vector<float> part(static_cast<size_t>(t_count * h));
  const MatmulKernel& kernel = SelectKernel(lw.o_proj.format(), t_count, options_.kernels);
  MatmulJob job{.rows = t_count,
                .x = acts_.Prepare(kernel.acts, o, t_count, k, k, pool_),
                .w = &lw.o_proj,
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
  for (size_t i = 0; i < acc.size(); ++i) out[i] = FromFixedChecked(acc[i]);
  return Status::Ok();
}

Status DecoderModel::MoeLayer(int64_t layer, const float* x, int64_t t_count, float* out) {
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

std::vector<std::vector<uint64_t>> DecoderModel::RoutedTokenCounts() const {
  std::vector<std::vector<uint64_t>> counts(layers_.size());
  for (size_t l = 0; l < layers_.size(); ++l)
    if (layers_[l].moe) counts[l] = layers_[l].moe->RoutedTokenCounts();
  return counts;
}

namespace {

// A layer boundary (the residual stream after a layer, or the logits): the first NaN/Inf stops
// the forward pass with an error naming the boundary and the token's position in its sequence.
// `picked`: the batch rows x holds (empty: all of them, in order). Every rank of a replica holds
// the same rows here, so all of them stop at the same boundary.
Status CheckBoundary(std::string_view what, const float* x, int64_t n_rows, int64_t cols,
                     const std::vector<RowPlace>& rows, const std::vector<int64_t>& picked) {
  const std::optional<NonFiniteAt> bad = FindNonFinite(x, n_rows, cols);
  if (!bad) return Status::Ok();
  const int64_t row = picked.empty() ? bad->row : picked[static_cast<size_t>(bad->row)];
  return InvalidArgument(
      "{}: {} at position {} (batch row {}, column {}); a weight or an activation is not finite "
      "(--check-tensors scans the weights at load)",
      what, NonFiniteName(bad->value), rows[static_cast<size_t>(row)].pos, row, bad->col);
}

}  // namespace

Status DecoderModel::ForwardBatch(std::span<const SequenceChunk> seqs, bool all_logits,
                                  std::vector<float>* logits) {
  // The log is emptied every pass (a server without --stats must not keep every record).
  CollectiveLog* log = world_->log();
  if (log != nullptr) (void)log->Take();  // e.g. the previous step's broadcast: not this pass's
  const Status s = RunBatch(seqs, all_logits, logits);
  if (log == nullptr) return s;
  std::vector<CollectiveRecord> records = log->Take();
  if (collective_sink_ && s.ok()) collective_sink_(records);
  return s;
}

Status DecoderModel::RunBatch(std::span<const SequenceChunk> seqs, bool all_logits,
                              std::vector<float>* logits) {
  const ModelConfig& c = config_;
  const int64_t h = c.hidden_size;
  // Rows of the batch: every token of every sequence, in order, each with its cache and position.
  std::vector<RowPlace> rows;
  std::vector<int32_t> tokens;
  std::vector<int64_t> last_rows;  // the last row of each sequence with tokens
  for (const SequenceChunk& sc : seqs) {
    if (sc.cache->kind() != cache_kind()) {
      return InvalidArgument("a {} cache was given to a {} model, which needs a {} cache",
                             CacheKindName(sc.cache->kind()), c.model_type, CacheKindName(cache_kind()));
    }
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
    sc.cache->CommitRows(start, start + n);  // the rows this pass writes, committed ahead
  }
  const int64_t t_count = static_cast<int64_t>(rows.size());
  if (t_count == 0 && world_->size() == 1) {  // nothing to do and no peers to meet
    logits->clear();
    return Status::Ok();
  }
  // Embeddings.
  std::vector<float> hs(static_cast<size_t>(t_count * h)), a(hs.size()), out(hs.size());
  std::vector<float> o(static_cast<size_t>(t_count * local_heads() * o_head_dim_));
  const size_t row_bytes = DTypeRowBytes(embed_.dtype(), h);  // GGUF files may hold Q4_K etc.
  for (int64_t t = 0; t < t_count; ++t) {
    ConvertToF32(embed_.dtype(), embed_.data<char>() + static_cast<size_t>(tokens[t]) * row_bytes,
                 hs.data() + t * h, static_cast<size_t>(h));
  }
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights& lw = layers_[static_cast<size_t>(l)];
    RmsNorm(hs.data(), lw.input_norm, t_count, h, static_cast<float>(c.rms_norm_eps), a.data());
    RETURN_IF_ERROR(Attention(l, a.data(), t_count, rows.data(), o.data()));
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
    RETURN_IF_ERROR(CheckBoundary(fmt::format("layer {} output", l), hs.data(), t_count, h, rows, {}));
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
    return CheckBoundary("logits", logits->data(), n_rows, c.vocab_size, rows, out_rows);
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
  RETURN_IF_ERROR(
      Transition(lay, &part, ReductionState::Replicated(Group::kTp), "lm_head logits", &all, shards));
  return CheckBoundary("logits", logits->data(), n_rows, c.vocab_size, rows, out_rows);
}

double DecoderModel::DecodeWeightBytesPerToken() const {
  double bytes = static_cast<double>(lm_head_.bytes());
  for (size_t l = 0; l < layers_.size(); ++l) {
    const LayerWeights& lw = layers_[l];
    bytes += AttentionWeightBytes(static_cast<int64_t>(l)) + static_cast<double>(lw.o_proj.bytes());
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
