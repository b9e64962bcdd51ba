#include "moe/parallel_moe.h"

#include <algorithm>

#include "comm/in_process_comm.h"
#include "moe/testing/fault_injection.h"
#include "parallel/transition.h"

namespace moerun {

LayoutDims MoeLayoutDims(const MoeConfig& c, const DownAlignment& align) {
  return {.routed_experts = c.n_routed_experts,
          .moe_intermediate = c.moe_intermediate_size,
          .shared_intermediate = c.shared_intermediate_size,
          .routed_down_align = align.routed,
          .shared_down_align = align.shared};
}

ParallelMoe::~ParallelMoe() = default;

StatusOr<std::unique_ptr<ParallelMoe>> ParallelMoe::Create(const MoeConfig& config, const TensorSource& ckpt,
                                                           const std::string& prefix,
                                                           const ParallelOptions& options,
                                                           Communicator& world,
                                                           std::optional<WeightFormat> weight_format,
                                                           ThreadPool* pool, KernelPolicy kernels) {
  const DownAlignment align = MoeDownAlignment(config, ckpt, prefix, weight_format);
  ASSIGN_OR_RETURN(std::shared_ptr<RankContext> context,
                   RankContext::Create(options, MoeLayoutDims(config, align), world, pool));
  return Create(config, ckpt, prefix, std::move(context), weight_format, std::move(kernels));
}

StatusOr<std::unique_ptr<ParallelMoe>> ParallelMoe::CreateLocal(const MoeConfig& config,
                                                                const TensorSource& ckpt,
                                                                const std::string& prefix,
                                                                std::optional<WeightFormat> weight_format,
                                                                ThreadPool* pool, KernelPolicy kernels,
                                                                const ParallelOptions& options) {
  if (options.world() != 1) {
    return InvalidArgument("{}: a local MoE layer runs on one rank, the options ask for {} ({})", prefix,
                           options.world(), options.ToString());
  }
  std::vector<std::unique_ptr<Communicator>> world = InProcessWorld::Create(1);
  ASSIGN_OR_RETURN(std::unique_ptr<ParallelMoe> m,
                   Create(config, ckpt, prefix, options, *world[0], weight_format, pool, std::move(kernels)));
  m->own_world_ = std::move(world[0]);
  return m;
}

StatusOr<std::unique_ptr<ParallelMoe>> ParallelMoe::Create(const MoeConfig& config, const TensorSource& ckpt,
                                                           const std::string& prefix,
                                                           std::shared_ptr<RankContext> context,
                                                           std::optional<WeightFormat> weight_format,
                                                           KernelPolicy kernels) {
  const ParallelLayout& layout = context->layout();
  const LayoutDims& dims = layout.dims();
  // Deterministic K-blocks were sized for the widest format alignment of the model's blocks.
  const DownAlignment align = layout.options().deterministic
                                  ? MoeDownAlignment(config, ckpt, prefix, weight_format)
                                  : DownAlignment{};
  if (dims.routed_down_align < align.routed || dims.routed_down_align % align.routed != 0 ||
      dims.shared_down_align < align.shared || dims.shared_down_align % align.shared != 0) {
    return Internal(
        "{}: the layout was validated for down projections aligned to {}/{} columns, the block's "
        "formats need {}/{}",
        prefix, dims.routed_down_align, dims.shared_down_align, align.routed, align.shared);
  }
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
  ASSIGN_OR_RETURN(m->weights_,
                   MoeWeights::Load(config, ckpt, prefix, weight_format, context->pool(), shard));
  m->context_ = std::move(context);
  if (m->options_.deterministic) RETURN_IF_ERROR(m->CheckDeterministicBlocks(prefix));
  // Deterministic mode needs batch-invariant kernels: one row whatever the row count.
  kernels.deterministic = kernels.deterministic || m->options_.deterministic;
  MoeRankScratch* scratch =
      &m->context_->Scratch<MoeRankScratch>([&] { return std::make_unique<MoeRankScratch>(kernels); });
  if (scratch->compute.policy().deterministic != kernels.deterministic) {
    return Internal("{}: the shared MoE scratch was made for another kernel policy", prefix);
  }
  m->parts_.emplace(m->options_.deterministic, m->context_->pool(), scratch);
  m->dispatcher_ = MakeDispatcher(m->options_);
  m->routed_counts_ = std::make_unique<std::atomic<uint64_t>[]>(static_cast<size_t>(config.n_routed_experts));
  // Fault injection (--fault-reduce-shared) is a hook outside the layer (moe/testing/).
  if (m->options_.fault_reduce_shared) m->AddHook(MakeReduceSharedAgain());
  return m;
}

ReductionState SharedStateFor(const ParallelOptions& o) {
  if (o.SharedSharded()) return ReductionState::Partial(Group::kTp);
  return o.sp ? ReductionState::TokenShard(Group::kTp) : ReductionState::Replicated(Group::kTp);
}

ReductionState RequestedStateFor(const ParallelOptions& o) {
  return o.sp ? ReductionState::TokenShard(Group::kTp) : ReductionState::Replicated(Group::kTp);
}

void ParallelMoe::DecorateDispatcher(
    const std::function<std::unique_ptr<Dispatcher>(std::unique_ptr<Dispatcher>)>& decorate) {
  dispatcher_ = decorate(std::move(dispatcher_));
}

StatusOr<ReductionState> ParallelMoe::RoutedOutputState() const {
  if (!dispatcher_) {
    return Internal(
        "routed output state read before a dispatch kernel is bound (the declaration belongs to the "
        "bound kernel)");
  }
  return dispatcher_->RoutedState();
}

ReductionState ParallelMoe::SharedOutputState() const { return SharedStateFor(options_); }

ReductionState ParallelMoe::RequestedState() const { return RequestedStateFor(options_); }

std::pair<int64_t, int64_t> ParallelMoe::TokenRange(int64_t n) const {
  const Range r = layout().TokenRange(n);
  return {r.begin, r.end};
}

std::vector<uint64_t> ParallelMoe::RoutedTokenCounts() const {
  std::vector<uint64_t> counts(static_cast<size_t>(config_.n_routed_experts));
  for (size_t x = 0; x < counts.size(); ++x) counts[x] = routed_counts_[x].load(std::memory_order_relaxed);
  return counts;
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

StatusOr<MoePart> ParallelMoe::RoutedPart(const Tensor& x_own, const Routing& routing, SharedFold how,
                                          const std::string& layer_name) {
  if (!dispatcher_) return RoutedOutputState().status();
  const int64_t h = config_.hidden_size, t_own = x_own.dim(0);
  const ParallelLayout& lay = layout();
  const int64_t nb = lay.ExpertBlocks();
  RoutedInput in{.layout = lay,
                 .parts = *parts_,
                 .x_own = x_own,
                 .routing = routing,
                 .expert_begin = expert_begin_,
                 .expert_end = expert_end_,
                 .k_blocks = nb,
                 .layer = layer_name,
                 .shared_weights = &weights_};
  ASSIGN_OR_RETURN(ExpertRows rows, dispatcher_->Dispatch(in));
  std::vector<ExpertWeightsRef> refs;
  for (int64_t e = expert_begin_; e < expert_end_; ++e)
    refs.push_back({&weights_.gate_up[e], &weights_.down[e]});
  MoeRankScratch& scratch = parts_->scratch();
  ExpertRowsSpec spec{.x = rows.x,
                      .hidden = h,
                      .n_rows = rows.n,
                      .token = rows.token,
                      .expert = rows.expert,
                      .k_blocks = nb,
                      .expert_order = rows.expert_order};
  // Deterministic mode, token-slot rows: the experts add weight x output into fixed-point token
  // rows in their down projection's epilogue (the same integers as summing y's K-block partials,
  // without writing and reading them back).
  const bool into_sums = parts_->deterministic() && rows.sum_tokens > 0;
  if (how == SharedFold::kIntoSums && !into_sums) {
    return Internal(
        "{}: the shared experts were to be summed into the {} dispatcher's token sums, it has none",
        layer_name, dispatcher_->name());
  }
  // The shared experts in the routed experts' parallel loops when their down projections have as
  // many K-blocks (in deterministic mode the blocks are fixed per matrix, so not always).
  const bool merge_shared =
      how == SharedFold::kInCompute || (how == SharedFold::kIntoSums && lay.SharedBlocks() == nb);
  if (merge_shared) {
    // The rows are the own tokens (rows.x = x_own): one more row per token for the shared experts,
    // as expert refs.size(), after the routed rows, so one pair of parallel loops runs them all.
    scratch.merged_token.assign(rows.token, rows.token + rows.n);
    scratch.merged_expert.assign(rows.expert, rows.expert + rows.n);
    for (int64_t t = 0; t < t_own; ++t) {
      scratch.merged_token.push_back(t);
      scratch.merged_expert.push_back(static_cast<int32_t>(refs.size()));
    }
    refs.push_back({&weights_.shared_gate_up, &weights_.shared_down});
    spec.n_rows = rows.n + t_own;
    spec.token = scratch.merged_token.data();
    spec.expert = scratch.merged_expert.data();
  }
  MoePart sums;
  float* y = nullptr;
  if (into_sums) {
    sums = parts_->Make(ReductionState{}, rows.sum_tokens, h);  // Combine sets the state
    spec.token_sums = sums.fixed.data();
    spec.weight = rows.weight;
    if (merge_shared) {  // the shared rows' weight: each token's shared gate
      const std::vector<float> gates = SharedGates(x_own);
      scratch.merged_weight.assign(rows.weight, rows.weight + rows.n);
      scratch.merged_weight.insert(scratch.merged_weight.end(), gates.begin(), gates.end());
      spec.weight = scratch.merged_weight.data();
    }
  } else {
    y = scratch.y.Get(static_cast<size_t>(spec.n_rows * nb * h));
  }
  scratch.compute.Run(spec, refs, parts_->pool(), y);
  if (how == SharedFold::kIntoSums && !merge_shared) ComputeShared(x_own, sums.fixed.data());
  if (how == SharedFold::kInCompute) {
    // The shared rows follow the routed ones: in row order after rows.n rows; in expert order (the
    // shared experts are the last expert, every token one row) they are the last t_own positions.
    const int64_t first_shared =
        spec.expert_order ? static_cast<int64_t>(scratch.compute.RowsInExpertOrder().size()) - t_own : rows.n;
    in.fold_shared = y + first_shared * nb * h;
    in.fold_nb = nb;
  }
  const ExpertOutputs out{
      .y = y, .order = scratch.compute.RowsInExpertOrder(), .token_sums = into_sums ? &sums : nullptr};
  ASSIGN_OR_RETURN(MoePart part, dispatcher_->Combine(in, rows, out));
  if (part.state != dispatcher_->RoutedState()) {
    return Internal("{}: the {} dispatcher combined into {}, it declares {}", layer_name, dispatcher_->name(),
                    part.state.ToString(), dispatcher_->RoutedState().ToString());
  }
  return part;
}

std::vector<float> ParallelMoe::SharedGates(const Tensor& x_own) const {
  const int64_t h = config_.hidden_size, t_own = x_own.dim(0);
  std::vector<float> gate(static_cast<size_t>(t_own));
  for (int64_t t = 0; t < t_own; ++t) gate[t] = SharedGateValue(weights_, x_own.data<float>() + t * h, h);
  return gate;
}

ParallelMoe::SharedRows ParallelMoe::ComputeShared(const Tensor& x_own, Fixed128* sums) {
  const int64_t h = config_.hidden_size, t_own = x_own.dim(0);
  const int64_t nb = layout().SharedBlocks();
  std::vector<int64_t> token(static_cast<size_t>(t_own));
  std::vector<int32_t> expert(static_cast<size_t>(t_own), 0);
  for (int64_t t = 0; t < t_own; ++t) token[t] = t;
  const ExpertWeightsRef ref{&weights_.shared_gate_up, &weights_.shared_down};
  ExpertRowsSpec spec{.x = x_own.data<float>(),
                      .hidden = h,
                      .n_rows = t_own,
                      .token = token.data(),
                      .expert = expert.data(),
                      .k_blocks = nb,
                      .expert_order = true};  // one expert: expert order is row order (no fill, no scatter)
  std::vector<float> gate;
  float* y = nullptr;
  if (sums != nullptr) {
    gate = SharedGates(x_own);
    spec.token_sums = sums;
    spec.weight = gate.data();
  } else {
    y = parts_->scratch().y_shared.Get(static_cast<size_t>(t_own * nb * h));
  }
  parts_->scratch().compute.Run(spec, std::span<const ExpertWeightsRef>(&ref, 1), parts_->pool(), y);
  return {y, nb};
}

StatusOr<MoePart> ParallelMoe::SharedPart(const Tensor& x_own) {
  const int64_t h = config_.hidden_size, t_own = x_own.dim(0);
  MoePart part = parts_->Make(SharedOutputState(), t_own, h);
  if (config_.shared_intermediate_size == 0 || t_own == 0) return part;
  if (options_.deterministic) {
    ComputeShared(x_own, part.fixed.data());
    return part;
  }
  const SharedRows rows = ComputeShared(x_own);
  parts_->AccumulateRows(&part, [&](int64_t t, std::vector<SlotOutput>* slots) {
    const float g = SharedGateValue(weights_, x_own.data<float>() + t * h, h);
    slots->push_back({rows.y + t * rows.nb * h, g, rows.nb});
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
                      .kernel = &SelectKernel(WeightFormat::kF32, t_own, parts_->scratch().compute.policy()),
                      .y = logits.data(),
                      .ldy = e},
            parts_->pool());
  Routing routing = RouteTokens(config_, logits, t_own, weights_.score_bias);
  for (int32_t id : routing.ids)
    if (id >= 0 && id < e) routed_counts_[static_cast<size_t>(id)].fetch_add(1, std::memory_order_relaxed);

  // Without dispatch the shared experts' terms are summed into the routed rows: deterministic
  // mode into the routed experts' fixed-point token sums (exact integer sums: the same bits as
  // adding a separate shared part, one pass fewer); fast mode computes them in the routed experts'
  // parallel loops (with one K-block each), adding g y_shared after the routed terms of each row
  // as adding a separate shared part would.
  const bool fold_shared =
      fuse && has_shared && t_own > 0 && hooks_.empty() && dispatcher_->RowsAreOwnTokens();
  SharedFold how = SharedFold::kNone;
  if (fold_shared && options_.deterministic) {
    how = SharedFold::kIntoSums;
  } else if (fold_shared && layout().ExpertBlocks() == 1 && layout().SharedBlocks() == 1) {
    how = SharedFold::kInCompute;
  }
  const bool folded = how != SharedFold::kNone;
  ASSIGN_OR_RETURN(MoePart routed, RoutedPart(x_own, routing, how, layer_name));
  MoePart shared;
  if (folded) {  // already inside `routed`; an empty part with its declared state
    shared.state = SharedOutputState();
    shared.rows = t_own;
    shared.cols = h;
  } else {
    ASSIGN_OR_RETURN(shared, SharedPart(x_own));
  }
  for (const auto& hook : hooks_)
    RETURN_IF_ERROR(hook->OnParts(layout(), *parts_, &routed, &shared, has_shared, layer_name));
  MoePart* result = &routed;
  if (fuse) {
    if (has_shared) {  // no shared experts: nothing to add, whatever its (empty) declaration
      RETURN_IF_ERROR(CheckAddable(routed.state, shared.state, layer_name));
      if (!folded) parts_->Add(&routed, shared);
    }
    RETURN_IF_ERROR(Reduce(&routed, want, sum_name));
  } else {
    RETURN_IF_ERROR(Reduce(&routed, want, layer_name + " routed output"));
    RETURN_IF_ERROR(Reduce(&shared, want, layer_name + " shared output"));
    RETURN_IF_ERROR(CheckAddable(routed.state, shared.state, layer_name));
    parts_->Add(&routed, shared);
  }
  for (const auto& hook : hooks_) RETURN_IF_ERROR(hook->OnOutput(layout(), *parts_, result, layer_name));
  if (result->state != want) {
    return Internal("{}: output ended as {}, caller needs {}", layer_name, result->state.ToString(),
                    want.ToString());
  }
  ASSIGN_OR_RETURN(Tensor out, Tensor::Zeros(DType::kF32, {t_own, h}));
  float* o = out.data<float>();
  if (options_.deterministic) {
    const Fixed128* fixed = result->fixed.data();
    ParallelForRows(parts_->pool(), t_own, [&](int64_t t) {
      for (int64_t c = t * h; c < (t + 1) * h; ++c) o[c] = FromFixedChecked(fixed[c]);
    });
  } else {
    std::copy(result->f32.begin(), result->f32.end(), o);
  }
  parts_->Release(&routed);
  parts_->Release(&shared);
  if (routing_out) *routing_out = std::move(routing);
  return out;
}

}  // namespace moerun
