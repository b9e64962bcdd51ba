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
    return tp_ > 1 ? ReductionState::Partial("tp") : ReductionState::Replicated("tp");
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
    if (sp_) return ReductionState::TokenShard("tp");
    return tp_ > 1 ? ReductionState::Partial("tp") : ReductionState::Replicated("tp");
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
    return sp_ ? ReductionState::TokenShard("tp") : ReductionState::Replicated("tp");
  }

 private:
  bool sp_;
};

bool TokensReplicatedOverWorld(const ParallelOptions& o) { return o.dp == 1 && !o.sp; }

}  // namespace

const char* DispatchName(DispatchKind d) { return d == DispatchKind::kAllGather ? "allgather" : "alltoall"; }

Status ParallelOptions::Validate(const MoeConfig& c, int world_size) const {
  if (tp < 1) return InvalidArgument("--tp {} must be >= 1", tp);
  if (dp < 1) return InvalidArgument("--dp {} must be >= 1", dp);
  if (world_size != tp * dp) {
    return InvalidArgument("world size {} != --tp {} x --dp {} (start {} ranks)", world_size, tp, dp,
                           tp * dp);
  }
  if (sp && tp < 2) return InvalidArgument("--sp needs --tp > 1 (got --tp {})", tp);
  if (sp && !ep)
    return InvalidArgument("--sp needs --ep (sequence-parallel MoE dispatches tokens to expert ranks)");
  if (dispatch == DispatchKind::kAllToAll && !ep) {
    return InvalidArgument(
        "--dispatch alltoall needs --ep (without it every rank holds a slice of every expert)");
  }
  const int64_t w = world(), e = c.n_routed_experts, i = c.moe_intermediate_size,
                s = c.shared_intermediate_size;
  if (ep && e % w != 0) return InvalidArgument("--ep: {} ranks do not divide {} routed experts", w, e);
  if (!ep && i % w != 0) {
    return InvalidArgument("--tp {} x --dp {} = {} ranks do not divide moe_intermediate_size {}", tp, dp, w,
                           i);
  }
  if (SharedSharded() && s % tp != 0) {
    return InvalidArgument("--tp {} does not divide the shared expert width {} (use --shared-replicated)", tp,
                           s);
  }
  if (deterministic) {
    constexpr int b = kDeterministicBlocks;
    if (!ep && b % w != 0) {
      return InvalidArgument("--deterministic with sharded experts needs tp x dp to divide {}, got {}", b, w);
    }
    if (i % (2 * b) != 0) {
      return InvalidArgument("--deterministic needs moe_intermediate_size {} divisible by {}", i, 2 * b);
    }
    if (s > 0 && s % (2 * b) != 0) {
      return InvalidArgument("--deterministic needs the shared expert width {} divisible by {}", s, 2 * b);
    }
    if (SharedSharded() && b % tp != 0) {
      return InvalidArgument("--deterministic with TP-sharded shared experts needs --tp to divide {}, got {}",
                             b, tp);
    }
  }
  return Status::Ok();
}

std::string ParallelOptions::ToString() const {
  return fmt::format("tp={} dp={}{}{} dispatch={}{}{}", tp, dp, ep ? " ep" : "", sp ? " sp" : "",
                     DispatchName(dispatch), deterministic ? " deterministic" : "",
                     SharedSharded() ? " shared=sharded" : " shared=replicated");
}

ParallelMoe::~ParallelMoe() = default;

