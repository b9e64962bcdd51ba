// GGUF block formats: layout facts, hand-derived bytes of ggml's reference quantisers, and
// quantise -> dequantise error bounds.
#include "core/block_quant.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/tensor.h"

namespace moerun {
namespace {

std::vector<uint8_t> Quantize(DType t, const std::vector<float>& x) {
  std::vector<uint8_t> out(DTypeRowBytes(t, static_cast<int64_t>(x.size())), 0xAB);
  QuantizeRow(t, x.data(), static_cast<int64_t>(x.size()), out.data());
  return out;
}

std::vector<float> Dequantize(DType t, const std::vector<uint8_t>& b, size_t n) {
  std::vector<float> y(n);
  DequantizeRow(t, b.data(), y.data(), static_cast<int64_t>(n));
  return y;
}

TEST(BlockQuantTest, LayoutFacts) {
  EXPECT_EQ(DTypeBlockSize(DType::kQ8_0), 32);
  EXPECT_EQ(DTypeBlockSize(DType::kQ4_0), 32);
  EXPECT_EQ(DTypeBlockSize(DType::kQ4_K), 256);
  EXPECT_EQ(DTypeBlockSize(DType::kQ6_K), 256);
  EXPECT_EQ(DTypeBlockBytes(DType::kQ8_0), 2u + 32u);
  EXPECT_EQ(DTypeBlockBytes(DType::kQ4_0), 2u + 16u);
  EXPECT_EQ(DTypeBlockBytes(DType::kQ4_K), 2u + 2u + 12u + 128u);
  EXPECT_EQ(DTypeBlockBytes(DType::kQ6_K), 128u + 64u + 16u + 2u);
  EXPECT_EQ(DTypeRowBytes(DType::kQ4_K, 2048), 8u * 144u);
  EXPECT_EQ(DTypeRowBytes(DType::kQ8_0, 96), 3u * 34u);
}

// d = amax / 127 = 1 exactly; q = roundf(x) (ties away from zero).
TEST(BlockQuantTest, Q8_0HandBlock) {
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f;
  x[1] = -127.0f;
  x[2] = 1.5f;    // -> 2
  x[3] = -2.5f;   // -> -3
  x[4] = 0.49f;   // -> 0
  x[5] = 100.4f;  // -> 100
  const std::vector<uint8_t> b = Quantize(DType::kQ8_0, x);
  std::vector<uint8_t> want(34, 0);
  want[0] = 0x00;  // f16 1.0 = 0x3C00, little-endian
  want[1] = 0x3C;
  want[2] = 127;
  want[3] = 0x81;  // -127
  want[4] = 2;
  want[5] = 0xFD;  // -3
  want[6] = 0;
  want[7] = 100;
  EXPECT_EQ(b, want);
}

// The largest-magnitude value is -8, so d = -8 / -8 = 1, and q = min(15, trunc(x + 8.5)).
TEST(BlockQuantTest, Q4_0HandBlock) {
  std::vector<float> x(32, 0.0f);  // 0 -> 8
  x[0] = -8.0f;                    // -> 0
  x[1] = 7.9f;                     // 16.4 -> 16 -> clamped 15
  x[3] = -0.5f;                    // 8.0 -> 8
  x[4] = 0.5f;                     // 9.0 -> 9
  x[16] = 7.0f;                    // 15.5 -> 15
  x[17] = 3.2f;                    // 11.7 -> 11
  x[20] = -7.51f;                  // 0.99 -> 0
  const std::vector<uint8_t> b = Quantize(DType::kQ4_0, x);
  std::vector<uint8_t> want(18, 0x88);
  want[0] = 0x00;
  want[1] = 0x3C;
  want[2] = 0xF0;  // q0 = 0, q16 = 15
  want[3] = 0xBF;  // q1 = 15, q17 = 11
  want[5] = 0x88;  // q3 = 8, q19 = 8
  want[6] = 0x09;  // q4 = 9, q20 = 0
  EXPECT_EQ(b, want);
}

// Q5_0: x_j = (j - 16) / 2, so max = x_0 = -8, d = -8 / -16 = 0.5, id = 2 and q_j =
// trunc(2 x_j + 16.5) = j: byte j = j | (j + 16) << 4 (low nibbles), the fifth bits of elements
// 16..31 set (qh = 0xFFFF0000), and every value comes back exactly. A row of zeros has d = -0 and
// q = 16 everywhere (nibbles 0, every fifth bit set).
TEST(BlockQuantTest, Q5_0HandBlocks) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16) * 0.5f;
  x[31] = 7.6f;  // 2 x 7.6 + 16.5 = 31.7 -> 31
  const std::vector<uint8_t> b = Quantize(DType::kQ5_0, x);
  ASSERT_EQ(b.size(), 22u);
  EXPECT_EQ(b[0], 0x00);
  EXPECT_EQ(b[1], 0x38);  // f16 0.5
  EXPECT_EQ(b[2], 0x00);
  EXPECT_EQ(b[3], 0x00);
  EXPECT_EQ(b[4], 0xFF);
  EXPECT_EQ(b[5], 0xFF);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b[6 + j], j | (j << 4)) << j;
  const std::vector<float> y = Dequantize(DType::kQ5_0, b, 32);
  for (int j = 0; j < 31; ++j) EXPECT_EQ(y[j], x[j]) << j;
  EXPECT_EQ(y[31], 7.5f);

  const std::vector<uint8_t> z = Quantize(DType::kQ5_0, std::vector<float>(64, 0.0f));
  for (int blk = 0; blk < 2; ++blk) {
    EXPECT_EQ(z[22 * blk + 1], 0x80);  // -0
    for (int i = 2; i < 6; ++i) EXPECT_EQ(z[22 * blk + i], 0xFF);
    for (int i = 6; i < 22; ++i) EXPECT_EQ(z[22 * blk + i], 0x00);
  }
  for (float v : Dequantize(DType::kQ5_0, z, 64)) EXPECT_EQ(v, 0.0f);
}

