// Attention's softmax row (kernels/attention_softmax.h): every vector path bitwise equal to the
// portable one over lengths around the vector widths and long rows; the portable one against a
// long-double softmax; the weights past e^-87 and the probabilities under the smallest normal float
// exact zeros.
#include "kernels/attention_softmax.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace moerun {
namespace {

std::vector<SmallGemmIsa> VectorIsas() {
  std::vector<SmallGemmIsa> out;
  for (SmallGemmIsa isa : {SmallGemmIsa::kAvx2, SmallGemmIsa::kAvx512}) {
    if (SmallGemmIsaSupported(isa)) out.push_back(isa);
  }
  return out;
}

// n scores spread over `range` (so that some fall past the -87 cut when range > 87).
std::vector<float> Scores(int64_t n, float range, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-range, range);
  std::vector<float> s(static_cast<size_t>(n));
  for (float& x : s) x = u(rng);
  return s;
}

std::vector<float> Softmax(std::vector<float> s, float scale, SmallGemmIsa isa) {
  AttentionSoftmaxRow(s.data(), static_cast<int64_t>(s.size()), scale, isa);
  return s;
}

TEST(AttentionSoftmax, EveryVectorPathGivesThePortableBits) {
  std::mt19937 rng(7);
  std::vector<int64_t> lengths;
  for (int64_t n = 1; n <= 70; ++n) lengths.push_back(n);
  for (int64_t n : {127, 128, 129, 255, 1000, 4097}) lengths.push_back(n);
  for (int64_t n : lengths) {
    for (float range : {0.5f, 20.0f, 200.0f}) {
      const std::vector<float> s = Scores(n, range, rng);
      const std::vector<float> want = Softmax(s, 0.0723f, SmallGemmIsa::kRef);
      for (SmallGemmIsa isa : VectorIsas()) {
        const std::vector<float> got = Softmax(s, 0.0723f, isa);
        ASSERT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0)
            << "n " << n << " range " << range << " isa " << static_cast<int>(isa);
      }
    }
  }
}

TEST(AttentionSoftmax, PortablePathIsTheLongDoubleSoftmax) {
  std::mt19937 rng(11);
  for (int64_t n : {1, 9, 100, 3001}) {
    const float scale = 0.125f;
    const std::vector<float> s = Scores(n, 300.0f, rng);
    const std::vector<float> got = Softmax(s, scale, SmallGemmIsa::kRef);
    // The f32 differences x_j - m as the definition takes them (their rounding, up to 4e-6 of
    // exp(d) at d = -60, is the definition's), then exp and sum in long double.
    float m = -INFINITY;
    for (float x : s) m = std::max(m, x * scale);
    long double sum = 0;
    for (float x : s) sum += std::exp(static_cast<long double>(x * scale - m));
    long double total = 0;
    for (int64_t j = 0; j < n; ++j) {
      const long double d = s[j] * scale - m;
      const long double p = std::exp(d) / sum;
      total += got[j];
      if (d < kSoftmaxMinExponent - 1e-4L) {
        EXPECT_EQ(got[j], 0.0f) << "n " << n << " j " << j;  // past the cut: an exact zero
      } else if (d > kSoftmaxMinExponent + 1e-4L && p >= std::numeric_limits<float>::min() * 2) {
        EXPECT_NEAR(got[j], p, 1e-6L * p) << "n " << n << " j " << j;
      }
    }
    EXPECT_NEAR(total, 1.0L, 1e-6L) << "n " << n;
  }
}

TEST(AttentionSoftmax, WeightsPastTheCutAndSubnormalProbabilitiesAreZero) {
  for (SmallGemmIsa isa : {SmallGemmIsa::kRef, SmallGemmIsa::kAvx2, SmallGemmIsa::kAvx512}) {
    if (!SmallGemmIsaSupported(isa)) continue;
    // 17 scores (a whole vector and a tail on every path): the cut lies between -86.9 and -87.1.
    std::vector<float> s(17, -200.0f);
    s[0] = 0.0f;
    s[3] = -86.9f;
    s[5] = -87.1f;
    s[16] = -86.9f;
    const std::vector<float> p = Softmax(s, 1.0f, isa);
    EXPECT_GT(p[3], 0.0f);
    const double w = std::exp(static_cast<double>(-86.9f));
    EXPECT_NEAR(p[3], w, 1e-6 * w);
    EXPECT_EQ(p[3], p[16]);
    EXPECT_EQ(p[5], 0.0f);
    EXPECT_EQ(p[1], 0.0f);
    EXPECT_EQ(p[0], 1.0f);
    // Weights above the cut whose probability falls under the smallest normal float: 0. Two scores
    // at the maximum and one 86.9 below: that one's weight is 1.7e-38, its probability half that.
    std::vector<float> t = {0.0f, 0.0f, -86.9f};
    const std::vector<float> q = Softmax(t, 1.0f, isa);
    EXPECT_EQ(q[2], 0.0f);
    EXPECT_EQ(q[0], 0.5f);
  }
}

}  // namespace
}  // namespace moerun
