#include "engine/logprobs.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace moerun {

TokenLogprobs ComputeLogprobs(std::span<const float> logits, int32_t token, int top_n) {
  const int64_t n = static_cast<int64_t>(logits.size());
  double mx = -INFINITY;
  for (float x : logits) mx = std::max(mx, static_cast<double>(x));
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - mx);
  const double log_z = mx + std::log(sum);
  auto lp = [&](int64_t i) { return static_cast<float>(static_cast<double>(logits[i]) - log_z); };
  TokenLogprobs out;
  out.token = token;
  out.logprob = lp(token);
  const int64_t k = std::clamp<int64_t>(top_n, 0, std::min<int64_t>(kMaxTopLogprobs, n));
  if (k == 0) return out;
  std::vector<int32_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });
  for (int64_t i = 0; i < k; ++i) out.top.emplace_back(ids[i], lp(ids[i]));
  return out;
}

LogprobRecord LogprobRecord::From(const TokenLogprobs& t) {
  LogprobRecord r;
  r.token = t.token;
  r.logprob = t.logprob;
  r.n_top = static_cast<int32_t>(std::min<size_t>(t.top.size(), kMaxTopLogprobs));
  for (int32_t i = 0; i < r.n_top; ++i) {
    r.top_ids[i] = t.top[static_cast<size_t>(i)].first;
    r.top_logprobs[i] = t.top[static_cast<size_t>(i)].second;
  }
  return r;
}

TokenLogprobs LogprobRecord::ToLogprobs() const {
  TokenLogprobs t;
  t.token = token;
  t.logprob = logprob;
  for (int32_t i = 0; i < std::clamp(n_top, 0, kMaxTopLogprobs); ++i)
    t.top.emplace_back(top_ids[i], top_logprobs[i]);
  return t;
}

}  // namespace moerun