// Q5_1: x_j = j / 2 - 4, so min = -4, max = 11.5, d = 15.5 / 31 = 0.5, id = 2 and q_j =
// trunc(2 (x_j + 4) + 0.5) = j: byte j = j | (j + 16) << 4, qh = 0xFFFF0000, m = f16 -4, and every
// value comes back exactly (j * 0.5 - 4). A constant row has d = 0: q = 0 and m the constant.
TEST(BlockQuantTest, Q5_1HandBlocks) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j) * 0.5f - 4.0f;
  const std::vector<uint8_t> b = Quantize(DType::kQ5_1, x);
  ASSERT_EQ(b.size(), 24u);
  const std::vector<uint8_t> head = {0x00, 0x38, 0x00, 0xC4, 0x00, 0x00, 0xFF, 0xFF};  // d, m, qh
  EXPECT_EQ(std::vector<uint8_t>(b.begin(), b.begin() + 8), head);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b[8 + j], j | (j << 4)) << j;
  EXPECT_EQ(Dequantize(DType::kQ5_1, b, 32), x);

  const std::vector<uint8_t> c = Quantize(DType::kQ5_1, std::vector<float>(32, -1.5f));
  EXPECT_EQ(std::vector<uint8_t>(c.begin(), c.begin() + 4), (std::vector<uint8_t>{0x00, 0x00, 0x00, 0xBE}));
  for (size_t i = 4; i < 24; ++i) EXPECT_EQ(c[i], 0x00) << i;
  for (float v : Dequantize(DType::kQ5_1, c, 32)) EXPECT_EQ(v, -1.5f);
}

