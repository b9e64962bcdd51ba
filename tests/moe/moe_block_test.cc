// The MoE layer on one rank (ParallelMoe, tp = dp = 1) against the double-precision reference, for
// every router variant, weight dtype, kernel path and several token counts; plus weight validation
// errors.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <tuple>

#include "../testing/process_temp_dir.h"
#include "core/cpu_features.h"
#include "moe/moe_reference.h"
#include "moe/parallel_moe.h"
#include "moe/synthetic_block.h"

namespace moerun {
namespace {

namespace fs = std::filesystem;

fs::path TempDir(const std::string& name) {
  fs::path dir = testing_support::ProcessTempDir("moerun_moe_test") / name;
  fs::create_directories(dir);
  return dir;
}

MoeConfig SmallConfig(const std::string& preset) {
  return MoeConfig::FromJson(PresetConfigJson(preset, /*small=*/true).value(), preset).value();
}

// Writes a synthetic block to a fresh file and opens it as a checkpoint.
std::unique_ptr<Checkpoint> WriteBlock(const MoeConfig& c, DType dtype, const std::string& name,
                                       bool fused = false) {
  const fs::path path = TempDir(name) / "layer.safetensors";
  EXPECT_TRUE(WriteSafetensors(path.string(), MakeSyntheticMoeTensors(c, 7, dtype, fused).value()).ok());
  return Checkpoint::Open(path.string()).value();
}

// The one MoE layer on one rank, with the interface the tests read: Forward(x, pool) gives the
// output and the routing. The layer's pool is fixed at creation, so one layer per pool.
struct OneRankOutput {
  Tensor y;
  Routing routing;
};

class OneRankLayer {
 public:
  OneRankLayer(const MoeConfig& c, const TensorSource& ckpt, std::string prefix,
               std::optional<WeightFormat> format, KernelPolicy kernels = {})
      : c_(c), ckpt_(ckpt), prefix_(std::move(prefix)), format_(format), kernels_(std::move(kernels)) {}

  StatusOr<OneRankOutput> Forward(const Tensor& x, ThreadPool* pool) {
    ASSIGN_OR_RETURN(ParallelMoe * layer, Layer(pool));
    OneRankOutput out;
    ASSIGN_OR_RETURN(out.y, layer->Forward(x, 0, &out.routing));
    return out;
  }
  const MoeWeights& weights() { return Layer(nullptr).value()->weights(); }