StatusOr<std::unique_ptr<ParallelMoe>> ParallelMoe::Create(
    const MoeConfig& config, const TensorSource& ckpt, const std::string& prefix,
    const ParallelOptions& options, Communicator& world, std::optional<WeightFormat> weight_format,
    ThreadPool* pool, KernelPolicy kernels, std::shared_ptr<MoeRankScratch> scratch) {
  RETURN_IF_ERROR(options.Validate(config, world.size()));
  std::unique_ptr<ParallelMoe> m(new ParallelMoe());
  m->config_ = config;
  m->options_ = options;
  m->world_ = &world;
  m->pool_ = pool;
  m->world_rank_ = world.rank();
  m->dp_rank_ = world.rank() / options.tp;
  m->tp_rank_ = world.rank() % options.tp;
  ASSIGN_OR_RETURN(m->tp_, world.Split(m->dp_rank_, m->tp_rank_, "tp"));
  ASSIGN_OR_RETURN(m->dp_, world.Split(m->tp_rank_, m->dp_rank_, "dp"));
  ASSIGN_OR_RETURN(m->ep_, world.Split(0, world.rank(), options.ep ? "ep" : "world"));

  const int64_t w = options.world(), r = world.rank();
  MoeShard shard;
  if (options.ep) {
    shard.expert_begin = r * config.n_routed_experts / w;
    shard.expert_end = (r + 1) * config.n_routed_experts / w;
  } else {
    shard.i_begin = r * config.moe_intermediate_size / w;
    shard.i_end = (r + 1) * config.moe_intermediate_size / w;
  }
  if (options.SharedSharded()) {
    shard.s_begin = m->tp_rank_ * config.shared_intermediate_size / options.tp;
    shard.s_end = (m->tp_rank_ + 1) * config.shared_intermediate_size / options.tp;
  }
  m->expert_begin_ = shard.expert_begin;
  m->expert_end_ = shard.expert_end < 0 ? config.n_routed_experts : shard.expert_end;
  ASSIGN_OR_RETURN(m->weights_, MoeWeights::Load(config, ckpt, prefix, weight_format, pool, shard));
  if (options.deterministic) RETURN_IF_ERROR(m->CheckDeterministicBlocks(prefix));
  // Deterministic mode needs batch-invariant kernels: one row whatever the row count.
  kernels.deterministic = kernels.deterministic || options.deterministic;
  if (scratch != nullptr && scratch->compute.policy().deterministic != kernels.deterministic) {
    return Internal("{}: the shared MoE scratch was made for another kernel policy", prefix);
  }
  m->scratch_ =
      scratch != nullptr ? std::move(scratch) : std::make_shared<MoeRankScratch>(std::move(kernels));
  RETURN_IF_ERROR(m->Bind());
  return m;
}

Status ParallelMoe::Bind() {
  if (TokensReplicatedOverWorld(options_)) {
    dispatcher_ = std::make_unique<NoDispatch>(options_);
  } else if (options_.dispatch == DispatchKind::kAllToAll) {
    dispatcher_ = std::make_unique<AllToAllDispatch>(options_);
  } else {
    dispatcher_ = std::make_unique<AllGatherDispatch>(options_);
  }
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
  if (options_.SharedSharded()) return ReductionState::Partial("tp");
  return options_.sp ? ReductionState::TokenShard("tp") : ReductionState::Replicated("tp");
}

ReductionState ParallelMoe::RequestedState() const {
  return options_.sp ? ReductionState::TokenShard("tp") : ReductionState::Replicated("tp");
}

std::pair<int64_t, int64_t> ParallelMoe::TokenRange(int64_t n) const {
  const int64_t d = options_.dp, t = options_.tp;
  int64_t begin = dp_rank_ * n / d, end = (dp_rank_ + 1) * n / d;
  if (options_.sp) {
    const int64_t len = end - begin;
    end = begin + (tp_rank_ + 1) * len / t;
    begin = begin + tp_rank_ * len / t;
  }
  return {begin, end};
}

bool ParallelMoe::WritesOutput() const { return options_.sp || tp_rank_ == 0; }

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
    RETURN_IF_ERROR(check(weights_.down[static_cast<size_t>(e)], LocalBlocks(options_.ep), "expert"));
  const int64_t shared_nb =
      options_.SharedSharded() ? kDeterministicBlocks / options_.tp : kDeterministicBlocks;
  return check(weights_.shared_down, shared_nb, "shared expert");
}

int64_t ParallelMoe::LocalBlocks(bool whole) const {
  if (!options_.deterministic) return 1;
  return whole ? kDeterministicBlocks : kDeterministicBlocks / options_.world();
}