// Q5_K's fit on ramps: sub-block s holds x = (1 + s / 8) (l - 15.5) / 31 (l = 0..31), so its 32
// values want 32 levels. The dequantised values come back within a fraction of a level step, and every
// sub-block uses the fifth bit (bit s of qh[l]) for about half its elements.
TEST(BlockQuantTest, Q5_KRampUsesAllFiveBits) {
  std::vector<float> x(256);
  for (int i = 0; i < 256; ++i)
    x[i] = (1.0f + static_cast<float>(i / 32) / 8.0f) * (static_cast<float>(i % 32) - 15.5f) / 31.0f;
  const std::vector<uint8_t> b = Quantize(DType::kQ5_K, x);
  ASSERT_EQ(b.size(), 176u);
  const std::vector<float> y = Dequantize(DType::kQ5_K, b, 256);
  for (int i = 0; i < 256; ++i) EXPECT_NEAR(y[i], x[i], 0.05) << i;
  for (int s = 0; s < 8; ++s) {  // bit s of qh[l] is element l of sub-block s's fifth bit
    int high = 0;
    for (int l = 0; l < 32; ++l) high += (b[16 + l] >> s) & 1;
    EXPECT_GE(high, 8) << "sub-block " << s;
    EXPECT_LE(high, 24) << "sub-block " << s;
  }
}

// A positive extreme gives a negative d: here max = +8 so d = -1 and q = min(15, trunc(8.5 - x)).
TEST(BlockQuantTest, Q4_0NegativeScale) {
  std::vector<float> x(32, 0.0f);
  x[0] = 8.0f;   // -> 0
  x[1] = -3.0f;  // 11.5 -> 11
  const std::vector<uint8_t> b = Quantize(DType::kQ4_0, x);
  EXPECT_EQ(b[0], 0x00);
  EXPECT_EQ(b[1], 0xBC);  // f16 -1.0
  EXPECT_EQ(b[2], 0x80);
  EXPECT_EQ(b[3], 0x8B);
  const std::vector<float> y = Dequantize(DType::kQ4_0, b, 32);
  EXPECT_EQ(y[0], 8.0f);
  EXPECT_EQ(y[1], -3.0f);
}

// Constant 2.0: d = 2/127 -> f16 0x2408 (1 + 8/1024) * 2^-6, q = round(2 * 127 / 2) = 127.
TEST(BlockQuantTest, Q8_0ConstantRow) {
  const std::vector<uint8_t> b = Quantize(DType::kQ8_0, std::vector<float>(64, 2.0f));
  for (int blk = 0; blk < 2; ++blk) {
    EXPECT_EQ(b[34 * blk + 0], 0x08);
    EXPECT_EQ(b[34 * blk + 1], 0x24);
    for (int j = 0; j < 32; ++j) EXPECT_EQ(b[34 * blk + 2 + j], 127);
  }
}