 private:
  StatusOr<ParallelMoe*> Layer(ThreadPool* pool) {
    std::unique_ptr<ParallelMoe>& slot = layers_[pool];
    if (!slot) {
      ASSIGN_OR_RETURN(slot, ParallelMoe::CreateLocal(c_, ckpt_, prefix_, format_, pool, kernels_));
    }
    return slot.get();
  }
  MoeConfig c_;
  const TensorSource& ckpt_;
  std::string prefix_;
  std::optional<WeightFormat> format_;
  KernelPolicy kernels_;
  std::map<ThreadPool*, std::unique_ptr<ParallelMoe>> layers_;
};

// A kernel choice: a forced ISA ("" = auto) and the activation precision.
struct Kernel {
  const char* isa;
  ActivationPrecision precision;
  const char* name;
};
constexpr Kernel kKernels[] = {{"ref", ActivationPrecision::kAuto, "ref"},
                               {"avx2", ActivationPrecision::kAuto, "avx2"},
                               {"", ActivationPrecision::kAuto, "auto"},
                               {"", ActivationPrecision::kF32, "f32acts"},
                               {"", ActivationPrecision::kBf16, "bf16dot"}};

struct BlockCase {
  std::string preset;
  DType dtype;                         // as stored in the file
  std::optional<WeightFormat> format;  // packed as (nullopt: as stored)
  Kernel kernel;
};

std::string CaseName(const ::testing::TestParamInfo<BlockCase>& info) {
  const BlockCase& p = info.param;
  std::string s = p.preset + "_" + std::string(DTypeName(p.dtype)) + "_" +
                  (p.format ? WeightFormatName(*p.format) : "stored") + "_" + p.kernel.name;
  for (char& ch : s)
    if (ch == '-') ch = '_';
  return s;
}

void PrintTo(const BlockCase& c, std::ostream* os) { *os << CaseName({c, 0}); }

class MoeBlockTest : public ::testing::TestWithParam<BlockCase> {};

TEST_P(MoeBlockTest, MatchesReference) {
  const BlockCase& p = GetParam();
  const KernelPolicy kernels{.forced = p.kernel.isa, .precision = p.kernel.precision};
  if (!ValidateKernelPolicy(kernels).ok()) GTEST_SKIP() << "this CPU lacks " << p.kernel.isa;
  const MoeConfig c = SmallConfig(p.preset);
  auto ckpt = WriteBlock(c, p.dtype, CaseName({GetParam(), 0}));
  OneRankLayer block(c, *ckpt, "", p.format, kernels);
  const double rtol = ReferenceTolerance(block.weights().format);
  ThreadPool pool1(1), pool3(3);
  for (int64_t tokens : {1, 5, 64, 203}) {
    SCOPED_TRACE(tokens);
    const Tensor x = MakeSyntheticInput(tokens, c.hidden_size, 100 + tokens, DType::kF32).value();
    const OneRankOutput a = block.Forward(x, &pool1).value();
    const OneRankOutput b = block.Forward(x, &pool3).value();
    const Tensor &y = a.y, &y3 = b.y;
    for (int64_t i = 0; i < y.numel(); ++i)
      ASSERT_EQ(y.data<float>()[i], y3.data<float>()[i]) << "threads changed " << i;
    const ReferenceMoeOutput ref = ReferenceMoe(c, *ckpt, "", x).value();
    const MoeComparison cmp = CompareWithReference(ref, y.data<float>(), a.routing.ids.data(), tokens,
                                                   c.hidden_size, c.num_experts_per_tok, 1e-6, rtol);
    EXPECT_TRUE(cmp.ok) << "max scaled err " << cmp.max_scaled_err << " max abs " << cmp.max_abs_diff
                        << " routing mismatches " << cmp.routing_mismatches;
    EXPECT_LE(cmp.near_ties, tokens / 10 + 1);
    // Routing weights agree with the reference where the expert sets agree.
    for (int64_t t = 0; t < tokens; ++t) {
      if (ref.margin[t] < 1e-5) continue;
      for (int64_t j = 0; j < c.num_experts_per_tok; ++j) {
        EXPECT_EQ(a.routing.ids[t * c.num_experts_per_tok + j], ref.ids[t * c.num_experts_per_tok + j]);
        EXPECT_NEAR(a.routing.weights[t * c.num_experts_per_tok + j],
                    ref.weights[t * c.num_experts_per_tok + j],
                    1e-5 * (1 + ref.weights[t * c.num_experts_per_tok + j]));
      }
    }
  }
}

std::vector<BlockCase> AllCases() {
  std::vector<BlockCase> cases;
  for (const std::string& preset : PresetNames()) {
    for (DType d : {DType::kF32, DType::kBF16}) {
      for (const Kernel& k : kKernels) cases.push_back({preset, d, std::nullopt, k});
    }
    // Quantised at load from bf16 (the formats' kernels are checked exactly in kernels_test).
    for (WeightFormat f :
         {WeightFormat::kF16, WeightFormat::kQ8_0, WeightFormat::kQ4_0, WeightFormat::kQ5_0,
          WeightFormat::kQ5_1, WeightFormat::kQ4_K, WeightFormat::kQ5_K, WeightFormat::kQ6_K}) {
      for (const Kernel& k : kKernels) {
        if (k.precision == ActivationPrecision::kAuto) cases.push_back({preset, DType::kBF16, f, k});
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Presets, MoeBlockTest, ::testing::ValuesIn(AllCases()), CaseName);

TEST(MoeBlockFusedTest, FusedExpertTensorsMatchReference) {
  const MoeConfig c = SmallConfig("v2-lite");
  auto ckpt = WriteBlock(c, DType::kF32, "fused", /*fused=*/true);
  ASSERT_TRUE(ckpt->Has("experts.gate_up_proj"));
  OneRankLayer block(c, *ckpt, "", std::nullopt);
  const Tensor x = MakeSyntheticInput(17, c.hidden_size, 3, DType::kF32).value();
  const OneRankOutput out = block.Forward(x, nullptr).value();
  const Tensor& y = out.y;
  const ReferenceMoeOutput ref = ReferenceMoe(c, *ckpt, "", x).value();
  EXPECT_TRUE(CompareWithReference(ref, y.data<float>(), out.routing.ids.data(), 17, c.hidden_size,
                                   c.num_experts_per_tok, 1e-6, 1e-4)
                  .ok);
}

TEST(MoeBlockTest, ZeroTokens) {
  const MoeConfig c = SmallConfig("v3");
  auto ckpt = WriteBlock(c, DType::kBF16, "zero");
  OneRankLayer block(c, *ckpt, "", std::nullopt);
  const OneRankOutput out =
      block.Forward(Tensor::Zeros(DType::kF32, {0, c.hidden_size}).value(), nullptr).value();
  EXPECT_EQ(out.y.dim(0), 0);
}

TEST(MoeBlockTest, RejectsWrongInputShape) {
  const MoeConfig c = SmallConfig("v2-lite");
  auto ckpt = WriteBlock(c, DType::kBF16, "shape");
  OneRankLayer block(c, *ckpt, "", std::nullopt);
  const Status s =
      block.Forward(Tensor::Zeros(DType::kF32, {2, c.hidden_size + 1}).value(), nullptr).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("[n_tokens, 64]"), std::string::npos) << s.message();
}

// Weight validation: each defect is refused with the tensor name and the expected value.
Status LoadWith(const MoeConfig& c, const std::string& name,
                const std::function<void(std::vector<NamedTensor>&)>& edit) {
  std::vector<NamedTensor> tensors = MakeSyntheticMoeTensors(c, 1, DType::kBF16).value();
  edit(tensors);
  const fs::path path = TempDir(name) / "layer.safetensors";
  EXPECT_TRUE(WriteSafetensors(path.string(), tensors).ok());
  auto ckpt = Checkpoint::Open(path.string());
  if (!ckpt.ok()) return ckpt.status();
  return MoeWeights::Load(c, **ckpt, "", std::nullopt, nullptr).status();
}

void ExpectMessage(const Status& s, StatusCode code, const std::string& needle) {
  EXPECT_EQ(s.code(), code) << s.ToString();
  EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
}

TEST(MoeWeightsTest, MissingTensor) {
  const MoeConfig c = SmallConfig("v2-lite");
  ExpectMessage(LoadWith(c, "missing",
                         [](auto& t) {
                           std::erase_if(t, [](auto& n) { return n.first == "experts.3.up_proj.weight"; });
                         }),
                StatusCode::kNotFound, "'experts.3.up_proj.weight' is missing");
}

TEST(MoeWeightsTest, WrongShape) {
  const MoeConfig c = SmallConfig("v2-lite");
  ExpectMessage(LoadWith(c, "shape",
                         [](auto& t) {
                           for (auto& n : t)
                             if (n.first == "experts.0.down_proj.weight")
                               n.second = Tensor::Zeros(DType::kBF16, {64, 31}).value();
                         }),
                StatusCode::kInvalidArgument,
                "'experts.0.down_proj.weight' has shape [64, 31], expected [64, 32]");
}

TEST(MoeWeightsTest, ExtraExpertMeansConfigMismatch) {
  const MoeConfig c = SmallConfig("v2-lite");
  ExpectMessage(
      LoadWith(c, "extra",
               [](auto& t) {
                 t.emplace_back("experts.16.up_proj.weight", Tensor::Zeros(DType::kBF16, {32, 64}).value());
               }),
      StatusCode::kInvalidArgument, "unexpected tensor 'experts.16.up_proj.weight'");
}

TEST(MoeWeightsTest, NonFloatDType) {
  const MoeConfig c = SmallConfig("v2-lite");
  ExpectMessage(LoadWith(c, "dtype",
                         [](auto& t) {
                           for (auto& n : t)
                             if (n.first == "gate.weight")
                               n.second = Tensor::Zeros(DType::kI32, {16, 64}).value();
                         }),
                StatusCode::kInvalidArgument, "'gate.weight' has dtype I32");
}

TEST(MoeWeightsTest, NoauxTcNeedsTheBias) {
  const MoeConfig c = SmallConfig("v3");
  ExpectMessage(LoadWith(c, "bias",
                         [](auto& t) {
                           std::erase_if(t,
                                         [](auto& n) { return n.first == "gate.e_score_correction_bias"; });
                         }),
                StatusCode::kNotFound, "gate.e_score_correction_bias");
}

TEST(MoeWeightsTest, PrefixSelectsOneBlockOfACheckpoint) {
  const MoeConfig c = SmallConfig("qwen2");
  std::vector<NamedTensor> tensors;
  for (int layer : {0, 1}) {
    const std::vector<NamedTensor> block = MakeSyntheticMoeTensors(c, 10 + layer, DType::kF32).value();
    for (const auto& [name, t] : block)
      tensors.emplace_back(fmt::format("model.layers.{}.mlp.{}", layer, name), t);
  }
  tensors.emplace_back("model.embed_tokens.weight", Tensor::Zeros(DType::kF32, {10, c.hidden_size}).value());
  const fs::path path = TempDir("prefix") / "model.safetensors";
  ASSERT_TRUE(WriteSafetensors(path.string(), tensors).ok());
  auto ckpt = Checkpoint::Open(path.parent_path().string()).value();
  const std::string prefix = "model.layers.1.mlp.";
  OneRankLayer block(c, *ckpt, prefix, std::nullopt);
  const Tensor x = MakeSyntheticInput(9, c.hidden_size, 5, DType::kF32).value();
  const OneRankOutput out = block.Forward(x, nullptr).value();
  const Tensor& y = out.y;
  const ReferenceMoeOutput ref = ReferenceMoe(c, *ckpt, prefix, x).value();
  EXPECT_TRUE(CompareWithReference(ref, y.data<float>(), out.routing.ids.data(), 9, c.hidden_size,
                                   c.num_experts_per_tok, 1e-6, 1e-4)
                  .ok);
}

// NaN and Inf never pass the --check comparison, and a comparison that skips every token as a
// router near-tie (a 1e30 input saturates every score) fails instead of passing vacuously.
TEST(CompareWithReferenceTest, NanInfAndAllNearTiesFail) {
  const int64_t tokens = 4, hidden = 3, k = 1;
  ReferenceMoeOutput ref;
  ref.out.assign(static_cast<size_t>(tokens * hidden), 1.0);
  ref.ids = {0, 1, 2, 3};
  ref.weights.assign(static_cast<size_t>(tokens), 1.0);
  ref.margin.assign(static_cast<size_t>(tokens), 1.0);
  std::vector<float> out(static_cast<size_t>(tokens * hidden), 1.0f);
  const std::vector<int32_t> ids = {0, 1, 2, 3};
  auto compare = [&] {
    return CompareWithReference(ref, out.data(), ids.data(), tokens, hidden, k, 1e-5, 1e-4);
  };
  EXPECT_TRUE(compare().ok) << compare().Failure(tokens);

  out[5] = std::nanf("");
  MoeComparison c = compare();
  EXPECT_FALSE(c.ok);
  EXPECT_EQ(c.non_finite, 1);
  EXPECT_EQ(c.Failure(tokens), "1 NaN/Inf values in the output");
  ref.margin[1] = 0;  // a skipped token's NaN still fails
  EXPECT_FALSE(compare().ok);
  ref.margin[1] = 1;

  out.assign(out.size(), std::numeric_limits<float>::infinity());
  EXPECT_EQ(compare().non_finite, tokens * hidden);
  EXPECT_FALSE(compare().ok);

  out.assign(out.size(), 1.0f);
  ref.out[0] = std::numeric_limits<double>::infinity();
  EXPECT_FALSE(compare().ok);
  EXPECT_NE(compare().Failure(tokens).find("in the reference output"), std::string::npos);
  ref.out[0] = 1.0;

  ref.margin.assign(ref.margin.size(), 0.0);  // every token a near-tie: nothing compared
  c = compare();
  EXPECT_FALSE(c.ok);
  EXPECT_EQ(c.compared, 0);
  EXPECT_EQ(c.Failure(tokens), "no token compared (all 4 are router near-ties)");
  ref.margin[0] = 1.0;  // 3 of 4 skipped: more than a tenth + 1
  EXPECT_EQ(compare().Failure(tokens), "3 of 4 tokens are router near-ties (at most 1 may be skipped)");
  ref.margin[1] = ref.margin[2] = 1.0;  // 1 of 4 skipped: allowed
  EXPECT_TRUE(compare().ok) << compare().Failure(tokens);
}

}  // namespace
}  // namespace moerun
