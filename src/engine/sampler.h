// Sampler: picks the next token from logits — greedy (temperature 0) or sampled with
// temperature, top-k and top-p (nucleus) filtering, reproducible for a given seed.
// Ties in greedy decoding go to the lowest token id. Thread safety: one sampler per sequence.
#pragma once

#include <cstdint>
#include <random>
#include <span>

#include "core/status.h"

namespace moerun {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy, e.g. 0.7
  int top_k = 0;             // 0 = off, e.g. 40
  float top_p = 1.0f;        // 1 = off, e.g. 0.9
  uint64_t seed = 0;         // e.g. 42

  Status Validate() const;
};

// The greedy token: the first index of the largest value, as the plain loop
// `if (x[i] > x[best]) best = i` finds it (NaNs never win, except a NaN at 0 keeps 0), in two
// vectorisable passes. REQUIRES: x not empty.
int64_t FirstArgMax(std::span<const float> x);

class Sampler {
 public:
  explicit Sampler(SamplingParams p) : params_(p), rng_(p.seed) {}
  int32_t Sample(std::span<const float> logits);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace moerun
