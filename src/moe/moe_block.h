// MoeBlock: the forward pass of one MoE block (router, routed experts, shared experts) on one rank.
//
// Routed experts run grouped by expert: token rows are permuted so each expert's tokens are
// contiguous (a stable counting sort, so the order is deterministic), each expert runs one
// gate/up matmul with a fused SwiGLU epilogue and one down matmul over all its rows, and the
// results are combined per token: routed[t] = sum_j w[t, j] * y[slot(t, j)] in slot order j.
// All experts' matmul tasks of a phase go to one ThreadPool::ParallelFor (two phases per call).
// The shared expert (one MLP of width S) runs in the same phases; Qwen2-MoE multiplies its output
// by sigmoid(x . shared_expert_gate).
//
// Outputs are kept separate (routed and shared) so that a parallel runner can give each its own
// reduction state; Sum() adds them. Thread safety: Forward is const and thread-safe; calls on
// one block are serialised (they share its scratch buffers), so use one block per thread for
// concurrency.
#pragma once

#include <mutex>

#include "core/scratch_buffer.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "kernels/kernel_table.h"
#include "moe/expert_compute.h"
#include "moe/moe_config.h"
#include "moe/moe_weights.h"
#include "moe/router.h"

namespace moerun {

struct MoeOptions {
  KernelPolicy kernels;  // which kernel rows run (kernels/kernel_table.h); "ref" = portable C++
};

struct MoeOutput {
  Tensor routed;    // [T, H] f32: sum over the token's experts of weight x expert(x)
  Tensor shared;    // [T, H] f32: shared-expert output (zeros when the block has none)
  Routing routing;  // the router's choice, [T, k]

  // routed + shared, [T, H] f32.
  StatusOr<Tensor> Sum() const;
};

class MoeBlock {
 public:
  MoeBlock(MoeConfig config, MoeWeights weights, MoeOptions options = {})
      : config_(std::move(config)),
        weights_(std::move(weights)),
        options_(options),
        compute_(options.kernels) {}
  MoeBlock(const MoeBlock&) = delete;
  MoeBlock& operator=(const MoeBlock&) = delete;

  // x: [T, H] f32. Fails if the shape does not match the config.
  StatusOr<MoeOutput> Forward(const Tensor& x, ThreadPool* pool) const;

  const MoeConfig& config() const { return config_; }
  const MoeWeights& weights() const { return weights_; }

 private:
  MoeConfig config_;
  MoeWeights weights_;
  MoeOptions options_;

  // Scratch reused across Forward calls (guarded by mu_).
  mutable std::mutex mu_;
  mutable ExpertCompute compute_;
  mutable ScratchBuffer<float> logits_;  // [T, E]
  mutable ScratchBuffer<float> y_;       // [T*k + T, H] expert outputs per (token, slot), then shared
};

}  // namespace moerun
