// Router: turns router logits into each token's top-k experts and their weights (docs/models.md §3.8).
//
// Per token, from logits [E] (f32):
//   scores = softmax(logits) or sigmoid(logits)                         (f32)
//   choice = scores + e_score_correction_bias   (noaux_tc only; the bias is used for choice only)
//   groups (group_limited_greedy, noaux_tc): experts split into n_group contiguous groups; group
//     score = max of choice in the group (group_limited_greedy) or sum of its top-2 (noaux_tc);
//     the topk_group best groups are kept and the other experts excluded (-inf, not HF's 0.0,
//     which only differs when fewer than k kept experts score above 0).
//   ids = the k experts with the largest choice score, in descending order; ties go to the
//     lowest expert id (groups likewise), identically on every rank and path.
//   weights = scores[ids] (unbiased); if norm_topk_prob and k > 1: w /= (sum w + 1e-20);
//     then w *= routed_scaling_factor unless that renormalisation ran (norm_topk_prob, k > 1) and
//     !scale_after_norm.
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "moe/moe_config.h"

namespace moerun {

struct Routing {
  int64_t tokens = 0;
  int64_t k = 0;
  std::vector<int32_t> ids;    // [tokens, k] expert ids, best first
  std::vector<float> weights;  // [tokens, k] combine weights
};

// logits: [tokens, E] row-major. bias: [E] or empty. REQUIRES: config.Validate() is OK.
Routing RouteTokens(const MoeConfig& config, std::span<const float> logits, int64_t tokens,
                    std::span<const float> bias);

}  // namespace moerun
