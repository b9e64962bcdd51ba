#include "core/finite_scan.h"

#include <gtest/gtest.h>

#include <limits>
#include <vector>

namespace moerun {
namespace {

TEST(FiniteScan, FindsTheFirstNanOrInfAnywhere) {
  for (size_t n : {1u, 7u, 1024u, 1025u, 5000u}) {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
      for (size_t at : {size_t{0}, n / 2, n - 1}) {
        std::vector<float> x(n, 1.5f);
        x[at] = bad;
        if (at + 1 < n) x[n - 1] = bad;
        ASSERT_EQ(FirstNonFinite(x.data(), n), std::optional<size_t>(at)) << n << " " << at;
      }
    }
  }
}

TEST(FiniteScan, ExtremeFiniteValuesPass) {
  const std::vector<float> x = {std::numeric_limits<float>::max(),
                                -std::numeric_limits<float>::max(),
                                std::numeric_limits<float>::denorm_min(),
                                0.0f,
                                -0.0f,
                                1e30f};
  EXPECT_EQ(FirstNonFinite(x.data(), x.size()), std::nullopt);
}

TEST(FiniteScan, CheckRowsFiniteNamesTokenAndColumn) {
  std::vector<float> x(3 * 4, 0.0f);
  x[2 * 4 + 1] = -std::numeric_limits<float>::infinity();
  const Status s = CheckRowsFinite(x.data(), 3, 4, "moe-layer output");
  EXPECT_EQ(s.message(), "moe-layer output: -inf at token 2, column 1");
  x[2 * 4 + 1] = 0;
  EXPECT_TRUE(CheckRowsFinite(x.data(), 3, 4, "moe-layer output").ok());
}

}  // namespace
}  // namespace moerun