// All-zero rows: Q8_0, Q5_1, Q4_K, Q5_K and Q6_K give all-zero bytes; Q4_0 has d = 0 / -8 = -0 (f16 0x8000)
// and every nibble 8.
TEST(BlockQuantTest, AllZeroRows) {
  const std::vector<float> z(256, 0.0f);
  for (DType t : {DType::kQ8_0, DType::kQ5_1, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
    const std::vector<uint8_t> b = Quantize(t, z);
    for (uint8_t v : b) ASSERT_EQ(v, 0) << DTypeName(t);
    for (float v : Dequantize(t, b, 256)) ASSERT_EQ(v, 0.0f);
  }
  const std::vector<uint8_t> b = Quantize(DType::kQ4_0, z);
  for (int blk = 0; blk < 8; ++blk) {
    EXPECT_EQ(b[18 * blk], 0x00);
    EXPECT_EQ(b[18 * blk + 1], 0x80);
    for (int j = 0; j < 16; ++j) EXPECT_EQ(b[18 * blk + 2 + j], 0x88);
  }
}

// Hand-made Q4_K and Q6_K blocks decode with ggml's bit placement.
TEST(BlockQuantTest, KQuantDecodeLayout) {
  std::vector<uint8_t> q4k(144, 0);
  q4k[0] = 0x00;
  q4k[1] = 0x3C;  // d = 1
  q4k[2] = 0x00;
  q4k[3] = 0x38;  // dmin = 0.5
  // Sub-block 1: sc = 3 (byte 1 low 6 bits), m = 4 (byte 5). Sub-block 5: sc = 0x12 = 18
  // (low 4 bits in byte 9, high 2 bits in byte 1 bits 6-7), m = 0x21 = 33 (byte 9 high nibble,
  // byte 5 bits 6-7).
  q4k[4 + 1] = 3 | (1 << 6);
  q4k[4 + 5] = 4 | (2 << 6);
  q4k[4 + 9] = 0x2 | (0x1 << 4);
  // Element 32 + 7 (sub-block 1) is the high nibble of qs[7]; element 160 + 2 (sub-block 5) the
  // high nibble of qs[64 + 2].
  q4k[16 + 7] = 0x90;
  q4k[16 + 64 + 2] = 0x50;
  const std::vector<float> y = Dequantize(DType::kQ4_K, q4k, 256);
  EXPECT_EQ(y[39], 1.0f * 3 * 9 - 0.5f * 4);
  EXPECT_EQ(y[162], 1.0f * 18 * 5 - 0.5f * 33);
  EXPECT_EQ(y[160], -0.5f * 33);
  EXPECT_EQ(y[0], 0.0f);

  std::vector<uint8_t> q6k(210, 0);
  q6k[208] = 0x00;
  q6k[209] = 0x3C;                          // d = 1
  q6k[192 + 9] = static_cast<uint8_t>(-2);  // scale of elements 144..159
  // Element 128 + 64 + 17 = 209 lies in scale group 13; use 150 = 128 + 22: group g = 0 (l = 22):
  // low nibble of ql[64 + 22], qh[32 + 22] bits 0-1. Value q = 0x2B = 43 -> 43 - 32 = 11.
  // Element 150 is in 16-group 9 (144..159).
  q6k[64 + 22] = 0x0B;
  q6k[128 + 32 + 22] = 0x02;
  const std::vector<float> z = Dequantize(DType::kQ6_K, q6k, 256);
  EXPECT_EQ(z[150], -2.0f * 11);
  EXPECT_EQ(z[0], 0.0f);  // scale 0
}

double MaxAbs(const std::vector<float>& x, size_t b0, size_t n) {
  double m = 0;
  for (size_t i = b0; i < b0 + n; ++i) m = std::max(m, std::fabs(static_cast<double>(x[i])));
  return m;
}

// Per-element bounds for the 32-blocks; RMS bounds for the K-quants, on Gaussian rows and rows
// with one large outlier.
TEST(BlockQuantTest, RoundTripErrorBounds) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int outlier = 0; outlier < 2; ++outlier) {
    std::vector<float> x(1024);
    for (float& v : x) v = nd(rng) * 0.05f;
    if (outlier) x[300] = 40.0f;
    for (DType t : {DType::kQ8_0, DType::kQ4_0, DType::kQ5_0}) {
      const std::vector<float> y = Dequantize(t, Quantize(t, x), x.size());
      const double levels = t == DType::kQ8_0 ? 127.0 : t == DType::kQ4_0 ? 8.0 : 16.0;
      // Q8_0: half a step plus the f16 rounding of d; Q4_0 / Q5_0: a full step (the extreme
      // opposite to the signed max clamps from +8 to +7 steps, or +16 to +15).
      const double frac = t == DType::kQ8_0 ? 0.57 : 1.01;
      for (size_t b = 0; b < x.size(); b += 32) {
        const double step = MaxAbs(x, b, 32) / levels;
        for (size_t i = b; i < b + 32; ++i) ASSERT_LE(std::fabs(x[i] - y[i]), frac * step + 1e-12) << i;
      }
    }
    // Q5_1: half a step (max - min) / 31, plus the f16 roundings of d (times q <= 31) and of m.
    {
      const std::vector<float> y = Dequantize(DType::kQ5_1, Quantize(DType::kQ5_1, x), x.size());
      for (size_t b = 0; b < x.size(); b += 32) {
        const auto [lo, hi] = std::minmax_element(x.begin() + b, x.begin() + b + 32);
        const double step = (*hi - *lo) / 31.0, bound = 0.52 * step + std::fabs(*lo) * 1e-3;
        for (size_t i = b; i < b + 32; ++i) ASSERT_LE(std::fabs(x[i] - y[i]), bound + 1e-12) << i;
      }
    }
    for (DType t : {DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
      const std::vector<float> y = Dequantize(t, Quantize(t, x), x.size());
      const double levels = t == DType::kQ4_K ? 15 : t == DType::kQ5_K ? 31 : 63;
      for (size_t b = 0; b < x.size(); b += 256) {
        if (outlier && b == 256) {
          // An outlier sets the super-block's scale range: the other values of its super-block
          // can only be bounded by a step of the outlier's scale (x / 15, x / 31 or x / 63).
          const double step = 40.0 / levels;
          for (size_t i = b; i < b + 256; ++i) ASSERT_LE(std::fabs(x[i] - y[i]), step) << DTypeName(t) << i;
          continue;
        }
        double e2 = 0, x2 = 0;
        for (size_t i = b; i < b + 256; ++i) {
          e2 += (x[i] - y[i]) * (x[i] - y[i]);
          x2 += x[i] * x[i];
        }
        EXPECT_LE(std::sqrt(e2 / x2), t == DType::kQ4_K   ? 0.12
                                      : t == DType::kQ5_K ? 0.06
                                                          : 0.03)
            << DTypeName(t) << " block " << b / 256;
      }
      if (outlier) {
        EXPECT_NEAR(y[300], 40.0f, t == DType::kQ4_K ? 0.7 : t == DType::kQ5_K ? 0.35 : 0.2) << DTypeName(t);
      }
    }
  }
}

