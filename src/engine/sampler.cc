#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace moerun {

Status SamplingParams::Validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) {
    return InvalidArgument("--temp {} must be a finite number >= 0", temperature);
  }
  if (top_k < 0) return InvalidArgument("--top-k {} must be >= 0", top_k);
  if (!(top_p > 0.0f && top_p <= 1.0f)) return InvalidArgument("--top-p {} must be in (0, 1]", top_p);
  return Status::Ok();
}

int32_t Sampler::Sample(std::span<const float> logits) {
  const int64_t n = static_cast<int64_t>(logits.size());
  if (params_.temperature == 0.0f) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; ++i)
      if (logits[i] > logits[best]) best = i;
    return static_cast<int32_t>(best);
  }
  // Candidates sorted by logit (desc), ties by id.
  std::vector<int32_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  auto better = [&](int32_t a, int32_t b) { return logits[a] != logits[b] ? logits[a] > logits[b] : a < b; };
  int64_t keep = n;
  if (params_.top_k > 0 && params_.top_k < n) keep = params_.top_k;
  std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(), better);
  ids.resize(static_cast<size_t>(keep));
  std::vector<double> p(ids.size());
  const double mx = logits[ids[0]];
  double sum = 0;
  for (size_t i = 0; i < ids.size(); ++i) sum += p[i] = std::exp((logits[ids[i]] - mx) / params_.temperature);
  // Nucleus: the smallest prefix with mass >= top_p.
  double mass = 0;
  size_t cut = ids.size();
  for (size_t i = 0; i < ids.size(); ++i) {
    mass += p[i] / sum;
    if (mass >= params_.top_p) {
      cut = i + 1;
      break;
    }
  }
  double total = 0;
  for (size_t i = 0; i < cut; ++i) total += p[i];
  std::uniform_real_distribution<double> u(0.0, total);
  double x = u(rng_);
  for (size_t i = 0; i < cut; ++i) {
    x -= p[i];
    if (x <= 0) return ids[i];
  }
  return ids[cut - 1];
}

}  // namespace moerun
