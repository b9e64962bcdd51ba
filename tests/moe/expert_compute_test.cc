// ExpertCompute's fixed-point token sums (deterministic mode's fused down epilogue) against the
// slow obvious route: the same rows run with y written out as K-block partials, then every
// (row, K-block) term summed per token with AccumulateFixed. The integers must be equal bit for
// bit, for float and block formats, with skipped rows, more rows per expert than one kernel call
// takes, an H that is not a whole number of 64-column slices, and with or without a pool.
#include "moe/expert_compute.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "core/fixed_point.h"
#include "core/tensor.h"

namespace moerun {
namespace {

Tensor RandomMatrix(int64_t rows, int64_t cols, std::mt19937& rng, float scale) {
  Tensor t = Tensor::Zeros(DType::kF32, {rows, cols}).value();
  std::normal_distribution<float> nd(0.0f, scale);
  for (float& v : t.span<float>()) v = nd(rng);
  return t;
}

struct Experts {
  std::vector<PackedWeight> gate_up, down;
  std::vector<ExpertWeightsRef> Refs() const {
    std::vector<ExpertWeightsRef> refs;
    for (size_t e = 0; e < down.size(); ++e) refs.push_back({&gate_up[e], &down[e]});
    return refs;
  }
};

Experts MakeExperts(int n, int64_t hidden, int64_t inter, WeightFormat format, std::mt19937& rng) {
  Experts ex;
  for (int e = 0; e < n; ++e) {
    const Tensor gate = RandomMatrix(inter, hidden, rng, 0.1f), up = RandomMatrix(inter, hidden, rng, 0.1f);
    ex.gate_up.push_back(PackedWeight::PackGateUp(gate, up, format).value());
    ex.down.push_back(PackedWeight::Pack(RandomMatrix(hidden, inter, rng, 0.1f), format).value());
  }
  return ex;
}

struct Case {
  WeightFormat format;
  int64_t k_blocks;
  bool pool;
};
void PrintTo(const Case& c, std::ostream* os) {
  *os << WeightFormatName(c.format) << ", " << c.k_blocks << " K-blocks, " << (c.pool ? "pool" : "inline");
}

class ExpertSumsTest : public ::testing::TestWithParam<Case> {};

TEST_P(ExpertSumsTest, TokenSumsEqualTheSumsOfTheWrittenPartials) {
  const Case c = GetParam();
  constexpr int64_t kHidden = 160, kInter = 256, kTokens = 48, kSlots = 4;
  constexpr int kExperts = 3;
  std::mt19937 rng(5);
  const Experts ex = MakeExperts(kExperts, kHidden, kInter, c.format, rng);
  const Tensor x = RandomMatrix(kTokens, kHidden, rng, 1.0f);
  std::vector<int64_t> token;
  std::vector<int32_t> expert;
  std::vector<float> weight;
  std::uniform_int_distribution<int32_t> pick(-1, kExperts - 1);  // -1: not held here
  std::uniform_real_distribution<float> wd(0.05f, 1.0f);
  for (int64_t t = 0; t < kTokens; ++t) {
    for (int64_t j = 0; j < kSlots; ++j) {
      token.push_back(t);
      expert.push_back(pick(rng));
      weight.push_back(wd(rng));
    }
  }
  const int64_t n = kTokens * kSlots, nb = c.k_blocks;
  ThreadPool threads(2);
  ThreadPool* pool = c.pool ? &threads : nullptr;
  const ExpertRowsSpec rows{.x = x.data<float>(),
                            .hidden = kHidden,
                            .n_rows = n,
                            .token = token.data(),
                            .expert = expert.data(),
                            .k_blocks = nb};
  const KernelPolicy policy{.deterministic = true};

  // The slow route: y [n, nb, H] in row order, then one exact sum per token.
  ExpertCompute written(policy);
  std::vector<float> y(static_cast<size_t>(n * nb * kHidden));
  written.Run(rows, ex.Refs(), pool, y.data());
  std::vector<Fixed128> want(static_cast<size_t>(kTokens * kHidden), 0);
  for (int64_t r = 0; r < n; ++r) {
    if (expert[r] < 0) continue;
    std::vector<FixedTermRow> terms;
    for (int64_t b = 0; b < nb; ++b) terms.push_back({y.data() + (r * nb + b) * kHidden, weight[r]});
    AccumulateFixed(want.data() + token[r] * kHidden, kHidden, terms, FixedPath::kScalar);
  }

  ExpertCompute fused(policy);
  ExpertRowsSpec sums_spec = rows;
  std::vector<Fixed128> got(static_cast<size_t>(kTokens * kHidden), 0);
  sums_spec.token_sums = got.data();
  sums_spec.weight = weight.data();
  fused.Run(sums_spec, ex.Refs(), pool, nullptr);
  int64_t nonzero = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_TRUE(got[i] == want[i]) << "token " << i / kHidden << " column " << i % kHidden << ": "
                                   << FromFixed(got[i]) << " vs " << FromFixed(want[i]);
    nonzero += want[i] != 0;
  }
  EXPECT_GT(nonzero, static_cast<int64_t>(want.size()) / 2);  // the sums are not trivially zero
}

INSTANTIATE_TEST_SUITE_P(
    Formats, ExpertSumsTest,
    ::testing::Values(Case{WeightFormat::kF32, 1, true}, Case{WeightFormat::kF32, 8, false},
                      Case{WeightFormat::kBF16, 8, true}, Case{WeightFormat::kBF16, 2, false},
                      Case{WeightFormat::kQ8_0, 4, true}, Case{WeightFormat::kQ4_0, 1, true}),
    [](const ::testing::TestParamInfo<Case>& p) {
      return std::string(WeightFormatName(p.param.format)) + "_blocks" + std::to_string(p.param.k_blocks) +
             (p.param.pool ? "_pool" : "_inline");
    });

}  // namespace
}  // namespace moerun
