// Matmul paths against a double-precision reference on the same (stored) weights.
#include "kernels/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/cpu_features.h"

namespace moerun {
namespace {

struct Case {
  int64_t m, n, k;
  DType wdtype;
};

Tensor RandomMatrix(int64_t rows, int64_t cols, std::mt19937& rng, float scale) {
  Tensor t = Tensor::Zeros(DType::kF32, {rows, cols}).value();
  std::normal_distribution<float> d(0.0f, scale);
  for (float& v : t.span<float>()) v = d(rng);
  return t;
}

// y[m][n] = sum_k x[m][k] * W[n][k] in double, W read back from the packed copy.
std::vector<double> Reference(const std::vector<float>& x, int64_t m, int64_t k, const PackedWeight& w,
                              int64_t n_rows) {
  std::vector<double> y(static_cast<size_t>(m * n_rows));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t n = 0; n < n_rows; ++n) {
      double s = 0;
      for (int64_t kk = 0; kk < k; ++kk) s += static_cast<double>(x[i * k + kk]) * w.At(n, kk);
      y[i * n_rows + n] = s;
    }
  return y;
}

std::vector<MatmulPath> PathsFor(DType wdtype) {
  std::vector<MatmulPath> paths = {MatmulPath::kGeneric};
  if (GetCpuFeatures().HasAvx512Bf16Kernels()) {
    paths.push_back(MatmulPath::kAvx512F32);
    if (wdtype == DType::kBF16) paths.push_back(MatmulPath::kAvx512Bf16Dot);
  }
  return paths;
}

class MatmulTest : public ::testing::TestWithParam<Case> {};

TEST_P(MatmulTest, StoreMatchesReference) {
  const Case c = GetParam();
  std::mt19937 rng(42);
  Tensor wsrc = RandomMatrix(c.n, c.k, rng, 0.05f);
  PackedWeight w = PackedWeight::Pack(wsrc, c.wdtype).value();
  Tensor xt = RandomMatrix(c.m, c.k, rng, 1.0f);
  std::vector<float> x(xt.span<float>().begin(), xt.span<float>().end());
  const int64_t kpad = 2 * w.k_pairs();
  std::vector<uint16_t> xb(static_cast<size_t>(c.m * kpad));
  std::vector<float> x_rounded(x.size());
  for (int64_t i = 0; i < c.m; ++i) {
    ConvertRowToBf16(&x[i * c.k], c.k, &xb[i * kpad], kpad);
    for (int64_t kk = 0; kk < c.k; ++kk) x_rounded[i * c.k + kk] = Bf16ToF32(xb[i * kpad + kk]);
  }
  const std::vector<double> ref = Reference(x, c.m, c.k, w, c.n);
  const std::vector<double> ref_rounded = Reference(x_rounded, c.m, c.k, w, c.n);
  ThreadPool pool(2);
  for (MatmulPath path : PathsFor(c.wdtype)) {
    SCOPED_TRACE(MatmulPathName(path));
    const bool dot = path == MatmulPath::kAvx512Bf16Dot;
    std::vector<float> y(static_cast<size_t>(c.m * c.n), -1.0f), y2(y.size(), -2.0f);
    MatmulJob job{.rows = c.m,
                  .x_f32 = x.data(),
                  .x_bf16 = xb.data(),
                  .ldx = dot ? kpad : c.k,
                  .w = &w,
                  .y_f32 = y.data(),
                  .ldy = c.n,
                  .path = path};
    RunMatmul(job, nullptr);
    job.y_f32 = y2.data();
    RunMatmul(job, &pool);
    const std::vector<double>& r = dot ? ref_rounded : ref;
    double max_err = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      max_err = std::max(max_err, std::fabs(y[i] - r[i]));
      ASSERT_EQ(y[i], y2[i]) << "thread count changed element " << i;
    }
    // |x| ~ 1, |w| ~ 0.05: sums of k terms of size ~0.05 in f32.
    EXPECT_LT(max_err, 2e-6 * std::sqrt(static_cast<double>(c.k)) + 1e-6) << "max_err " << max_err;
  }
}

TEST_P(MatmulTest, SwiGluMatchesReference) {
  const Case c = GetParam();
  std::mt19937 rng(7);
  Tensor gate = RandomMatrix(c.n, c.k, rng, 0.05f);
  Tensor up = RandomMatrix(c.n, c.k, rng, 0.05f);
  PackedWeight w = PackedWeight::PackGateUp(gate, up, c.wdtype).value();
  Tensor xt = RandomMatrix(c.m, c.k, rng, 1.0f);
  std::vector<float> x(xt.span<float>().begin(), xt.span<float>().end());
  const std::vector<double> gu = Reference(x, c.m, c.k, w, 2 * c.n);
  for (MatmulPath path : PathsFor(c.wdtype)) {
    if (path == MatmulPath::kAvx512Bf16Dot) continue;  // covered by the store test's rounding check
    SCOPED_TRACE(MatmulPathName(path));
    std::vector<float> h(static_cast<size_t>(c.m * c.n), -1.0f);
    MatmulJob job{.rows = c.m,
                  .x_f32 = x.data(),
                  .ldx = c.k,
                  .w = &w,
                  .y_f32 = h.data(),
                  .ldy = c.n,
                  .epilogue = Epilogue::kSwiGlu,
                  .path = path};
    RunMatmul(job, nullptr);
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t n = 0; n < c.n; ++n) {
        const double g = gu[i * 2 * c.n + n], u = gu[i * 2 * c.n + c.n + n];
        const double want = g / (1 + std::exp(-g)) * u;
        ASSERT_NEAR(h[i * c.n + n], want, 1e-5 + 1e-5 * std::fabs(want)) << i << "," << n;
      }
  }
}

TEST_P(MatmulTest, KRangeGivesBlockPartials) {
  const Case c = GetParam();
  if (c.k < 4) GTEST_SKIP();
  std::mt19937 rng(11);
  PackedWeight w = PackedWeight::Pack(RandomMatrix(c.n, c.k, rng, 0.05f), c.wdtype).value();
  Tensor xt = RandomMatrix(c.m, c.k, rng, 1.0f);
  std::vector<float> x(xt.span<float>().begin(), xt.span<float>().end());
  const int64_t kmid = (c.k / 4) * 2;  // even split point
  // Reference over [kmid, K) only.
  std::vector<float> x_tail = x;
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t kk = 0; kk < kmid; ++kk) x_tail[i * c.k + kk] = 0.0f;
  const std::vector<double> ref_tail = Reference(x_tail, c.m, c.k, w, c.n);
  for (MatmulPath path : PathsFor(c.wdtype)) {
    if (path == MatmulPath::kAvx512Bf16Dot) continue;
    SCOPED_TRACE(MatmulPathName(path));
    std::vector<float> y(static_cast<size_t>(c.m * c.n));
    MatmulJob job{.rows = c.m,
                  .x_f32 = x.data(),
                  .ldx = c.k,
                  .w = &w,
                  .y_f32 = y.data(),
                  .ldy = c.n,
                  .path = path,
                  .k_begin = kmid};
    RunMatmul(job, nullptr);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], ref_tail[i], 1e-5) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, MatmulTest,
                         ::testing::Values(Case{1, 16, 32, DType::kBF16}, Case{1, 40, 33, DType::kBF16},
                                           Case{5, 100, 64, DType::kF32}, Case{7, 33, 17, DType::kF32},
                                           Case{13, 130, 96, DType::kBF16}, Case{100, 70, 130, DType::kBF16},
                                           Case{200, 64, 48, DType::kF32}));

}  // namespace
}  // namespace moerun
