#include "io/fp8_weights.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "io/checkpoint.h"

namespace moerun {
namespace {

namespace fs = std::filesystem;

Tensor Filled(DType dtype, Shape shape, uint8_t byte) {
  Tensor t = Tensor::Zeros(dtype, std::move(shape)).value();
  std::memset(t.raw(), byte, t.nbytes());
  return t;
}

Tensor F32(Shape shape, float v) {
  Tensor t = Tensor::Zeros(DType::kF32, std::move(shape)).value();
  for (float& x : t.span<float>()) x = v;
  return t;
}

// A checkpoint file with the given tensors, opened.
class Fp8WeightsTest : public ::testing::Test {
 protected:
  void TearDown() override {
    std::error_code ec;
    fs::remove(path_, ec);
  }
  std::unique_ptr<Checkpoint> Open(const std::vector<NamedTensor>& ts) {
    path_ = (fs::temp_directory_path() /
             fmt::format("moerun_fp8_{}_{}.safetensors",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name(), ::getpid()))
                .string();
    EXPECT_TRUE(WriteSafetensors(path_, ts).ok());
    return Checkpoint::Open(path_).value();
  }
  std::string path_;
};

TEST_F(Fp8WeightsTest, WeightWithScalesDequantises) {
  // [200, 130]: 2 x 2 blocks of 128, both edges partial. Code 0x38 = 1.0, 0x40 = 2.0.
  Tensor w = Filled(DType::kF8_E4M3, {200, 130}, 0x38);
  w.data<uint8_t>()[199 * 130 + 129] = 0x40;
  Tensor s = F32({2, 2}, 0.5f);
  s.data<float>()[3] = 0.25f;  // the bottom-right block
  auto ckpt = Open({{"w.weight", w},
                    {"w.weight_scale_inv", s},
                    {"b.weight", Filled(DType::kBF16, {4, 4}, 0)},
                    {"b.weight_scale_inv", F32({1, 1}, 1.0f)}});
  EXPECT_EQ(ckpt->Find("w.weight")->dtype, DType::kF8_E4M3);
  ASSERT_TRUE(CheckFp8Scale(*ckpt, *ckpt->Find("w.weight")).ok());
  auto sw = GetStoredWeight(*ckpt, "w.weight");
  ASSERT_TRUE(sw.ok()) << sw.status().ToString();
  ASSERT_TRUE(sw->block_scaled());
  EXPECT_EQ(sw->block_rows(), kFp8BlockSize);
  float v[2];
  sw->ReadRow(0, 127, 129, v);  // block columns 0 and 1 of block row 0
  EXPECT_EQ(v[0], 0.5f);
  EXPECT_EQ(v[1], 0.5f);
  sw->ReadRow(199, 128, 130, v);  // the partial corner block
  EXPECT_EQ(v[0], 0.25f);
  EXPECT_EQ(v[1], 0.5f);  // 2.0 * 0.25
  // Scale names resolve to their FP8 weight only.
  EXPECT_EQ(Fp8WeightOfScale(*ckpt, "w.weight_scale_inv"), "w.weight");
  EXPECT_EQ(Fp8WeightOfScale(*ckpt, "b.weight_scale_inv"), std::nullopt);  // b is BF16
  EXPECT_EQ(Fp8WeightOfScale(*ckpt, "w.weight"), std::nullopt);
  EXPECT_EQ(Fp8WeightOfScale(*ckpt, "_scale_inv"), std::nullopt);
  // A plain weight is just its tensor.
  auto plain = GetStoredWeight(*ckpt, "b.weight");
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->block_scaled());
  EXPECT_EQ(plain->dtype(), DType::kBF16);
}

TEST_F(Fp8WeightsTest, MalformedScaleShapeRefused) {
  auto ckpt = Open(
      {{"m.weight", Filled(DType::kF8_E4M3, {200, 130}, 0x38)}, {"m.weight_scale_inv", F32({2, 1}, 1.0f)}});
  for (const Status& st :
       {CheckFp8Scale(*ckpt, *ckpt->Find("m.weight")), GetStoredWeight(*ckpt, "m.weight").status()}) {
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    for (const char* needle :
         {"'m.weight_scale_inv'", "[2, 1]", "expected [2, 2]", "[200, 130]", "128", path_.c_str()}) {
      EXPECT_NE(st.message().find(needle), std::string::npos) << needle << " in " << st.ToString();
    }
  }
}

TEST_F(Fp8WeightsTest, MissingOrBadScalesRefused) {
  auto ckpt = Open({{"a.weight", Filled(DType::kF8_E4M3, {4, 4}, 0x38)},
                    {"c.weight", Filled(DType::kF8_E4M3, {4, 4}, 0x38)},
                    {"c.weight_scale_inv", Filled(DType::kI32, {1, 1}, 0)},
                    {"v.weight", Filled(DType::kF8_E4M3, {4}, 0x38)},
                    {"v.weight_scale_inv", F32({1}, 1.0f)}});
  Status st = GetStoredWeight(*ckpt, "a.weight").status();
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find("'a.weight' has no 'a.weight_scale_inv'"), std::string::npos) << st.ToString();
  st = GetStoredWeight(*ckpt, "c.weight").status();
  EXPECT_NE(st.message().find("'c.weight_scale_inv' has dtype I32"), std::string::npos) << st.ToString();
  st = CheckFp8Scale(*ckpt, *ckpt->Find("v.weight"));
  EXPECT_NE(st.message().find("'v.weight' has shape [4], expected a 2-D matrix"), std::string::npos)
      << st.ToString();
}

TEST(Fp8NaNTest, FindsNaNCodes) {
  Tensor t = Filled(DType::kF8_E4M3, {3, 4}, 0x7e);  // 448: finite
  EXPECT_EQ(FindF8NaN(t), -1);
  t.data<uint8_t>()[6] = 0xff;
  EXPECT_EQ(FindF8NaN(t), 6);
  t.data<uint8_t>()[2] = 0x7f;
  EXPECT_EQ(FindF8NaN(t), 2);
}

}  // namespace
}  // namespace moerun
