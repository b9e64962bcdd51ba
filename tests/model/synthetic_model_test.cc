// Synthetic random models (benchmarks, --load-format dummy): every tensor the config implies, in
// the requested format, with the intended spread, finite, and the same bytes for the same seed.
#include "model/synthetic_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "model/deepseek_model.h"
#include "model/gguf_deepseek2.h"

namespace moerun {
namespace {

ModelConfig TwoLayerLite() {
  return ModelConfig::FromJson(SyntheticV2LiteConfigJson(2), "synthetic").value();
}

class SyntheticSourceTest : public ::testing::TestWithParam<DType> {};

TEST_P(SyntheticSourceTest, MatricesHaveTheIntendedSpread) {
  const ModelConfig c = TwoLayerLite();
  ThreadPool pool(2);
  auto src = SyntheticTensorSource::Create(c, GetParam(), 7, &pool).value();
  EXPECT_EQ(src->Names().size(), ExpectedModelTensors(c).size());
  for (const char* name :
       {"model.layers.1.mlp.experts.3.down_proj.weight", "model.layers.0.self_attn.o_proj.weight",
        "model.layers.1.mlp.experts.0.gate_proj.weight"}) {
    SCOPED_TRACE(name);
    const Tensor t = src->Get(name).value();
    EXPECT_EQ(t.dtype(), GgufMatrixType(GetParam(), t.dim(1)));
    const Tensor f = t.ToF32().value();
    double sum = 0, sq = 0;
    for (float v : f.span<float>()) {
      ASSERT_TRUE(std::isfinite(v));
      sum += v;
      sq += static_cast<double>(v) * v;
    }
    const double n = static_cast<double>(f.numel()), mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
    const double want = 1.0 / std::sqrt(static_cast<double>(t.dim(1)));
    EXPECT_LT(std::fabs(mean), 0.2 * want);
    EXPECT_GT(sd, 0.5 * want);
    EXPECT_LT(sd, 2.0 * want);
    // Seeded: the same bytes again, from a source without a pool.
    auto again = SyntheticTensorSource::Create(c, GetParam(), 7, nullptr).value();
    const Tensor u = again->Get(name).value();
    EXPECT_EQ(std::memcmp(t.raw(), u.raw(), t.nbytes()), 0);
  }
  EXPECT_EQ(src->Find("model.layers.1.mlp.gate.weight")->dtype, DType::kF32);  // the router
  const Tensor norm = src->Get("model.norm.weight").value();
  EXPECT_EQ(norm.data<float>()[0], 1.0f);
  EXPECT_FALSE(src->Get("model.layers.9.mlp.gate.weight").ok());
}

INSTANTIATE_TEST_SUITE_P(Formats, SyntheticSourceTest,
                         ::testing::Values(DType::kBF16, DType::kF16, DType::kQ8_0, DType::kQ4_0,
                                           DType::kQ5_0, DType::kQ5_1, DType::kQ4_K, DType::kQ5_K,
                                           DType::kQ6_K),
                         [](const auto& param_info) { return std::string(DTypeName(param_info.param)); });

TEST(GgufMatrixType, FallsBackLikeLlamaCpp) {
  EXPECT_EQ(GgufMatrixType(DType::kQ4_K, 2048), DType::kQ4_K);
  EXPECT_EQ(GgufMatrixType(DType::kQ4_K, 1408), DType::kQ5_0);
  EXPECT_EQ(GgufMatrixType(DType::kQ5_K, 1408), DType::kQ5_1);
  EXPECT_EQ(GgufMatrixType(DType::kQ5_K, 2048), DType::kQ5_K);
  EXPECT_EQ(GgufMatrixType(DType::kQ6_K, 1408), DType::kQ8_0);
  EXPECT_EQ(GgufMatrixType(DType::kQ4_0, 48), DType::kF16);
}

}  // namespace
}  // namespace moerun
