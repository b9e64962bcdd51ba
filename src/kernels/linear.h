// Linear: y = x W^T for a PackedWeight. The one entry point model code uses: it selects the
// kernel row for the weight's format and the batch size (kernels/kernel_table.h), prepares the
// activations that row reads, and runs it.
// Thread safety: a LinearContext's ActivationBuffer serialises callers; distinct contexts may run
// concurrently.
#pragma once

#include <cstdint>
#include <span>

#include "core/thread_pool.h"
#include "kernels/kernel_table.h"

namespace moerun {

struct LinearContext {
  ThreadPool* pool = nullptr;
  const KernelPolicy* policy = nullptr;  // never null when used
  ActivationBuffer* acts = nullptr;      // scratch for the prepared activations
};

// x: [rows, w.in_features()] f32 (row stride ldx, or in_features when ldx = 0); y: [rows,
// w.out_features()] f32 (row stride ldy, or out_features when ldy = 0). With a gate/up weight and
// `swiglu`, y is [rows, I] = silu(gate) * up.
void LinearForward(const PackedWeight& w, const float* x, int64_t rows, float* y, const LinearContext& ctx,
                   bool swiglu = false, int64_t ldy = 0, int64_t ldx = 0);

// One output of LinearForwardSameInput: y [rows, w->out_features()] f32 row-major.
struct LinearOutput {
  const PackedWeight* w = nullptr;
  float* y = nullptr;
};
// y_i = x W_i^T for weights of the same in_features read from one input (e.g. attention's q, k and
// v projections): activations prepared once per format, every task in one parallel loop. Each y_i
// gets the bits LinearForward would give it.
void LinearForwardSameInput(std::span<const LinearOutput> outs, const float* x, int64_t rows,
                            const LinearContext& ctx);

// One input row per weight, on the calling thread (ctx.pool unused): y_i = x_i W_i^T for
// weights[i], x_i = x + i * ldx, y_i = y + i * ldy (e.g. one token's attention heads, each through
// its own kv_b slice: [r, dn] per head). The rows are prepared in one call and the products run as
// memory streams read together where the kernel row has them (RunMatmulsOnThisThread). Each y_i
// gets the bits LinearForward(weights[i], x_i, 1, y_i) gives it.
// REQUIRES: the weights have one format and one in_features.
void LinearForwardRowPerWeight(std::span<const PackedWeight> weights, const float* x, int64_t ldx, float* y,
                               int64_t ldy, const LinearContext& ctx);

}  // namespace moerun
