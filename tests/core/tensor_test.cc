#include "core/tensor.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace moerun {
namespace {

TEST(TensorTest, ZerosIsAlignedAndZero) {
  Tensor t = Tensor::Zeros(DType::kF32, {3, 5}).value();
  EXPECT_EQ(t.numel(), 15);
  EXPECT_EQ(t.nbytes(), 60u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % kTensorAlignment, 0u);
  for (float v : t.span<float>()) EXPECT_EQ(v, 0.0f);
  EXPECT_EQ(ShapeToString(t.shape()), "[3, 5]");
}

TEST(TensorTest, RowsIsAView) {
  Tensor t = Tensor::Zeros(DType::kF32, {4, 2}).value();
  Tensor r = t.Rows(1, 3);
  r.data<float>()[0] = 7.0f;
  EXPECT_EQ(t.data<float>()[2], 7.0f);
  EXPECT_EQ(r.shape(), (Shape{2, 2}));
}

TEST(TensorTest, OverflowingShapeIsRejected) {
  EXPECT_FALSE(Tensor::Zeros(DType::kF32, {int64_t{1} << 40, int64_t{1} << 40}).ok());
  EXPECT_FALSE(Tensor::Zeros(DType::kF32, {-1}).ok());
}

TEST(TensorTest, ToF32) {
  Tensor t = Tensor::Zeros(DType::kBF16, {2}).value();
  t.data<uint16_t>()[0] = F32ToBf16(1.5f);
  t.data<uint16_t>()[1] = F32ToBf16(-2.0f);
  Tensor f = t.ToF32().value();
  EXPECT_EQ(f.data<float>()[0], 1.5f);
  EXPECT_EQ(f.data<float>()[1], -2.0f);
  EXPECT_FALSE(Tensor::Zeros(DType::kI32, {1}).value().ToF32().ok());
}

}  // namespace
}  // namespace moerun
