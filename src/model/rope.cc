#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace moerun {

std::vector<double> YarnInvFreq(int64_t dim, double base, const YarnConfig& y) {
  const int64_t half = dim / 2;
  std::vector<double> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    inv[i] = 1.0 / std::pow(base, static_cast<double>(2 * i) / static_cast<double>(dim));
  if (!y.enabled || y.factor <= 1.0) return inv;
  const double d = static_cast<double>(dim);
  auto corr_dim = [&](double rotations) {
    return d * std::log(static_cast<double>(y.original_max_position) / (rotations * 2.0 * std::numbers::pi)) /
           (2.0 * std::log(base));
  };
  const double low = std::max(std::floor(corr_dim(y.beta_fast)), 0.0);
  double high = std::min(std::ceil(corr_dim(y.beta_slow)), d - 1.0);
  if (low == high) high += 0.001;
  for (int64_t i = 0; i < half; ++i) {
    const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    const double mask = 1.0 - ramp;  // 1: keep the original (extrapolated) frequency
    const double extra = inv[i], inter = inv[i] / y.factor;
    inv[i] = inter * (1.0 - mask) + extra * mask;
  }
  return inv;
}

Rope::Rope(const ModelConfig& c)
    : dim_(c.qk_rope_head_dim), inv_freq_(YarnInvFreq(c.qk_rope_head_dim, c.rope_theta, c.yarn)) {
  if (c.yarn.enabled) {
    mscale_ =
        YarnGetMscale(c.yarn.factor, c.yarn.mscale) / YarnGetMscale(c.yarn.factor, c.yarn.mscale_all_dim);
  }
}

void Rope::Angles(int64_t pos, float* cs) const {
  for (int64_t i = 0; i < dim_ / 2; ++i) {
    const double theta = static_cast<double>(pos) * inv_freq_[i];
    cs[2 * i] = static_cast<float>(std::cos(theta) * mscale_);
    cs[2 * i + 1] = static_cast<float>(std::sin(theta) * mscale_);
  }
}

void Rope::ApplyAngles(float* x, const float* cs) const {
  for (int64_t i = 0; i < dim_ / 2; ++i) {
    const float c = cs[2 * i], s = cs[2 * i + 1];
    const float a = x[2 * i], b = x[2 * i + 1];
    x[2 * i] = a * c - b * s;
    x[2 * i + 1] = b * c + a * s;
  }
}

RotateHalfRope::RotateHalfRope(int64_t dim, double theta)
    : dim_(dim), inv_freq_(static_cast<size_t>(dim / 2)) {
  for (int64_t i = 0; i < dim / 2; ++i)
    inv_freq_[i] = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(dim));
}

void RotateHalfRope::Apply(float* x, int64_t pos) const {
  const int64_t half = dim_ / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double angle = static_cast<double>(pos) * inv_freq_[i];
    const float c = static_cast<float>(std::cos(angle)), s = static_cast<float>(std::sin(angle));
    const float a = x[i], b = x[i + half];
    x[i] = a * c - b * s;
    x[i + half] = b * c + a * s;
  }
}

}  // namespace moerun