TEST(BlockQuantTest, TensorToF32Dequantises) {
  std::vector<float> x(512);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(static_cast<int>(i % 17) - 8) * 0.25f;
  for (DType t :
       {DType::kQ8_0, DType::kQ4_0, DType::kQ5_0, DType::kQ5_1, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
    Tensor q = Tensor::Zeros(t, {2, 256}).value();
    const std::vector<uint8_t> b = Quantize(t, x);
    ASSERT_EQ(q.nbytes(), b.size());
    std::memcpy(q.data<uint8_t>(), b.data(), b.size());
    const Tensor f = q.ToF32().value();
    const std::vector<float> want = Dequantize(t, b, x.size());
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(f.data<float>()[i], want[i]) << DTypeName(t);
    std::vector<float> conv(x.size());
    ConvertToF32(t, b.data(), conv.data(), conv.size());
    EXPECT_EQ(conv, want);
  }
}

// The 5-bit formats' and the load-only types' (Q3_K, Q2_K, IQ4_NL, IQ4_XS) sizes, and one hand-built block
// each whose values are worked out from the layouts in docs/formats.md. (Random blocks against an independent
// numpy implementation: tests/core/dequant_reference.py.)
TEST(BlockQuantTest, LoadOnlyLayoutFacts) {
  struct Fact {
    DType t;
    int64_t block;
    size_t bytes;
  };
  for (const Fact& f :
       {Fact{DType::kQ5_1, 32, 2 + 2 + 4 + 16}, Fact{DType::kQ5_K, 256, 2 + 2 + 12 + 32 + 128},
        Fact{DType::kQ3_K, 256, 32 + 64 + 12 + 2}, Fact{DType::kQ2_K, 256, 16 + 64 + 2 + 2},
        Fact{DType::kIQ4_NL, 32, 2 + 16}, Fact{DType::kIQ4_XS, 256, 2 + 2 + 4 + 128}}) {
    EXPECT_TRUE(IsBlockDType(f.t)) << DTypeName(f.t);
    EXPECT_EQ(IsLoadOnlyDType(f.t), f.t != DType::kQ5_1 && f.t != DType::kQ5_K) << DTypeName(f.t);
    EXPECT_EQ(DTypeBlockSize(f.t), f.block) << DTypeName(f.t);
    EXPECT_EQ(DTypeBlockBytes(f.t), f.bytes) << DTypeName(f.t);
  }
  for (DType t : {DType::kF32, DType::kQ8_0, DType::kQ4_0, DType::kQ5_0, DType::kQ4_K, DType::kQ6_K})
    EXPECT_FALSE(IsLoadOnlyDType(t)) << DTypeName(t);
  EXPECT_EQ(DTypeBlockBytes(DType::kQ5_0), 2u + 4u + 16u);
  EXPECT_EQ(DTypeRowBytes(DType::kQ5_0, 1408), 44u * 22u);  // V2-Lite's expert down rows
}

void SetF16(std::vector<uint8_t>* b, size_t at, uint16_t h) {
  (*b)[at] = static_cast<uint8_t>(h & 0xFF);
  (*b)[at + 1] = static_cast<uint8_t>(h >> 8);
}

TEST(BlockQuantTest, Q5_0AndQ5_1HandBlocks) {
  // d = 0.5; 5th bits: bit 0 (element 0) and bit 17 (element 17); byte 0 = 0x3F (element 0 low
  // nibble 15, element 16 high nibble 3), byte 1 = 0x21 (element 1: 1, element 17: 2).
  std::vector<uint8_t> b(22, 0);
  SetF16(&b, 0, 0x3800);
  b[2] = 0x01;
  b[4] = 0x02;
  b[6] = 0x3F;
  b[7] = 0x21;
  std::vector<float> y = Dequantize(DType::kQ5_0, b, 32);
  EXPECT_EQ(y[0], (31 - 16) * 0.5f);
  EXPECT_EQ(y[16], (3 - 16) * 0.5f);
  EXPECT_EQ(y[1], (1 - 16) * 0.5f);
  EXPECT_EQ(y[17], (18 - 16) * 0.5f);
  EXPECT_EQ(y[2], -8.0f);
  // Q5_1: the same quants after d = 0.5 and m = -1.
  std::vector<uint8_t> c(24, 0);
  SetF16(&c, 0, 0x3800);
  SetF16(&c, 2, 0xBC00);
  std::copy(b.begin() + 2, b.end(), c.begin() + 4);
  y = Dequantize(DType::kQ5_1, c, 32);
  EXPECT_EQ(y[0], 31 * 0.5f - 1);
  EXPECT_EQ(y[16], 3 * 0.5f - 1);
  EXPECT_EQ(y[1], 1 * 0.5f - 1);
  EXPECT_EQ(y[17], 18 * 0.5f - 1);
  EXPECT_EQ(y[31], -1.0f);
}

TEST(BlockQuantTest, Q5_KHandBlock) {
  // d = 1, dmin = 0.5. Sub-block 5: scale 37 = 5 | (2 << 4) (low bits in byte 4 + 9, high bits
  // at the top of byte 4 + 1), min 19 = 3 | (1 << 4) (byte 4 + 9's high nibble, top of 4 + 5).
  // Its quants are the high nibbles of the third 32-byte group (odd sub-block), 5th bit = bit 5.
  std::vector<uint8_t> b(176, 0);
  SetF16(&b, 0, 0x3C00);
  SetF16(&b, 2, 0x3800);
  b[4 + 9] = 0x35;
  b[4 + 1] = 0x80;
  b[4 + 5] = 0x40;
  b[48 + 64 + 3] = 0xA0;  // element 160 + 3: low 4 bits 10
  b[16 + 3] = 0x20;       // ... and its 5th bit: q = 26
  const std::vector<float> y = Dequantize(DType::kQ5_K, b, 256);
  EXPECT_EQ(y[163], 37.0f * 26 - 0.5f * 19);
  EXPECT_EQ(y[160], -0.5f * 19);
  EXPECT_EQ(y[3], 0.0f);    // sub-block 0: scale and min 0
  EXPECT_EQ(y[131], 0.0f);  // sub-block 4 reads byte 4 + 8 and the top bits of bytes 4 + 0, 4 + 4
}

TEST(BlockQuantTest, Q3_KHandBlock) {
  // d = 0.25. Every 6-bit scale is stored + 32, so all-zero bytes mean scale -32, and a clear
  // hmask bit means q = low - 4: the all-zero block is 0.25 * -32 * -4 = 32 everywhere.
  std::vector<uint8_t> b(110, 0);
  SetF16(&b, 108, 0x3400);
  // Sub-block 13 (= 8 h + 2 p + k with h 1, p 2, k 1): low 4 bits = high nibble of scale byte 5,
  // high 2 bits = bits 6, 7 of scale byte 8 + 13 % 4: 7 | (3 << 4) = 55, i.e. 23.
  b[96 + 5] = 0x70;
  b[96 + 9] = 0xC0;
  // Element 128 + 64 + 16 + 5 = 213: 2 bits at 2p = 4 of qs[32 + 16 + 5], hmask bit 4 h + p = 6
  // of hmask[16 + 5] set: q = 3.
  b[32 + 32 + 16 + 5] = 0x30;
  b[16 + 5] = 0x40;
  const std::vector<float> y = Dequantize(DType::kQ3_K, b, 256);
  EXPECT_EQ(y[213], 0.25f * 23 * 3);
  EXPECT_EQ(y[208], 0.25f * 23 * -4);
  EXPECT_EQ(y[0], 32.0f);
  EXPECT_EQ(y[255], 32.0f);
}

TEST(BlockQuantTest, Q2_KAndIQ4_NLHandBlocks) {
  // Q2_K: d = 0.5, dmin = 0.25; sub-block 6 (h 0, p 3, k 0) has scale 7 and min 2 (byte 6 =
  // 0x27); element 96 + 4 takes bits 6, 7 of qs[4]: q = 3.
  std::vector<uint8_t> b(84, 0);
  SetF16(&b, 80, 0x3800);
  SetF16(&b, 82, 0x3400);
  b[6] = 0x27;
  b[16 + 4] = 0xC0;
  std::vector<float> y = Dequantize(DType::kQ2_K, b, 256);
  EXPECT_EQ(y[100], 0.5f * 7 * 3 - 0.25f * 2);
  EXPECT_EQ(y[96], -0.25f * 2);
  EXPECT_EQ(y[4], 0.0f);  // bits 0, 1 of qs[4], sub-block 0: scale 0
  // IQ4_NL: d = 0.5, byte 0 = 0xF0: element 0 is table[0] = -127, element 16 table[15] = 113.
  std::vector<uint8_t> c(18, 0);
  SetF16(&c, 0, 0x3800);
  c[2] = 0xF0;
  y = Dequantize(DType::kIQ4_NL, c, 32);
  EXPECT_EQ(y[0], -63.5f);
  EXPECT_EQ(y[16], 56.5f);
  EXPECT_EQ(y[1], -63.5f);
  EXPECT_EQ(y[17], -63.5f);
}

TEST(BlockQuantTest, IQ4_XSHandBlock) {
  // d = 0.5. All-zero scale bits mean ls = 0, scale d (0 - 32) = -16, and nibble 0 is table[0] =
  // -127: the all-zero block is 2032 everywhere.
  std::vector<uint8_t> b(136, 0);
  SetF16(&b, 0, 0x3800);
  // Sub-block 5: ls = 9 | (2 << 4) = 41 (high nibble of scales_l[2], bits 10, 11 of scales_h =
  // bits 2, 3 of byte 3), scale 0.5 * 9 = 4.5. Its byte 16 * 5 + 3 = 0xE1: element 160 + 3 is
  // table[1] = -104, element 160 + 19 table[14] = 89.
  b[4 + 2] = 0x90;
  b[3] = 0x08;
  b[8 + 80 + 3] = 0xE1;
  const std::vector<float> y = Dequantize(DType::kIQ4_XS, b, 256);
  EXPECT_EQ(y[163], 4.5f * -104);
  EXPECT_EQ(y[179], 4.5f * 89);
  EXPECT_EQ(y[160], 4.5f * -127);
  EXPECT_EQ(y[128], 2032.0f);  // sub-block 4 (low nibble of scales_l[2], bits 8, 9): ls 0
  EXPECT_EQ(y[255], 2032.0f);
}

}  // namespace
}  // namespace moerun
