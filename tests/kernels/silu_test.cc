// SwiGLU's activation (kernels/silu.h): the reference against a double oracle, and every SIMD row the
// CPU has bitwise equal to the reference on every length (vector bodies and tails) and on the edge
// values (zeros, the clamp bounds, huge magnitudes, NaN).
#include "kernels/silu.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/cpu_features.h"

namespace moerun {
namespace {

TEST(Silu, ReferenceMatchesTheDoubleOracle) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> ud(-95.0f, 95.0f);
  for (int i = 0; i < 200000; ++i) {
    const float g = i < 100000 ? ud(rng) / 10.0f : ud(rng);  // dense near 0, then the whole range
    const double want = g / (1.0 + std::exp(-static_cast<double>(g)));
    const double got = SiluRef(g);
    // Relative 4e-7; under g = -87 the clamp of exp's argument leaves results of magnitude < 1e-35.
    ASSERT_NEAR(got, want, 4e-7 * std::abs(want) + 1e-35) << "g=" << g;
  }
  EXPECT_EQ(SiluRef(0.0f), 0.0f);
  EXPECT_EQ(SiluRef(100.0f), 100.0f);             // exp(-100) is under the clamp: 1 + e rounds to 1
  EXPECT_LT(std::abs(SiluRef(-100.0f)), 1e-36f);  // -100 / (1 + e^88)
  EXPECT_TRUE(std::isnan(SiluRef(std::nanf(""))));
}

TEST(Silu, EveryRowGivesTheReferenceBits) {
  const CpuFeatures& f = GetCpuFeatures();
  std::vector<std::pair<const char*, SwiGluRowFn>> rows;
  if (f.HasAvx2Kernels()) rows.emplace_back("avx2", internal::SwiGluRowAvx2);
  if (f.avx512f && f.fma && f.os_saves_zmm) rows.emplace_back("avx512", internal::SwiGluRowAvx512);
  if (rows.empty()) GTEST_SKIP() << "no SIMD row on this CPU (the reference is tested above)";
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 4.0f);
  const float edges[] = {0.0f,
                         -0.0f,
                         86.9f,
                         87.0f,
                         87.1f,
                         -87.9f,
                         -88.0f,
                         -88.1f,
                         1e30f,
                         -1e30f,
                         1e-30f,
                         -1e-30f,
                         std::numeric_limits<float>::quiet_NaN()};
  std::vector<int64_t> lengths;  // every vector body + tail up to 40, and one long row (many r values)
  for (int64_t n = 0; n <= 40; ++n) lengths.push_back(n);
  lengths.push_back(1 << 18);
  for (const int64_t n : lengths) {
    std::vector<float> g(static_cast<size_t>(n)), u(g.size());
    for (int64_t l = 0; l < n; ++l) {
      g[l] = l % 3 == 0 ? edges[(l / 3 + n) % std::size(edges)] : nd(rng);
      u[l] = nd(rng);
    }
    std::vector<float> want(g.size() + 1, -7.0f);
    SwiGluRowRef(g.data(), u.data(), want.data(), n);
    for (const auto& [name, row] : rows) {
      std::vector<float> got(g.size() + 1, -7.0f);
      row(g.data(), u.data(), got.data(), n);
      ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0) << name << " n=" << n;
    }
  }
}

}  // namespace
}  // namespace moerun
