#include "moe/parallel_moe.h"

#include <algorithm>
#include <cstring>

namespace moerun {
namespace {

// The three dispatch strategies. Each declares the state of the routed output it returns for the
// layout it is bound to; the declaration is computed from the bound layout, never cached earlier.
class NoDispatch final : public Dispatcher {
 public:
  explicit NoDispatch(const ParallelOptions& o) : tp_(o.tp) {}
  Kind kind() const override { return Kind::kNone; }
  const char* name() const override { return "none"; }
  // Tokens are replicated over tp; each rank sums only its experts (or its slice of each).
  ReductionState RoutedState() const override {
    return tp_ > 1 ? ReductionState::Partial(Group::kTp) : ReductionState::Replicated(Group::kTp);
  }

 private:
  int tp_;
};

class AllGatherDispatch final : public Dispatcher {
 public:
  explicit AllGatherDispatch(const ParallelOptions& o) : tp_(o.tp), sp_(o.sp) {}
  Kind kind() const override { return Kind::kAllGather; }
  const char* name() const override { return "allgather"; }
  // Reduce-scatter over the token owners completes the sum over them: under SP the owners are all
  // ranks (Complete token-shard); otherwise the DP group, leaving a Partial over tp.
  ReductionState RoutedState() const override {
    if (sp_) return ReductionState::TokenShard(Group::kTp);
    return tp_ > 1 ? ReductionState::Partial(Group::kTp) : ReductionState::Replicated(Group::kTp);
  }

 private:
  int tp_;
  bool sp_;
};

class AllToAllDispatch final : public Dispatcher {
 public:
  explicit AllToAllDispatch(const ParallelOptions& o) : sp_(o.sp) {}
  Kind kind() const override { return Kind::kAllToAll; }
  const char* name() const override { return "alltoall"; }
  // The combine returns finished rows to their source: complete for the source's tokens, which
  // are the TP group's shared tokens (replicated) or, under SP, this rank's shard.
  ReductionState RoutedState() const override {
    return sp_ ? ReductionState::TokenShard(Group::kTp) : ReductionState::Replicated(Group::kTp);
  }