Communicator& ParallelMoe::GroupComm(const std::string& group) {
  if (group == "tp") return *tp_;
  if (group == "dp") return *dp_;
  return *ep_;
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

// Gathers every owner's tokens (x, ids, weights packed per row) in two collectives: the row
// counts, then the rows.
Status GatherTokens(Communicator& comm, const float* x, const Routing& r, int64_t n, int64_t h,
                    PackedTokens* out) {
  const int64_t k = r.k, row_floats = h + 2 * k;
  ASSIGN_OR_RETURN(std::vector<uint64_t> counts, comm.AllGatherValue(static_cast<uint64_t>(n)));
  std::vector<float> send(static_cast<size_t>(n * row_floats));
  for (int64_t t = 0; t < n; ++t) {
    float* row = send.data() + t * row_floats;
    std::memcpy(row, x + t * h, static_cast<size_t>(h) * sizeof(float));
    std::memcpy(row + h, r.ids.data() + t * k, static_cast<size_t>(k) * sizeof(int32_t));
    std::memcpy(row + h + k, r.weights.data() + t * k, static_cast<size_t>(k) * sizeof(float));
  }
  std::vector<size_t> bytes;
  int64_t total = 0;
  for (uint64_t c : counts) {
    bytes.push_back(static_cast<size_t>(c * row_floats) * sizeof(float));
    total += static_cast<int64_t>(c);
  }
  std::vector<float> all(static_cast<size_t>(total * row_floats));
  RETURN_IF_ERROR(comm.AllGather(send.data(), all.data(), bytes));
  out->rows_of_rank.assign(counts.begin(), counts.end());
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

StatusOr<MoePart> ParallelMoe::RoutedPart(const Tensor& x_own, const Routing& routing,
                                          const SharedRows* fold) {
  ASSIGN_OR_RETURN(ReductionState state, RoutedOutputState());
  const int64_t h = config_.hidden_size, k = config_.num_experts_per_tok, t_own = x_own.dim(0);
  const bool det = options_.deterministic;
  const int64_t nb = LocalBlocks(options_.ep);
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
    Communicator* owners = nullptr;
    std::vector<int> source_of_token;  // world rank that owns each gathered token (probe only)
    if (kind == Kind::kAllGather) {
      owners = options_.sp ? ep_.get() : dp_.get();
      RETURN_IF_ERROR(GatherTokens(*owners, x_own.data<float>(), routing, t_own, h, &gathered));
      t_all = static_cast<int64_t>(gathered.x.size()) / h;
      x_rows = gathered.x.data();
      ids = gathered.ids.data();
      wts = gathered.wts.data();
      if (probe_) {
        for (size_t g = 0; g < gathered.rows_of_rank.size(); ++g) {
          const int world_rank =
              options_.sp ? static_cast<int>(g) : static_cast<int>(g) * options_.tp + tp_rank_;
          source_of_token.insert(source_of_token.end(), static_cast<size_t>(gathered.rows_of_rank[g]),
                                 world_rank);
        }
      }
    } else if (probe_) {
      source_of_token.assign(static_cast<size_t>(t_own), world_rank_);
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
    // Reduce-scatter the partial sums back to their owners.
    MoePart part = MakePart(state, t_own, h);
    std::vector<size_t> counts(gathered.rows_of_rank.size());
    for (size_t r = 0; r < counts.size(); ++r) counts[r] = static_cast<size_t>(gathered.rows_of_rank[r] * h);
    if (det) {
      RETURN_IF_ERROR(
          owners->ReduceScatter(all.fixed.data(), part.fixed.data(), counts, ReduceType::kI128Sum));
    } else {
      RETURN_IF_ERROR(owners->ReduceScatter(all.f32.data(), part.f32.data(), counts, ReduceType::kF32Sum));
    }
    ReleasePart(&all);
    return part;
  }

  // All-to-all: send each (token, slot) row to the rank holding its expert, compute, send back.
  Communicator& ep = *ep_;
  const int64_t w = ep.size(), per_rank = config_.n_routed_experts / w;
  std::vector<std::vector<int64_t>> rows_to(static_cast<size_t>(w));  // (t * k + j) per destination
  for (int64_t r = 0; r < t_own * k; ++r)
    rows_to[static_cast<size_t>(routing.ids[r] / per_rank)].push_back(r);
  std::vector<uint64_t> send_n(static_cast<size_t>(w)), recv_n(static_cast<size_t>(w));
  for (int64_t d = 0; d < w; ++d) send_n[d] = rows_to[d].size();
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
  RETURN_IF_ERROR(ep.AllToAll(y_recv, bytes_of(recv_n, nb * h * sizeof(float)), y_back,
                              bytes_of(send_n, nb * h * sizeof(float))));
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
  const bool whole = !options_.SharedSharded();
  const int64_t nb =
      options_.deterministic ? (whole ? kDeterministicBlocks : kDeterministicBlocks / options_.tp) : 1;
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

Status ParallelMoe::FaultReduceShared(MoePart* shared, const std::string& layer_name) {
  const ReductionState before = shared->state;
  if (!options_.disable_state_checks) {
    return Reduce(shared, "all_reduce", layer_name + " shared output (injected fault)");
  }
  // Checks off: sum the first min-rows rows over TP whatever they hold, then keep the declared
  // state, exactly the silent double count of the original bug.
  ASSIGN_OR_RETURN(std::vector<uint64_t> rows, tp_->AllGatherValue(static_cast<uint64_t>(shared->rows)));
  const uint64_t common = *std::min_element(rows.begin(), rows.end());
  const size_t n = static_cast<size_t>(common) * static_cast<size_t>(shared->cols);
  if (options_.deterministic) {
    RETURN_IF_ERROR(tp_->AllReduce(shared->fixed.data(), n, ReduceType::kI128Sum));
  } else {
    RETURN_IF_ERROR(tp_->AllReduce(shared->f32.data(), n, ReduceType::kF32Sum));
  }
  shared->state = before;
  return Status::Ok();
}

Status ParallelMoe::Reduce(MoePart* part, const std::string& op, const std::string& what) {
  if (op.empty()) return Status::Ok();
  Communicator& comm = GroupComm(part->state.group);
  const bool det = options_.deterministic;
  const size_t n = static_cast<size_t>(part->rows * part->cols);
  if (op == "all_reduce") {
    if (part->state.kind != StateKind::kPartial && !options_.disable_state_checks) {
      return InvalidArgument("{}: all_reduce over {} refused: the output is {}, {}", what, part->state.group,
                             part->state.ToString(),
                             part->state.kind == StateKind::kTokenShard
                                 ? "and summing token shards adds unrelated tokens"
                                 : "and reducing it again multiplies it by the group size");
    }
    if (det) {
      RETURN_IF_ERROR(comm.AllReduce(part->fixed.data(), n, ReduceType::kI128Sum));
    } else {
      RETURN_IF_ERROR(comm.AllReduce(part->f32.data(), n, ReduceType::kF32Sum));
    }
    part->state = ReductionState::Replicated(part->state.group);
    return Status::Ok();
  }
  return Unimplemented("{}: the runner does not perform '{}' inside the layer", what, op);
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
  std::string op_sum, op_routed, op_shared;
  if (fuse) {
    ASSIGN_OR_RETURN(op_sum, PlanTransition(routed_state, want, layer_name + " routed+shared output"));
  } else {
    ASSIGN_OR_RETURN(op_routed, PlanTransition(routed_state, want, layer_name + " routed output"));
    ASSIGN_OR_RETURN(op_shared, PlanTransition(shared_state, want, layer_name + " shared output"));
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
  ASSIGN_OR_RETURN(MoePart routed, RoutedPart(x_own, routing, fold_shared ? &shared_rows : nullptr));
  MoePart shared;
  if (fold_shared) {  // already inside `routed`; an empty part with its declared state
    shared.state = SharedOutputState();
    shared.rows = t_own;
    shared.cols = h;
  } else {
    ASSIGN_OR_RETURN(shared, SharedPart(x_own));
  }
  if (options_.fault_reduce_shared && has_shared) RETURN_IF_ERROR(FaultReduceShared(&shared, layer_name));
  MoePart* result = &routed;
  if (fuse) {
    if (has_shared) {  // no shared experts: nothing to add, whatever its (empty) declaration
      RETURN_IF_ERROR(CheckAddable(routed.state, shared.state, layer_name));
      if (!fold_shared) AddParts(&routed, shared);
    }
    RETURN_IF_ERROR(
        Reduce(&routed, op_sum, layer_name + (has_shared ? " routed+shared output" : " routed output")));
  } else {
    RETURN_IF_ERROR(Reduce(&routed, op_routed, layer_name + " routed output"));
    RETURN_IF_ERROR(Reduce(&shared, op_shared, layer_name + " shared output"));
    RETURN_IF_ERROR(CheckAddable(routed.state, shared.state, layer_name));
    AddParts(&routed, shared);
  }
  if (reduce_again_) RETURN_IF_ERROR(Reduce(result, "all_reduce", layer_name + " output (fault injection)"));
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
