#include "core/stored_weight.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

namespace moerun {
namespace {

// FP8 codes [rows, cols] cycling through every finite code (0x7F / 0xFF, the NaNs, skipped).
Tensor Codes(int64_t rows, int64_t cols) {
  Tensor t = Tensor::Zeros(DType::kF8_E4M3, {rows, cols}).value();
  uint8_t code = 0;
  for (int64_t i = 0; i < rows * cols; ++i) {
    t.data<uint8_t>()[i] = code;
    code = static_cast<uint8_t>(code + 37);
    if ((code & 0x7f) == 0x7f) ++code;
  }
  return t;
}

// Distinct scales per block: 2^-(b % 7) x (1 + b / 16), b the flat block index.
Tensor Scales(const Shape& shape) {
  Tensor t = Tensor::Zeros(DType::kF32, shape).value();
  for (int64_t b = 0; b < t.numel(); ++b) {
    t.data<float>()[b] = std::ldexp(1.0f + static_cast<float>(b) / 16, -static_cast<int>(b % 7));
  }
  return t;
}

// W[i][j] = fp8[i][j] * scale[i / bm][j / bn], one f32 multiply, written out element by element.
float Expected(const Tensor& codes, const Tensor& scale, int64_t bm, int64_t bn, int64_t i, int64_t j) {
  const float v = F8E4M3ToF32(codes.data<uint8_t>()[i * codes.dim(1) + j]);
  return v * scale.data<float>()[(i / bm) * scale.dim(1) + j / bn];
}

TEST(StoredWeightTest, BlockDequantWithPartialEdgeBlocks) {
  // 128 x 128 blocks over [200, 300]: scales [2, 3], the last block row 72 tall, the last column
  // 44 wide. And small blocks (3 x 5 over [10, 13]) for many partial edges.
  for (auto [rows, cols, bm, bn] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{200, 300, 128, 128},
                                    {10, 13, 3, 5},
                                    {128, 256, 128, 128}}) {
    const Tensor codes = Codes(rows, cols);
    const Shape sshape = BlockScaleShape(rows, cols, bm, bn);
    ASSERT_EQ(sshape, (Shape{(rows + bm - 1) / bm, (cols + bn - 1) / bn}));
    const Tensor scale = Scales(sshape);
    auto w = StoredWeight::BlockScaled(codes, scale, bm, bn, "w");
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    ASSERT_TRUE(w->block_scaled());
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t i = 0; i < rows; ++i) {
      w->ReadRow(i, 0, cols, row.data());
      for (int64_t j = 0; j < cols; ++j) {
        ASSERT_EQ(row[j], Expected(codes, scale, bm, bn, i, j))
            << rows << "x" << cols << " at " << i << "," << j;
      }
    }
    // A row slice keeps the full tensor's block rows; a column range its block columns.
    const int64_t r0 = rows / 3, r1 = rows - 1, c0 = cols / 4, c1 = cols - 2;
    const StoredWeight slice = w->Rows(r0, r1);
    EXPECT_EQ(slice.rows(), r1 - r0);
    EXPECT_EQ(slice.row_offset(), r0);
    std::vector<float> part(static_cast<size_t>(c1 - c0));
    for (int64_t i = 0; i < slice.rows(); ++i) {
      slice.ReadRow(i, c0, c1, part.data());
      for (int64_t j = c0; j < c1; ++j) ASSERT_EQ(part[j - c0], Expected(codes, scale, bm, bn, r0 + i, j));
    }
    // ToF32 is the same values.
    const Tensor f = w->ToF32().value();
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j)
        ASSERT_EQ(f.data<float>()[i * cols + j], Expected(codes, scale, bm, bn, i, j));
  }
}

TEST(StoredWeightTest, Bf16ScalesWidenExactly) {
  const Tensor codes = Codes(4, 6);
  Tensor s16 = Tensor::Zeros(DType::kBF16, {2, 2}).value();
  const float vals[] = {0.5f, 3.0f, -0.125f, 1e-3f};
  for (int i = 0; i < 4; ++i) s16.data<uint16_t>()[i] = F32ToBf16(vals[i]);
  auto w = StoredWeight::BlockScaled(codes, s16, 2, 3, "w");
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  float v;
  w->ReadRow(3, 5, 6, &v);
  EXPECT_EQ(v, F8E4M3ToF32(codes.data<uint8_t>()[3 * 6 + 5]) * Bf16ToF32(F32ToBf16(1e-3f)));
}

TEST(StoredWeightTest, MalformedScalesRefusedNamingTheTensor) {
  const Tensor codes = Codes(200, 300);
  // [2, 2] instead of [2, 3]: the last 44 columns would have no scale.
  auto bad = StoredWeight::BlockScaled(codes, Scales({2, 2}), 128, 128, "model.layers.0.mlp.up_proj.weight");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  for (const char* needle :
       {"model.layers.0.mlp.up_proj.weight", "[2, 2]", "expected [2, 3]", "[200, 300]", "128"}) {
    EXPECT_NE(bad.status().message().find(needle), std::string::npos)
        << needle << " in " << bad.status().ToString();
  }
  // Too many blocks is as wrong as too few.
  EXPECT_FALSE(StoredWeight::BlockScaled(codes, Scales({3, 3}), 128, 128, "w").ok());
  // Scales of an integer dtype, values that are not FP8, a bad block.
  Tensor iscale = Tensor::Zeros(DType::kI32, {2, 3}).value();
  auto st = StoredWeight::BlockScaled(codes, iscale, 128, 128, "w").status();
  EXPECT_NE(st.message().find("I32"), std::string::npos) << st.ToString();
  st = StoredWeight::BlockScaled(Tensor::Zeros(DType::kBF16, {200, 300}).value(), Scales({2, 3}), 128, 128,
                                 "w2")
           .status();
  EXPECT_NE(st.message().find("'w2' is BF16"), std::string::npos) << st.ToString();
  EXPECT_FALSE(StoredWeight::BlockScaled(codes, Scales({2, 3}), 0, 128, "w").ok());
}

TEST(StoredWeightTest, PlainWeightIsTheTensor) {
  Tensor t = Tensor::Zeros(DType::kF32, {2, 3}).value();
  t.data<float>()[4] = 7.0f;
  const StoredWeight w(t);
  EXPECT_FALSE(w.block_scaled());
  EXPECT_EQ(w.dtype(), DType::kF32);
  EXPECT_EQ(w.Rows(1, 2).values().data<float>()[1], 7.0f);
  EXPECT_EQ(w.ToF32().value().data<float>()[4], 7.0f);
}

}  // namespace
}  // namespace moerun
