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
  EXPECT_EQ(ParseDType("F8_E4M3"), DType::kF8_E4M3);
  EXPECT_EQ(DTypeName(DType::kF8_E4M3), "F8_E4M3");
  EXPECT_FALSE(ParseDType("F8_E5M2").has_value());
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF8_E4M3), 1u);
  EXPECT_FALSE(IsBlockDType(DType::kF8_E4M3));
}

// The e4m3fn value of a code from the OCP FP8 definition, in double arithmetic: (-1)^s *
// 2^(1 - 7) * (m / 8) for exponent field 0, (-1)^s * 2^(e - 7) * (1 + m / 8) otherwise, NaN for
// S.1111.111 (no infinities).
double E4M3Reference(int code) {
  const int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  if (e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
  const double mag = e == 0 ? std::pow(2.0, -6) * (m / 8.0) : std::pow(2.0, e - 7) * (1.0 + m / 8.0);
  return s ? -mag : mag;
}

TEST(DTypeTest, F8E4M3AllCodes) {
  int nans = 0;
  for (int code = 0; code < 256; ++code) {
    const float f = F8E4M3ToF32(static_cast<uint8_t>(code));
    const double want = E4M3Reference(code);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(f)) << code;
      ++nans;
      continue;
    }
    EXPECT_EQ(static_cast<double>(f), want) << "code 0x" << std::hex << code;
    EXPECT_EQ(std::signbit(f), (code & 0x80) != 0) << code;  // -0 stays -0
    EXPECT_FALSE(std::isinf(f)) << code;
  }
  EXPECT_EQ(nans, 2);  // 0x7F and 0xFF only
  // Landmarks: max finite, smallest normal and subnormal, 1.0.
  EXPECT_EQ(F8E4M3ToF32(0x7e), 448.0f);
  EXPECT_EQ(F8E4M3ToF32(0xfe), -448.0f);
  EXPECT_EQ(F8E4M3ToF32(0x08), std::ldexp(1.0f, -6));
  EXPECT_EQ(F8E4M3ToF32(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(F8E4M3ToF32(0x07), 7 * std::ldexp(1.0f, -9));
  EXPECT_EQ(F8E4M3ToF32(0x38), 1.0f);
  EXPECT_EQ(F8E4M3ToF32(0x77), 240.0f);  // exponent field 14, 1.875 x 2^7
}

}  // namespace
}  // namespace moerun
