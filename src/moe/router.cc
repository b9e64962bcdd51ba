#include "moe/router.h"

#include <cassert>
#include <cmath>
#include <limits>

namespace moerun {
namespace {

constexpr float kExcluded = -std::numeric_limits<float>::infinity();

void Score(const MoeConfig& c, const float* logits, float* scores) {
  const int64_t e = c.n_routed_experts;
  if (c.scoring_func == ScoringFunc::kSigmoid) {
    for (int64_t i = 0; i < e; ++i) scores[i] = 1.0f / (1.0f + std::exp(-logits[i]));
    return;
  }
  float max = logits[0];
  for (int64_t i = 1; i < e; ++i) max = std::max(max, logits[i]);
  float sum = 0.0f;
  for (int64_t i = 0; i < e; ++i) {
    scores[i] = std::exp(logits[i] - max);
    sum += scores[i];
  }
  for (int64_t i = 0; i < e; ++i) scores[i] /= sum;
}

// Index of the largest value in v[0, n) not yet taken; the lowest index wins ties. -1 if none.
int64_t ArgMax(const float* v, int64_t n, const std::vector<char>& taken) {
  int64_t best = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (taken[static_cast<size_t>(i)] || v[i] == kExcluded) continue;
    if (best < 0 || v[i] > v[best]) best = i;
  }
  return best;
}

// Excludes (sets to -inf) the experts of every group outside the topk_group best groups.
void MaskGroups(const MoeConfig& c, float* choice) {
  const int64_t groups = c.n_group, per = c.n_routed_experts / c.n_group;
  std::vector<float> group_score(static_cast<size_t>(groups));
  for (int64_t g = 0; g < groups; ++g) {
    const float* s = choice + g * per;
    if (c.topk_method == TopkMethod::kNoauxTc) {
      std::vector<char> taken(static_cast<size_t>(per), 0);
      const int64_t a = ArgMax(s, per, taken);
      if (a < 0) {
        group_score[static_cast<size_t>(g)] = kExcluded;
        continue;
      }
      taken[static_cast<size_t>(a)] = 1;
      const int64_t b = ArgMax(s, per, taken);
      group_score[static_cast<size_t>(g)] = s[a] + (b >= 0 ? s[b] : 0.0f);
    } else {
      float m = s[0];
      for (int64_t i = 1; i < per; ++i) m = std::max(m, s[i]);
      group_score[static_cast<size_t>(g)] = m;
    }
  }
  std::vector<char> kept(static_cast<size_t>(groups), 0);
  for (int64_t n = 0; n < c.topk_group; ++n) {
    const int64_t g = ArgMax(group_score.data(), groups, kept);
    if (g < 0) break;
    kept[static_cast<size_t>(g)] = 1;
  }
  for (int64_t g = 0; g < groups; ++g) {
    if (kept[static_cast<size_t>(g)]) continue;
    for (int64_t i = 0; i < per; ++i) choice[g * per + i] = kExcluded;
  }
}

}  // namespace

Routing RouteTokens(const MoeConfig& c, std::span<const float> logits, int64_t tokens,
                    std::span<const float> bias) {
  const int64_t e = c.n_routed_experts, k = c.num_experts_per_tok;
  assert(static_cast<int64_t>(logits.size()) == tokens * e);
  assert(bias.empty() || static_cast<int64_t>(bias.size()) == e);
  Routing r;
  r.tokens = tokens;
  r.k = k;
  r.ids.resize(static_cast<size_t>(tokens * k));
  r.weights.resize(static_cast<size_t>(tokens * k));
  std::vector<float> scores(static_cast<size_t>(e)), choice(static_cast<size_t>(e));
  std::vector<char> taken(static_cast<size_t>(e));
  const bool use_bias = c.topk_method == TopkMethod::kNoauxTc && !bias.empty();
  for (int64_t t = 0; t < tokens; ++t) {
    Score(c, logits.data() + t * e, scores.data());
    for (int64_t i = 0; i < e; ++i) choice[i] = scores[i] + (use_bias ? bias[static_cast<size_t>(i)] : 0.0f);
    if (c.topk_method != TopkMethod::kGreedy) MaskGroups(c, choice.data());
    std::fill(taken.begin(), taken.end(), 0);
    int32_t* ids = r.ids.data() + t * k;
    float* w = r.weights.data() + t * k;
    float sum = 0.0f;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t best = ArgMax(choice.data(), e, taken);
      assert(best >= 0 && "Validate() guarantees enough experts in the kept groups");
      taken[static_cast<size_t>(best)] = 1;
      ids[j] = static_cast<int32_t>(best);
      w[j] = scores[static_cast<size_t>(best)];
      sum += w[j];
    }
    const bool normalise = c.norm_topk_prob && k > 1;
    const bool scale = !normalise || c.scale_after_norm;
    for (int64_t j = 0; j < k; ++j) {
      if (normalise) w[j] /= (sum + 1e-20f);
      if (scale) w[j] *= c.routed_scaling_factor;
    }
  }
  return r;
}

}  // namespace moerun
