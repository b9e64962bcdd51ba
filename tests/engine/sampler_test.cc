// Sampler's greedy pick (engine/sampler.h): FirstArgMax against the plain first-index-of-the-maximum
// loop on random logits with ties, signed zeros, NaNs and every tail length.
#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace moerun {
namespace {

// The oracle: the plain loop FirstArgMax replaces.
int64_t PlainArgMax(const std::vector<float>& x) {
  int64_t best = 0;
  for (int64_t i = 1; i < static_cast<int64_t>(x.size()); ++i)
    if (x[static_cast<size_t>(i)] > x[static_cast<size_t>(best)]) best = i;
  return best;
}

TEST(FirstArgMax, IsThePlainLoopsPick) {
  std::mt19937 rng(7);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (size_t n : {1, 2, 4, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 1000, 102400}) {
    for (int trial = 0; trial < 20; ++trial) {
      SCOPED_TRACE(testing::Message() << "n " << n << " trial " << trial);
      // Few distinct values, so the maximum is often tied; some trials with zeros of both signs,
      // NaNs (at 0 too), infinities.
      std::uniform_int_distribution<int> pick(0, trial % 4 == 0 ? 3 : 1000);
      std::vector<float> x(n);
      for (float& v : x) v = static_cast<float>(pick(rng) - 500) / 8.0f;
      if (trial % 5 == 1) {
        for (float& v : x) {
          if (v >= 0.0f) v = rng() % 2 ? -0.0f : 0.0f;  // the maximum is a zero of either sign
        }
      }
      if (trial % 5 == 2) x[rng() % n] = nan;
      if (trial % 5 == 3) x[0] = nan;
      if (trial % 7 == 4) x[rng() % n] = std::numeric_limits<float>::infinity();
      if (trial % 9 == 5) x[n - 1] = 1e9f;  // the last element wins
      EXPECT_EQ(FirstArgMax(x), PlainArgMax(x));
    }
  }
}

TEST(Sampler, GreedyIsFirstArgMax) {
  Sampler s(SamplingParams{});
  const std::vector<float> x = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f};
  EXPECT_EQ(s.Sample(x), 1);
}

}  // namespace
}  // namespace moerun
