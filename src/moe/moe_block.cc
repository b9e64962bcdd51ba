#include "moe/moe_block.h"

#include <algorithm>
#include <cmath>

namespace moerun {
namespace {

// Runs every task of every job in one parallel loop.
void RunJobs(const std::vector<MatmulJob>& jobs, ThreadPool* pool) {
  std::vector<int64_t> first_task(jobs.size() + 1, 0);
  for (size_t j = 0; j < jobs.size(); ++j) first_task[j + 1] = first_task[j] + MatmulTaskCount(jobs[j]);
  auto run = [&](int64_t task, int) {
    const size_t j = static_cast<size_t>(std::upper_bound(first_task.begin(), first_task.end(), task) -
                                         first_task.begin() - 1);
    RunMatmulTask(jobs[j], task - first_task[j]);
  };
  if (pool == nullptr) {
    for (int64_t t = 0; t < first_task.back(); ++t) run(t, 0);
  } else {
    pool->ParallelFor(first_task.back(), run);
  }
}

// Runs fn(row) for every row in [0, n), in blocks of kRowBlock rows per task.
template <typename Fn>
void ParallelForRows(ThreadPool* pool, int64_t n, const Fn& fn) {
  constexpr int64_t kRowBlock = 16;
  const int64_t blocks = (n + kRowBlock - 1) / kRowBlock;
  auto run = [&](int64_t b, int) {
    for (int64_t r = b * kRowBlock; r < std::min(n, (b + 1) * kRowBlock); ++r) fn(r);
  };
  if (pool == nullptr) {
    for (int64_t b = 0; b < blocks; ++b) run(b, 0);
  } else {
    pool->ParallelFor(blocks, run);
  }
}

// Expert-sorted slots: slot_of[t * k + j] = position of (token t, choice j) in the permuted rows;
// rows [offset[e], offset[e + 1]) belong to expert e, in token order.
struct Permutation {
  std::vector<int64_t> offset;    // [E + 1]
  std::vector<int64_t> token_of;  // [T * k] permuted row -> token
  std::vector<int64_t> slot_of;   // [T * k] (t, j) -> permuted row
};

Permutation Permute(const Routing& r, int64_t experts) {
  Permutation p;
  p.offset.assign(static_cast<size_t>(experts + 1), 0);
  for (int32_t id : r.ids) ++p.offset[static_cast<size_t>(id) + 1];
  for (int64_t e = 0; e < experts; ++e) p.offset[e + 1] += p.offset[e];
  std::vector<int64_t> fill(p.offset.begin(), p.offset.end() - 1);
  p.token_of.resize(r.ids.size());
  p.slot_of.resize(r.ids.size());
  for (int64_t t = 0; t < r.tokens; ++t) {
    for (int64_t j = 0; j < r.k; ++j) {
      const int64_t row = fill[static_cast<size_t>(r.ids[t * r.k + j])]++;
      p.token_of[row] = t;
      p.slot_of[t * r.k + j] = row;
    }
  }
  return p;
}

}  // namespace

StatusOr<Tensor> MoeOutput::Sum() const {
  ASSIGN_OR_RETURN(Tensor out, Tensor::Zeros(DType::kF32, routed.shape()));
  const float* a = routed.data<float>();
  const float* b = shared.data<float>();
  float* o = out.data<float>();
  for (int64_t i = 0; i < out.numel(); ++i) o[i] = a[i] + b[i];
  return out;
}

MatmulPath MoeBlock::PathFor(int64_t rows) const {
  if (options_.force_generic) return MatmulPath::kGeneric;
  return ChooseMatmulPath(weights_.weight_dtype, rows, options_.precision);
}

StatusOr<MoeOutput> MoeBlock::Forward(const Tensor& x, ThreadPool* pool) const {
  const int64_t h = config_.hidden_size, e = config_.n_routed_experts, k = config_.num_experts_per_tok;
  if (x.rank() != 2 || x.dim(1) != h || x.dtype() != DType::kF32) {
    return InvalidArgument("MoE input must be F32 [n_tokens, {}], got {} {}", h, DTypeName(x.dtype()),
                           ShapeToString(x.shape()));
  }
  const int64_t t_count = x.dim(0);
  MoeOutput out;
  ASSIGN_OR_RETURN(out.routed, Tensor::Zeros(DType::kF32, {t_count, h}));
  ASSIGN_OR_RETURN(out.shared, Tensor::Zeros(DType::kF32, {t_count, h}));
  if (t_count == 0) {
    out.routing.k = k;
    return out;
  }

  // 1. Router: logits [T, E] in f32, then top-k.
  std::lock_guard<std::mutex> lock(scratch_mu_);
  Scratch& ws = scratch_;
  float* logits = ws.logits.Get(static_cast<size_t>(t_count * e));
  const MatmulPath router_path = options_.force_generic
                                     ? MatmulPath::kGeneric
                                     : ChooseMatmulPath(DType::kF32, t_count, ActivationPrecision::kF32);
  RunJobs({MatmulJob{.rows = t_count,
                     .x_f32 = x.data<float>(),
                     .ldx = h,
                     .w = &weights_.router_packed,
                     .y_f32 = logits,
                     .ldy = e,
                     .path = router_path}},
          pool);
  out.routing =
      RouteTokens(config_, {logits, static_cast<size_t>(t_count * e)}, t_count, weights_.score_bias);
  const Permutation perm = Permute(out.routing, e);

  // 2. Gather token rows per expert (f32, plus bf16 copies for bf16-dot experts).
  const int64_t rows = t_count * k, i_size = config_.moe_intermediate_size;
  const int64_t h_pad = h + (h % 2), i_pad = i_size + (i_size % 2);
  const int64_t s_size = config_.shared_intermediate_size, s_pad = s_size + (s_size % 2);
  std::vector<MatmulPath> path(static_cast<size_t>(e));
  bool any_dot = false;
  for (int64_t x_e = 0; x_e < e; ++x_e) {
    path[x_e] = PathFor(perm.offset[x_e + 1] - perm.offset[x_e]);
    any_dot |= path[x_e] == MatmulPath::kAvx512Bf16Dot;
  }
  const MatmulPath shared_path = PathFor(t_count);
  any_dot |= s_size > 0 && shared_path == MatmulPath::kAvx512Bf16Dot;

  float* x_perm = ws.x_perm.Get(static_cast<size_t>(rows * h));
  uint16_t* x_bf16 = any_dot ? ws.x_bf16.Get(static_cast<size_t>((rows + t_count) * h_pad)) : nullptr;
  uint16_t* x_shared_bf16 = any_dot ? x_bf16 + rows * h_pad : nullptr;
  const float* xs = x.data<float>();
  const bool shared_dot = s_size > 0 && shared_path == MatmulPath::kAvx512Bf16Dot;
  std::vector<char> row_dot(static_cast<size_t>(rows), 0);
  for (int64_t x_e = 0; x_e < e; ++x_e) {
    if (path[x_e] != MatmulPath::kAvx512Bf16Dot) continue;
    std::fill(row_dot.begin() + perm.offset[x_e], row_dot.begin() + perm.offset[x_e + 1], 1);
  }
  // Rows [0, rows) are routed (permuted) rows, rows [rows, rows + T) the shared expert's input.
  ParallelForRows(pool, rows + t_count, [&](int64_t row) {
    if (row < rows) {
      const float* src = xs + perm.token_of[row] * h;
      std::copy(src, src + h, x_perm + row * h);
      if (row_dot[row]) ConvertRowToBf16(src, h, x_bf16 + row * h_pad, h_pad);
    } else if (shared_dot) {
      const int64_t t = row - rows;
      ConvertRowToBf16(xs + t * h, h, x_shared_bf16 + t * h_pad, h_pad);
    }
  });

  // 3. Phase 1: gate/up + SwiGLU for every expert with rows, and the shared expert.
  //    Activations h go to f32 buffers, or bf16 (zero-padded to even width) for bf16-dot experts.
  float* act = ws.act.Get(static_cast<size_t>(rows * i_size + t_count * s_size));
  uint16_t* act_bf16 =
      any_dot ? ws.act_bf16.Get(static_cast<size_t>(rows * i_pad + t_count * s_pad)) : nullptr;
  // The pad column (odd I or S) must read as zero in the bf16-dot down projection.
  if (any_dot && (i_pad != i_size || s_pad != s_size)) {
    std::fill(act_bf16, act_bf16 + rows * i_pad + t_count * s_pad, uint16_t{0});
  }
  float* act_shared = act + rows * i_size;
  uint16_t* act_shared_bf16 = any_dot ? act_bf16 + rows * i_pad : nullptr;

  std::vector<MatmulJob> phase1, phase2;
  float* y_perm = ws.y_perm.Get(static_cast<size_t>(rows * h));
  for (int64_t x_e = 0; x_e < e; ++x_e) {
    const int64_t r0 = perm.offset[x_e], n = perm.offset[x_e + 1] - r0;
    if (n == 0) continue;
    const bool dot = path[x_e] == MatmulPath::kAvx512Bf16Dot;
    MatmulJob up{.rows = n, .w = &weights_.gate_up[x_e], .epilogue = Epilogue::kSwiGlu, .path = path[x_e]};
    MatmulJob down{
        .rows = n, .w = &weights_.down[x_e], .y_f32 = y_perm + r0 * h, .ldy = h, .path = path[x_e]};
    if (dot) {
      up.x_bf16 = x_bf16 + r0 * h_pad;
      up.ldx = h_pad;
      up.y_bf16 = act_bf16 + r0 * i_pad;
      up.ldy = i_pad;
      down.x_bf16 = up.y_bf16;
      down.ldx = i_pad;
    } else {
      up.x_f32 = x_perm + r0 * h;
      up.ldx = h;
      up.y_f32 = act + r0 * i_size;
      up.ldy = i_size;
      down.x_f32 = up.y_f32;
      down.ldx = i_size;
    }
    phase1.push_back(up);
    phase2.push_back(down);
  }
  if (s_size > 0) {
    const bool dot = shared_path == MatmulPath::kAvx512Bf16Dot;
    MatmulJob up{
        .rows = t_count, .w = &weights_.shared_gate_up, .epilogue = Epilogue::kSwiGlu, .path = shared_path};
    MatmulJob down{.rows = t_count,
                   .w = &weights_.shared_down,
                   .y_f32 = out.shared.data<float>(),
                   .ldy = h,
                   .path = shared_path};
    if (dot) {
      up.x_bf16 = x_shared_bf16;
      up.ldx = h_pad;
      up.y_bf16 = act_shared_bf16;
      up.ldy = s_pad;
      down.x_bf16 = act_shared_bf16;
      down.ldx = s_pad;
    } else {
      up.x_f32 = xs;
      up.ldx = h;
      up.y_f32 = act_shared;
      up.ldy = s_size;
      down.x_f32 = act_shared;
      down.ldx = s_size;
    }
    phase1.push_back(up);
    phase2.push_back(down);
  }
  RunJobs(phase1, pool);
  // 4. Phase 2: down projections.
  RunJobs(phase2, pool);

  // 5. Combine per token, in slot order (deterministic), and gate the shared output (Qwen2-MoE).
  float* routed = out.routed.data<float>();
  float* shared = out.shared.data<float>();
  const std::vector<float>& gate = weights_.shared_gate;
  ParallelForRows(pool, t_count, [&](int64_t t) {
    float* dst = routed + t * h;
    for (int64_t j = 0; j < k; ++j) {
      const float w = out.routing.weights[t * k + j];
      const float* src = y_perm + perm.slot_of[t * k + j] * h;
      for (int64_t c = 0; c < h; ++c) dst[c] += w * src[c];
    }
    if (!gate.empty()) {
      float dot = 0.0f;
      for (int64_t c = 0; c < h; ++c) dot += xs[t * h + c] * gate[c];
      const float g = 1.0f / (1.0f + std::exp(-dot));
      for (int64_t c = 0; c < h; ++c) shared[t * h + c] *= g;
    }
  });
  return out;
}

}  // namespace moerun
