#include "core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace moerun {
namespace {

// Independent oracle: the nearest bf16 / f16 value found by exhaustive search over neighbours.
TEST(DTypeTest, Bf16RoundTripAndRounding) {
  for (float f : {0.0f, -0.0f, 1.0f, -2.5f, 3.14159f, 1e-30f, 6.5e4f, 1e38f}) {
    const float r = Bf16ToF32(F32ToBf16(f));
    EXPECT_LE(std::fabs(r - f), std::fabs(f) * (1.0f / 256)) << f;
  }
  // 1 + 2^-8 is exactly between 1 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(Bf16ToF32(F32ToBf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(Bf16ToF32(F32ToBf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isinf(Bf16ToF32(F32ToBf16(std::numeric_limits<float>::infinity()))));
}

TEST(DTypeTest, F16ExhaustiveRoundTrip) {
  // Every finite f16 converts to f32 and back to itself.
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    const float f = F16ToF32(bits);
    if (std::isnan(f)) continue;
    ASSERT_EQ(F32ToF16(f), bits) << std::hex << h;
  }
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(F32ToF16(65520.0f), 0x7c00);                      // rounds to infinity
  EXPECT_EQ(F32ToF16(65519.0f), 0x7bff);                      // max finite
  EXPECT_EQ(F32ToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie to even
}

TEST(DTypeTest, Names) {
  EXPECT_EQ(DTypeName(DType::kBF16), "BF16");
  EXPECT_EQ(ParseDType("F16"), DType::kF16);
  EXPECT_FALSE(ParseDType("F8_E4M3").has_value());
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
}

}  // namespace
}  // namespace moerun
