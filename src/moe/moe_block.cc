#include "moe/moe_block.h"

#include <algorithm>
#include <cmath>

namespace moerun {

StatusOr<Tensor> MoeOutput::Sum() const {
  ASSIGN_OR_RETURN(Tensor out, Tensor::Zeros(DType::kF32, routed.shape()));
  const float* a = routed.data<float>();
  const float* b = shared.data<float>();
  float* o = out.data<float>();
  for (int64_t i = 0; i < out.numel(); ++i) o[i] = a[i] + b[i];
  return out;
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
  out.routing.k = k;
  if (t_count == 0) return out;
  std::lock_guard<std::mutex> lock(mu_);

  // 1. Router: logits [T, E] in f32, then top-k.
  float* logits = logits_.Get(static_cast<size_t>(t_count * e));
  RunMatmul(MatmulJob{.rows = t_count,
                      .x = {.format = ActFormat::kF32, .f32 = x.data<float>(), .ld = h},
                      .w = &weights_.router_packed,
                      .kernel = &SelectKernel(WeightFormat::kF32, t_count, options_.kernels),
                      .y = logits,
                      .ldy = e},
            pool);
  out.routing =
      RouteTokens(config_, {logits, static_cast<size_t>(t_count * e)}, t_count, weights_.score_bias);

  // 2. Experts: rows [0, T*k) are (token, slot) pairs, rows [T*k, T*k + T) the shared expert.
  const bool has_shared = config_.shared_intermediate_size > 0;
  const int64_t routed_rows = t_count * k, n_rows = routed_rows + (has_shared ? t_count : 0);
  std::vector<int64_t> token(static_cast<size_t>(n_rows));
  std::vector<int32_t> expert(static_cast<size_t>(n_rows));
  for (int64_t r = 0; r < routed_rows; ++r) {
    token[r] = r / k;
    expert[r] = out.routing.ids[r];
  }
  for (int64_t t = 0; t < n_rows - routed_rows; ++t) {
    token[routed_rows + t] = t;
    expert[routed_rows + t] = static_cast<int32_t>(e);
  }
  std::vector<ExpertWeightsRef> refs;
  for (int64_t i = 0; i < e; ++i) refs.push_back({&weights_.gate_up[i], &weights_.down[i]});
  if (has_shared) refs.push_back({&weights_.shared_gate_up, &weights_.shared_down});
  float* y = y_.Get(static_cast<size_t>(n_rows * h));
  compute_.Run(
      {.x = x.data<float>(), .hidden = h, .n_rows = n_rows, .token = token.data(), .expert = expert.data()},
      refs, pool, y);

  // 3. Combine per token in slot order (deterministic); gate the shared output (Qwen2-MoE).
  float* routed = out.routed.data<float>();
  float* shared = out.shared.data<float>();
  const float* xs = x.data<float>();
  ParallelForRows(pool, t_count, [&](int64_t t) {
    float* dst = routed + t * h;
    for (int64_t j = 0; j < k; ++j) {
      const float w = out.routing.weights[t * k + j];
      const float* src = y + (t * k + j) * h;
      for (int64_t c = 0; c < h; ++c) dst[c] += w * src[c];
    }
    if (!has_shared) return;
    const float g = SharedGateValue(weights_, xs + t * h, h);
    const float* src = y + (routed_rows + t) * h;
    for (int64_t c = 0; c < h; ++c) shared[t * h + c] = g * src[c];
  });
  return out;
}

}  // namespace moerun
