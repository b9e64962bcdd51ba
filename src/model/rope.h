// Rotary position embeddings.
//
// Rope: the DeepSeek family's — YaRN frequencies, adjacent-pair rotation.
//
// inv_freq follows DeepSeek's YaRN (docs/models.md §3.6): original frequencies for fast-rotating
// dimensions, frequencies / factor for slow ones, a linear ramp between corr_dim(beta_fast) and
// corr_dim(beta_slow); applied at every position. Pairs (x[2i], x[2i+1]) are rotated by
// p * inv_freq[i] and stay interleaved (vLLM's is_neox_style=False layout; docs/models.md §3.5):
// q_pe and the cached k_pe use the same lanes, so q.k equals the reference's de-interleaved form.
// RotateHalfRope: the Llama/Qwen ("neox", HF rotate_half) form — inv_freq[i] = theta^(-2i/dim),
// lane i paired with lane i + dim/2 (docs/models.md §6.3).
// Thread safety: immutable after construction.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model_config.h"

namespace moerun {

class Rope {
 public:
  explicit Rope(const ModelConfig& config);

  // The rotation at position `pos`: cs [dim] = (cos_0, sin_0, cos_1, sin_1, ...), angles
  // pos * inv_freq[i] in double, times mscale, rounded to f32. Worked out once per token and
  // applied to its k_pe and every head's q_pe.
  void Angles(int64_t pos, float* cs) const;
  // Rotates x [dim] in place by Angles' output: x'[2i] = x[2i] c - x[2i+1] s,
  // x'[2i+1] = x[2i+1] c + x[2i] s (f32).
  void ApplyAngles(float* x, const float* cs) const;
  int64_t dim() const { return dim_; }
  const std::vector<double>& inv_freq() const { return inv_freq_; }

 private:
  int64_t dim_ = 0;
  std::vector<double> inv_freq_;  // [dim / 2]
  double mscale_ = 1.0;           // cos/sin factor: mscale(factor, mscale) / mscale(factor, mscale_all_dim)
};

class RotateHalfRope {
 public:
  RotateHalfRope(int64_t dim, double theta);  // dim = head_dim, e.g. 128; theta e.g. 1e6

  // Rotates x [dim] in place for position `pos`: x'[i] = x[i] cos - x[i+d/2] sin,
  // x'[i+d/2] = x[i+d/2] cos + x[i] sin, angle pos * inv_freq[i] in double, cos/sin rounded to f32.
  void Apply(float* x, int64_t pos) const;

 private:
  int64_t dim_ = 0;
  std::vector<double> inv_freq_;  // [dim / 2]
};

// DeepSeek YaRN inverse frequencies for a rope dim, base, and YaRN config (exposed for tests).
std::vector<double> YarnInvFreq(int64_t dim, double base, const YarnConfig& yarn);

}  // namespace moerun