 private:
  bool sp_;
};

bool TokensReplicatedOverWorld(const ParallelOptions& o) { return o.dp == 1 && !o.sp; }

}  // namespace

LayoutDims MoeLayoutDims(const MoeConfig& c) {
  return {.routed_experts = c.n_routed_experts,
          .moe_intermediate = c.moe_intermediate_size,
          .shared_intermediate = c.shared_intermediate_size};
}

ParallelMoe::~ParallelMoe() = default;

StatusOr<std::unique_ptr<ParallelMoe>> ParallelMoe::Create(const MoeConfig& config, const TensorSource& ckpt,
                                                           const std::string& prefix,
                                                           const ParallelOptions& options,
                                                           Communicator& world,
                                                           std::optional<WeightFormat> weight_format,
                                                           ThreadPool* pool, KernelPolicy kernels) {
  ASSIGN_OR_RETURN(std::shared_ptr<RankContext> context,
                   RankContext::Create(options, MoeLayoutDims(config), world, pool));
  return Create(config, ckpt, prefix, std::move(context), weight_format, std::move(kernels));
}

StatusOr<std::unique_ptr<ParallelMoe>> ParallelMoe::Create(const MoeConfig& config, const TensorSource& ckpt,
                                                           const std::string& prefix,
                                                           std::shared_ptr<RankContext> context,
                                                           std::optional<WeightFormat> weight_format,
                                                           KernelPolicy kernels) {
  const ParallelLayout& layout = context->layout();
  const LayoutDims& dims = layout.dims();
  if (dims.routed_experts != config.n_routed_experts ||
      dims.moe_intermediate != config.moe_intermediate_size ||
      dims.shared_intermediate != config.shared_intermediate_size) {
    return Internal(
        "{}: the layout was validated for {} experts of width {} (shared {}), the block has {} of {} ({})",
        prefix, dims.routed_experts, dims.moe_intermediate, dims.shared_intermediate, config.n_routed_experts,
        config.moe_intermediate_size, config.shared_intermediate_size);
  }
  std::unique_ptr<ParallelMoe> m(new ParallelMoe());
  m->config_ = config;
  m->options_ = layout.options();
  m->pool_ = context->pool();
  MoeShard shard;
  const Range experts = layout.Experts(), slice = layout.Intermediate(), shared = layout.SharedSlice();
  if (m->options_.ep) {
    shard.expert_begin = experts.begin;
    shard.expert_end = experts.end;
  } else {
    shard.i_begin = slice.begin;
    shard.i_end = slice.end;
  }
  if (m->options_.SharedSharded()) {
    shard.s_begin = shared.begin;
    shard.s_end = shared.end;
  }
  m->expert_begin_ = experts.begin;
  m->expert_end_ = experts.end;
  ASSIGN_OR_RETURN(m->weights_, MoeWeights::Load(config, ckpt, prefix, weight_format, m->pool_, shard));
  m->context_ = std::move(context);
  if (m->options_.deterministic) RETURN_IF_ERROR(m->CheckDeterministicBlocks(prefix));
  // Deterministic mode needs batch-invariant kernels: one row whatever the row count.
  kernels.deterministic = kernels.deterministic || m->options_.deterministic;
  m->scratch_ =
      &m->context_->Scratch<MoeRankScratch>([&] { return std::make_unique<MoeRankScratch>(kernels); });
  if (m->scratch_->compute.policy().deterministic != kernels.deterministic) {
    return Internal("{}: the shared MoE scratch was made for another kernel policy", prefix);
  }
  RETURN_IF_ERROR(m->Bind());
  return m;
}

std::unique_ptr<Dispatcher> MakeDispatcher(const ParallelOptions& o) {
  if (TokensReplicatedOverWorld(o)) return std::make_unique<NoDispatch>(o);
  if (o.dispatch == DispatchKind::kAllToAll) return std::make_unique<AllToAllDispatch>(o);
  return std::make_unique<AllGatherDispatch>(o);
}

ReductionState SharedStateFor(const ParallelOptions& o) {
  if (o.SharedSharded()) return ReductionState::Partial(Group::kTp);
  return o.sp ? ReductionState::TokenShard(Group::kTp) : ReductionState::Replicated(Group::kTp);
}

ReductionState RequestedStateFor(const ParallelOptions& o) {
  return o.sp ? ReductionState::TokenShard(Group::kTp) : ReductionState::Replicated(Group::kTp);
}

Status ParallelMoe::Bind() {
  dispatcher_ = MakeDispatcher(options_);
  return Status::Ok();
}

void ParallelMoe::UnbindForTest() { dispatcher_.reset(); }

StatusOr<ReductionState> ParallelMoe::RoutedOutputState() const {
  if (!dispatcher_) {
    return Internal(
        "routed output state read before a dispatch kernel is bound (the declaration belongs to the "
        "bound kernel)");
  }
  return dispatcher_->RoutedState();
}

ReductionState ParallelMoe::SharedOutputState() const {
  if (shared_state_override_) return *shared_state_override_;
  return SharedStateFor(options_);
}

ReductionState ParallelMoe::RequestedState() const { return RequestedStateFor(options_); }

std::pair<int64_t, int64_t> ParallelMoe::TokenRange(int64_t n) const {
  const Range r = layout().TokenRange(n);
  return {r.begin, r.end};
}

bool ParallelMoe::WritesOutput() const { return options_.sp || layout().tp_rank() == 0; }

Status ParallelMoe::CheckDeterministicBlocks(const std::string& prefix) const {
  auto check = [&](const PackedWeight& down, int64_t nb, const char* what) -> Status {
    if (down.n_blocks() == 0) return Status::Ok();
    const int64_t block = down.in_features() / nb, align = Traits(down.format()).k_alignment;
    if (block % align == 0) return Status::Ok();
    return InvalidArgument(
        "{}: --deterministic cuts the {}-wide {} down projection into {} K-blocks of {} columns, not a "
        "multiple of {}'s {}-column blocks; use --weight-format bf16 (or f32/f16) with --deterministic",
        prefix, down.in_features(), what, nb, block, WeightFormatName(down.format()), align);
  };
  for (int64_t e = expert_begin_; e < expert_end_; ++e)
    RETURN_IF_ERROR(check(weights_.down[static_cast<size_t>(e)], layout().ExpertBlocks(), "expert"));
  return check(weights_.shared_down, layout().SharedBlocks(), "shared expert");
}

int64_t ParallelMoe::AccumulateRowsPerTask() const { return options_.deterministic ? 1 : 16; }

void ParallelMoe::Accumulate(MoePart* part, int64_t part_row, std::span<const SlotOutput> slots,
                             bool first) const {
  const int64_t h = part->cols;
  if (options_.deterministic) {
    if (first) std::fill_n(part->fixed.data() + part_row * h, h, Fixed128{0});
    // Every (slot, K-block) term of the row in one exact accumulation.
    constexpr size_t kInline = 128;
    size_t n_terms = 0;
    for (const SlotOutput& s : slots) n_terms += static_cast<size_t>(s.nb);
    FixedTermRow inline_terms[kInline];
    std::vector<FixedTermRow> heap_terms;
    FixedTermRow* terms = inline_terms;
    if (n_terms > kInline) {
      heap_terms.resize(n_terms);
      terms = heap_terms.data();
    }
    size_t i = 0;
    for (const SlotOutput& s : slots)
      for (int64_t b = 0; b < s.nb; ++b) terms[i++] = {s.y + b * h, s.weight};
    AccumulateFixed(part->fixed.data() + part_row * h, h, {terms, n_terms});
  } else {
    float* dst = part->f32.data() + part_row * h;
    for (const SlotOutput& s : slots)
      for (int64_t c = 0; c < h; ++c) dst[c] += s.weight * s.y[c];
  }
}

void ParallelMoe::AddParts(MoePart* dst, const MoePart& src) const {
  for (size_t i = 0; i < dst->f32.size(); ++i) dst->f32[i] += src.f32[i];
  if (dst->fixed.empty()) return;
  const int64_t h = dst->cols;
  ParallelForRows(pool_, dst->rows, [&](int64_t t) {
    for (int64_t c = t * h; c < (t + 1) * h; ++c) dst->fixed[c] += src.fixed[c];
  });
}

MoePart ParallelMoe::MakePart(ReductionState state, int64_t rows, int64_t cols, bool zeroed) {
  MoePart p;
  p.state = std::move(state);
  p.rows = rows;
  p.cols = cols;
  if (options_.deterministic) {
    // Reuse a released buffer: fresh multi-megabyte vectors cost a page fault per 4 KiB.
    if (!scratch_->spare_fixed.empty()) {
      p.fixed = std::move(scratch_->spare_fixed.back());
      scratch_->spare_fixed.pop_back();
    }
    if (zeroed) {
      p.fixed.assign(static_cast<size_t>(rows * cols), 0);
    } else {  // every row is overwritten by Accumulate(..., first = true) on the pool
      p.fixed.resize(static_cast<size_t>(rows * cols));
    }
  } else {
    p.f32.assign(static_cast<size_t>(rows * cols), 0.0f);
  }
  return p;
}

void ParallelMoe::ReleasePart(MoePart* part) {
  if (part->fixed.capacity() > 0 && scratch_->spare_fixed.size() < 4)
    scratch_->spare_fixed.push_back(std::move(part->fixed));
  part->fixed = {};
}

namespace {

// One row of a token as the all-gather dispatch ships it: hidden state, expert ids, weights.
struct PackedTokens {
  std::vector<float> x;      // [n, H]
  std::vector<int32_t> ids;  // [n, k]
  std::vector<float> wts;    // [n, k]
  std::vector<int64_t> rows_of_rank;
};

// Gathers every owner's tokens of `owners` (x, ids, weights packed per row) in two collectives:
// the row counts, then the rows (Complete(token-shard of owners) -> Complete(replicated over
// owners), through the transition executor).
Status GatherTokens(const ParallelLayout& layout, Group owners, const float* x, const Routing& r, int64_t n,
                    int64_t h, const std::string& layer_name, PackedTokens* out) {
  const int64_t k = r.k, row_floats = h + 2 * k;
  std::vector<uint64_t> counts{static_cast<uint64_t>(n)};
  if (layout.GroupSize(owners) > 1) {
    CollectiveLabel label(layout.log(), layer_name + " dispatch row counts");
    ASSIGN_OR_RETURN(counts, layout.Comm(owners).AllGatherValue(static_cast<uint64_t>(n)));
  }
  std::vector<float> send(static_cast<size_t>(n * row_floats));
  for (int64_t t = 0; t < n; ++t) {
    float* row = send.data() + t * row_floats;
    std::memcpy(row, x + t * h, static_cast<size_t>(h) * sizeof(float));
    std::memcpy(row + h, r.ids.data() + t * k, static_cast<size_t>(k) * sizeof(int32_t));
    std::memcpy(row + h + k, r.weights.data() + t * k, static_cast<size_t>(k) * sizeof(float));
  }
  std::vector<int64_t> shards;
  int64_t total = 0;
  for (uint64_t c : counts) {
    shards.push_back(static_cast<int64_t>(c));
    total += static_cast<int64_t>(c);
  }
  std::vector<float> all(static_cast<size_t>(total * row_floats));
  StatedBuffer mine = StatedBuffer::F32(ReductionState::TokenShard(owners), n, row_floats, send.data());
  StatedBuffer gathered =
      StatedBuffer::F32(ReductionState::TokenShard(owners), total, row_floats, all.data());
  RETURN_IF_ERROR(Transition(layout, &mine, ReductionState::Replicated(owners),
                             layer_name + " dispatch token rows", &gathered, shards));
  out->rows_of_rank.assign(shards.begin(), shards.end());
  out->x.resize(static_cast<size_t>(total * h));
  out->ids.resize(static_cast<size_t>(total * k));
  out->wts.resize(static_cast<size_t>(total * k));
  for (int64_t t = 0; t < total; ++t) {
    const float* row = all.data() + t * row_floats;
    std::memcpy(out->x.data() + t * h, row, static_cast<size_t>(h) * sizeof(float));
    std::memcpy(out->ids.data() + t * k, row + h, static_cast<size_t>(k) * sizeof(int32_t));
    std::memcpy(out->wts.data() + t * k, row + h + k, static_cast<size_t>(k) * sizeof(float));
  }
  return Status::Ok();
}

}  // namespace

StatusOr<MoePart> ParallelMoe::RoutedPart(const Tensor& x_own, const Routing& routing, const SharedRows* fold,
                                          const std::string& layer_name) {
  ASSIGN_OR_RETURN(ReductionState state, RoutedOutputState());
  const int64_t h = config_.hidden_size, k = config_.num_experts_per_tok, t_own = x_own.dim(0);
  const bool det = options_.deterministic;
  const ParallelLayout& lay = layout();
  const int64_t nb = lay.ExpertBlocks();
  std::vector<ExpertWeightsRef> refs;
  for (int64_t e = expert_begin_; e < expert_end_; ++e)
    refs.push_back({&weights_.gate_up[e], &weights_.down[e]});
  auto local = [&](int32_t id) -> int32_t {
    return id >= expert_begin_ && id < expert_end_ ? static_cast<int32_t>(id - expert_begin_) : -1;
  };
  using Kind = Dispatcher::Kind;
  const Kind kind = dispatcher_->kind();

  if (kind == Kind::kNone || kind == Kind::kAllGather) {
    // Tokens this rank computes for: its own (none) or all token owners' (allgather).
    const float* x_rows = x_own.data<float>();
    const int32_t* ids = routing.ids.data();
    const float* wts = routing.weights.data();
    int64_t t_all = t_own;
    PackedTokens gathered;
    // Token owners: every rank under SP (ep), else the ranks with this TP rank (dp).
    const Group owners = options_.sp ? Group::kEp : Group::kDp;
    std::vector<int> source_of_token;  // world rank that owns each gathered token (probe only)
    if (kind == Kind::kAllGather) {
      RETURN_IF_ERROR(
          GatherTokens(lay, owners, x_own.data<float>(), routing, t_own, h, layer_name, &gathered));
      t_all = static_cast<int64_t>(gathered.x.size()) / h;
      x_rows = gathered.x.data();
      ids = gathered.ids.data();
      wts = gathered.wts.data();
      if (probe_) {
        for (size_t g = 0; g < gathered.rows_of_rank.size(); ++g) {
          const int world_rank =
              options_.sp ? static_cast<int>(g) : static_cast<int>(g) * options_.tp + lay.tp_rank();
          source_of_token.insert(source_of_token.end(), static_cast<size_t>(gathered.rows_of_rank[g]),
                                 world_rank);
        }
      }
    } else if (probe_) {
      source_of_token.assign(static_cast<size_t>(t_own), lay.world_rank());
    }
    const int64_t n = t_all * k;
    std::vector<int64_t> token(static_cast<size_t>(n));
    std::vector<int32_t> expert(static_cast<size_t>(n));
    for (int64_t r = 0; r < n; ++r) {
      token[r] = r / k;
      expert[r] = local(ids[r]);
      if (probe_ && expert[r] >= 0)
        probe_(source_of_token[static_cast<size_t>(r / k)], x_rows + (r / k) * h, ids[r]);
    }
    float* y = scratch_->y.Get(static_cast<size_t>(n * nb * h));
    // Deterministic mode reads the K-block partials where the experts wrote them (expert order):
    // no zero fill or scatter of the nb-times larger output.
    scratch_->compute.Run({.x = x_rows,
                           .hidden = h,
                           .n_rows = n,
                           .token = token.data(),
                           .expert = expert.data(),
                           .k_blocks = nb,
                           .expert_order = det},
                          refs, pool_, y);
    std::vector<int64_t> pos_of(static_cast<size_t>(n));  // row -> output position
    if (det) {
      const std::span<const int64_t> rows = scratch_->compute.RowsInExpertOrder();
      for (size_t p = 0; p < rows.size(); ++p) pos_of[static_cast<size_t>(rows[p])] = static_cast<int64_t>(p);
    } else {
      for (int64_t r = 0; r < n; ++r) pos_of[r] = r;
    }
    MoePart all = MakePart(state, t_all, h, /*zeroed=*/false);
    ParallelForRows(
        pool_, t_all,
        [&](int64_t t) {
          std::vector<SlotOutput> slots;
          for (int64_t j = 0; j < k; ++j) {
            if (expert[t * k + j] >= 0) slots.push_back({y + pos_of[t * k + j] * nb * h, wts[t * k + j], nb});
          }
          if (fold != nullptr) {  // no dispatch: row t is own token t
            slots.push_back(
                {fold->y + t * fold->nb * h, SharedGateValue(weights_, x_rows + t * h, h), fold->nb});
          }
          Accumulate(&all, t, slots, /*first=*/true);
        },
        AccumulateRowsPerTask());
    if (kind == Kind::kNone) return all;
    // Reduce-scatter the partial sums back to their owners: Partial over the owners -> their token
    // shards. What remains (a Partial over tp, or complete) is the dispatcher's declaration.
    MoePart part = MakePart(state, t_own, h);
    all.state = ReductionState::Partial(owners);
    StatedBuffer sum = all.View(det), mine = part.View(det);
    RETURN_IF_ERROR(Transition(lay, &sum, ReductionState::TokenShard(owners), layer_name + " routed combine",
                               &mine, gathered.rows_of_rank));
    part.state = state;
    ReleasePart(&all);
    return part;
  }

  // All-to-all: send each (token, slot) row to the rank holding its expert, compute, send back.
  Communicator& ep = lay.Comm(Group::kEp);
  const int64_t w = ep.size(), per_rank = config_.n_routed_experts / w;
  std::vector<std::vector<int64_t>> rows_to(static_cast<size_t>(w));  // (t * k + j) per destination
  for (int64_t r = 0; r < t_own * k; ++r)
    rows_to[static_cast<size_t>(routing.ids[r] / per_rank)].push_back(r);
  std::vector<uint64_t> send_n(static_cast<size_t>(w)), recv_n(static_cast<size_t>(w));
  for (int64_t d = 0; d < w; ++d) send_n[d] = rows_to[d].size();
  // Token movement, not a reduction: labelled for --stats, the states are those of the rows.
  std::optional<CollectiveLabel> label;
  label.emplace(lay.log(), layer_name + " alltoall dispatch", "rows at their token's rank",
                "rows at their expert's rank");
  std::vector<size_t> count_bytes(static_cast<size_t>(w), sizeof(uint64_t));
  RETURN_IF_ERROR(ep.AllToAll(send_n.data(), count_bytes, recv_n.data(), count_bytes));
  int64_t n_send = 0, n_recv = 0;
  for (int64_t d = 0; d < w; ++d) {
    n_send += static_cast<int64_t>(send_n[d]);
    n_recv += static_cast<int64_t>(recv_n[d]);
  }
  std::vector<float> send_x(static_cast<size_t>(n_send * h)), recv_x(static_cast<size_t>(n_recv * h));
  std::vector<int32_t> send_id(static_cast<size_t>(n_send)), recv_id(static_cast<size_t>(n_recv));
  std::vector<int64_t> send_row(static_cast<size_t>(n_send));  // slot row of each sent row
  int64_t pos = 0;
  for (int64_t d = 0; d < w; ++d) {
    for (int64_t r : rows_to[d]) {
      std::memcpy(&send_x[pos * h], x_own.data<float>() + (r / k) * h,
                  static_cast<size_t>(h) * sizeof(float));
      send_id[pos] = routing.ids[r];
      send_row[pos] = r;
      ++pos;
    }
  }
  auto bytes_of = [&](const std::vector<uint64_t>& n, size_t unit) {
    std::vector<size_t> b(n.size());
    for (size_t i = 0; i < n.size(); ++i) b[i] = n[i] * unit;
    return b;
  };
  RETURN_IF_ERROR(ep.AllToAll(send_x.data(), bytes_of(send_n, h * sizeof(float)), recv_x.data(),
                              bytes_of(recv_n, h * sizeof(float))));
  RETURN_IF_ERROR(ep.AllToAll(send_id.data(), bytes_of(send_n, sizeof(int32_t)), recv_id.data(),
                              bytes_of(recv_n, sizeof(int32_t))));
  std::vector<int64_t> token(static_cast<size_t>(n_recv));
  std::vector<int32_t> expert(static_cast<size_t>(n_recv));
  int src = 0;
  int64_t src_end = w > 0 ? static_cast<int64_t>(recv_n[0]) : 0;
  for (int64_t r = 0; r < n_recv; ++r) {
    while (r >= src_end) src_end += static_cast<int64_t>(recv_n[static_cast<size_t>(++src)]);
    token[r] = r;
    expert[r] = local(recv_id[r]);
    if (probe_) probe_(src, recv_x.data() + r * h, recv_id[r]);
    if (expert[r] < 0)
      return Internal("all_to_all delivered expert {} to rank {}, which does not hold it", recv_id[r],
                      ep.rank());
  }
  float* y = scratch_->y.Get(static_cast<size_t>(std::max<int64_t>(n_recv, n_send) * nb * h * 2));
  float* y_recv = y;
  float* y_back = y + n_recv * nb * h;
  scratch_->compute.Run({.x = recv_x.data(),
                         .hidden = h,
                         .n_rows = n_recv,
                         .token = token.data(),
                         .expert = expert.data(),
                         .k_blocks = nb},
                        refs, pool_, y_recv);
  label.reset();
  label.emplace(lay.log(), layer_name + " alltoall combine", "expert outputs at their expert's rank",
                "expert outputs at their token's rank");
  RETURN_IF_ERROR(ep.AllToAll(y_recv, bytes_of(recv_n, nb * h * sizeof(float)), y_back,
                              bytes_of(send_n, nb * h * sizeof(float))));
  label.reset();
  // Combine at the source in slot order: row r = t * k + j came back at position pos_of[r].
  MoePart part = MakePart(state, t_own, h, /*zeroed=*/false);
  std::vector<int64_t> pos_of(static_cast<size_t>(t_own * k));
  for (int64_t p = 0; p < n_send; ++p) pos_of[send_row[p]] = p;
  ParallelForRows(
      pool_, t_own,
      [&](int64_t t) {
        std::vector<SlotOutput> slots(static_cast<size_t>(k));
        for (int64_t j = 0; j < k; ++j)
          slots[static_cast<size_t>(j)] = {y_back + pos_of[t * k + j] * nb * h, routing.weights[t * k + j],
                                           nb};
        Accumulate(&part, t, slots, /*first=*/true);
      },
      AccumulateRowsPerTask());
  return part;
}

ParallelMoe::SharedRows ParallelMoe::ComputeShared(const Tensor& x_own) {
  const int64_t h = config_.hidden_size, t_own = x_own.dim(0);
  const int64_t nb = layout().SharedBlocks();
  std::vector<int64_t> token(static_cast<size_t>(t_own));
  std::vector<int32_t> expert(static_cast<size_t>(t_own), 0);
  for (int64_t t = 0; t < t_own; ++t) token[t] = t;
  const ExpertWeightsRef ref{&weights_.shared_gate_up, &weights_.shared_down};
  float* y = scratch_->y_shared.Get(static_cast<size_t>(t_own * nb * h));
  scratch_->compute.Run({.x = x_own.data<float>(),
                         .hidden = h,
                         .n_rows = t_own,
                         .token = token.data(),
                         .expert = expert.data(),
                         .k_blocks = nb,
                         .expert_order = options_.deterministic},  // one expert: expert order is row order
                        std::span<const ExpertWeightsRef>(&ref, 1), pool_, y);
  return {y, nb};
}

StatusOr<MoePart> ParallelMoe::SharedPart(const Tensor& x_own) {
  const int64_t h = config_.hidden_size, t_own = x_own.dim(0);
  MoePart part = MakePart(SharedOutputState(), t_own, h);
  if (config_.shared_intermediate_size == 0 || t_own == 0) return part;
  const SharedRows rows = ComputeShared(x_own);
  ParallelForRows(pool_, t_own, [&](int64_t t) {
    const float g = SharedGateValue(weights_, x_own.data<float>() + t * h, h);
    const SlotOutput slot{rows.y + t * rows.nb * h, g, rows.nb};
    Accumulate(&part, t, {&slot, 1});
  });
  return part;
}

Status ParallelMoe::Reduce(MoePart* part, const ReductionState& target, const std::string& what) {
  StatedBuffer view = part->View(options_.deterministic);
  RETURN_IF_ERROR(Transition(layout(), &view, target, what));
  part->state = view.state;
  return Status::Ok();
}

StatusOr<Tensor> ParallelMoe::Forward(const Tensor& x_own, int layer, Routing* routing_out) {
  const int64_t h = config_.hidden_size, e = config_.n_routed_experts, t_own = x_own.dim(0);
  if (x_own.rank() != 2 || x_own.dim(1) != h || x_own.dtype() != DType::kF32) {
    return InvalidArgument("MoE input must be F32 [n_tokens, {}], got {}", h, ShapeToString(x_own.shape()));
  }
  const std::string layer_name = fmt::format("layer {}", layer);
  // Plan first (fails before any compute if the declarations cannot be reconciled).
  ASSIGN_OR_RETURN(ReductionState routed_state, RoutedOutputState());
  const ReductionState shared_state = SharedOutputState();
  const ReductionState want = RequestedState();
  const bool has_shared = config_.shared_intermediate_size > 0;
  const bool fuse = !has_shared || routed_state == shared_state;
  const std::string sum_name = layer_name + (has_shared ? " routed+shared output" : " routed output");
  if (fuse) {
    RETURN_IF_ERROR(PlanTransition(routed_state, want, sum_name).status());
  } else {
    RETURN_IF_ERROR(PlanTransition(routed_state, want, layer_name + " routed output").status());
    RETURN_IF_ERROR(PlanTransition(shared_state, want, layer_name + " shared output").status());
  }

  // Route this rank's tokens.
  std::vector<float> logits(static_cast<size_t>(t_own * e));
  RunMatmul(MatmulJob{.rows = t_own,
                      .x = {.format = ActFormat::kF32, .f32 = x_own.data<float>(), .ld = h},
                      .w = &weights_.router_packed,
                      .kernel = &SelectKernel(WeightFormat::kF32, t_own, scratch_->compute.policy()),
                      .y = logits.data(),
                      .ldy = e},
            pool_);
  Routing routing = RouteTokens(config_, logits, t_own, weights_.score_bias);

  // Deterministic mode without dispatch sums the shared experts' terms into the routed rows
  // (exact integer sums: the same bits as adding a separate shared part, one pass fewer).
  const bool fold_shared = options_.deterministic && fuse && has_shared && t_own > 0 &&
                           !options_.fault_reduce_shared && dispatcher_->kind() == Dispatcher::Kind::kNone;
  SharedRows shared_rows;
  if (fold_shared) shared_rows = ComputeShared(x_own);
  ASSIGN_OR_RETURN(MoePart routed,
                   RoutedPart(x_own, routing, fold_shared ? &shared_rows : nullptr, layer_name));
  MoePart shared;
  if (fold_shared) {  // already inside `routed`; an empty part with its declared state
    shared.state = SharedOutputState();
    shared.rows = t_own;
    shared.cols = h;
  } else {
    ASSIGN_OR_RETURN(shared, SharedPart(x_own));
  }
  if (options_.fault_reduce_shared && has_shared) {
    // Injected fault: all-reduce the shared output once more (vLLM #40560); the executor refuses it
    // unless its state is Partial (or the state checks are disabled).
    StatedBuffer view = shared.View(options_.deterministic);
    RETURN_IF_ERROR(AllReduceOrRefuse(layout(), &view, layer_name + " shared output (injected fault)"));
    shared.state = view.state;
  }
  MoePart* result = &routed;
  if (fuse) {
    if (has_shared) {  // no shared experts: nothing to add, whatever its (empty) declaration
      RETURN_IF_ERROR(CheckAddable(routed.state, shared.state, layer_name));
      if (!fold_shared) AddParts(&routed, shared);
    }
    RETURN_IF_ERROR(Reduce(&routed, want, sum_name));
  } else {
    RETURN_IF_ERROR(Reduce(&routed, want, layer_name + " routed output"));
    RETURN_IF_ERROR(Reduce(&shared, want, layer_name + " shared output"));
    RETURN_IF_ERROR(CheckAddable(routed.state, shared.state, layer_name));
    AddParts(&routed, shared);
  }
  if (reduce_again_) {
    StatedBuffer view = result->View(options_.deterministic);
    RETURN_IF_ERROR(AllReduceOrRefuse(layout(), &view, layer_name + " output (fault injection)"));
    result->state = view.state;
  }
  if (result->state != want) {
    return Internal("{}: output ended as {}, caller needs {}", layer_name, result->state.ToString(),
                    want.ToString());
  }
  ASSIGN_OR_RETURN(Tensor out, Tensor::Zeros(DType::kF32, {t_own, h}));
  float* o = out.data<float>();
  if (options_.deterministic) {
    const Fixed128* fixed = result->fixed.data();
    ParallelForRows(pool_, t_own, [&](int64_t t) {
      for (int64_t c = t * h; c < (t + 1) * h; ++c) o[c] = FromFixed(fixed[c]);
    });
  } else {
    std::copy(result->f32.begin(), result->f32.end(), o);
  }
  ReleasePart(&routed);
  ReleasePart(&shared);
  if (routing_out) *routing_out = std::move(routing);
  return out;
}

}  // namespace moerun
