// Rotary position embedding of the DeepSeek family: YaRN frequencies, adjacent-pair rotation.
//
// inv_freq follows DeepSeek's YaRN (docs/models.md §3.6): original frequencies for fast-rotating
// dimensions, frequencies / factor for slow ones, a linear ramp between corr_dim(beta_fast) and
// corr_dim(beta_slow); applied at every position. Pairs (x[2i], x[2i+1]) are rotated by
// p * inv_freq[i] and stay interleaved (vLLM's is_neox_style=False layout; docs/models.md §3.5):
// q_pe and the cached k_pe use the same lanes, so q.k equals the reference's de-interleaved form.
// Thread safety: immutable after construction.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model_config.h"

namespace moerun {

class Rope {
 public:
  explicit Rope(const ModelConfig& config);

  // Rotates x [dim] in place for position `pos`.
  void Apply(float* x, int64_t pos) const;
  const std::vector<double>& inv_freq() const { return inv_freq_; }

 private:
  int64_t dim_ = 0;
  std::vector<double> inv_freq_;  // [dim / 2]
  double mscale_ = 1.0;           // cos/sin factor: mscale(factor, mscale) / mscale(factor, mscale_all_dim)
};

// DeepSeek YaRN inverse frequencies for a rope dim, base, and YaRN config (exposed for tests).
std::vector<double> YarnInvFreq(int64_t dim, double base, const YarnConfig& yarn);

}  // namespace moerun
