// Every row of the kernel table this CPU supports, for every weight format, against a double-
// precision oracle on the same stored weights and the activations as the row sees them (f32
// exact, bf16-rounded, or q8-quantised): llama.cpp's test-backend-ops idea. On an AVX2-only
// machine the avx2 and ref rows run; on an AVX-512 machine all of them.
#include "kernels/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "../testing/load_only_blocks.h"
#include "kernels/kernel_table.h"
#include "kernels/linear.h"
#include "kernels/row_ops.h"

namespace moerun {
namespace {

struct Shape3 {
  int64_t m, n, k;
};

Tensor RandomMatrix(int64_t rows, int64_t cols, std::mt19937& rng, float scale) {
  Tensor t = Tensor::Zeros(DType::kF32, {rows, cols}).value();
  std::normal_distribution<float> d(0.0f, scale);
  for (float& v : t.span<float>()) v = d(rng);
  return t;
}

// K rounded up to the format's alignment (and to at least one block).
int64_t AlignK(int64_t k, WeightFormat f) {
  const int64_t a = Traits(f).k_alignment;
  return std::max(a, (k + a - 1) / a * a);
}

struct Oracle {
  std::vector<double> y;    // [m, n_rows] sum_k xs[k] * W[n][k]
  std::vector<double> mag;  // [m, n_rows] sum_k |xs[k] * W[n][k]|, the error scale
};

// Over k in [k0, k1), with x as the kernel row sees it.
Oracle Reference(const MatmulKernel& kern, const std::vector<float>& x, int64_t m, int64_t k,
                 const PackedWeight& w, int64_t n_rows, int64_t k0 = 0, int64_t k1 = -1) {
  if (k1 < 0) k1 = k;
  Oracle o{std::vector<double>(static_cast<size_t>(m * n_rows)),
           std::vector<double>(static_cast<size_t>(m * n_rows))};
  std::vector<std::vector<double>> rows;
  for (int64_t n = 0; n < n_rows; ++n) rows.push_back(w.Row(n));
  for (int64_t i = 0; i < m; ++i) {
    const std::vector<double> xs = ActivationsAsSeen(kern.acts, x.data() + i * k, k);
    for (int64_t n = 0; n < n_rows; ++n) {
      double s = 0, a = 0;
      for (int64_t kk = k0; kk < k1; ++kk) {
        s += xs[kk] * rows[n][kk];
        a += std::fabs(xs[kk] * rows[n][kk]);
      }
      o.y[i * n_rows + n] = s;
      o.mag[i * n_rows + n] = a;
    }
  }
  return o;
}

std::vector<const MatmulKernel*> SupportedRows() {
  std::vector<const MatmulKernel*> rows;
  for (const MatmulKernel& k : AllKernels())
    if (k.supported(GetCpuFeatures())) rows.push_back(&k);
  return rows;
}

std::string RowName(const ::testing::TestParamInfo<const MatmulKernel*>& info) {
  std::string s = info.param->name;
  for (char& ch : s)
    if (ch == '-') ch = '_';
  return s;
}

class KernelRowTest : public ::testing::TestWithParam<const MatmulKernel*> {
 protected:
  const MatmulKernel& kern() const { return *GetParam(); }
  MatmulJob Job(const PackedWeight& w, const ActView& x, int64_t m, float* y, int64_t ldy) const {
    return MatmulJob{.rows = m, .x = x, .w = &w, .kernel = &kern(), .y = y, .ldy = ldy};
  }
};

constexpr Shape3 kShapes[] = {{1, 16, 32},   {1, 40, 33},    {5, 100, 64}, {7, 33, 17},
                              {13, 130, 96}, {100, 70, 300}, {200, 64, 48}};

TEST_P(KernelRowTest, StoreMatchesReference) {
  for (const Shape3& s : kShapes) {
    const int64_t k = AlignK(s.k, kern().weights);
    SCOPED_TRACE(testing::Message() << "m=" << s.m << " n=" << s.n << " k=" << k);
    std::mt19937 rng(42);
    PackedWeight w = PackedWeight::Pack(RandomMatrix(s.n, k, rng, 0.05f), kern().weights).value();
    Tensor xt = RandomMatrix(s.m, k, rng, 1.0f);
    std::vector<float> x(xt.span<float>().begin(), xt.span<float>().end());
    ActivationBuffer buf;
    std::vector<float> y(static_cast<size_t>(s.m * s.n), -1.0f);
    RunMatmul(Job(w, buf.Prepare(kern().acts, x.data(), s.m, k, k), s.m, y.data(), s.n), nullptr);
    const Oracle ref = Reference(kern(), x, s.m, k, w, s.n);
    for (size_t i = 0; i < y.size(); ++i)
      ASSERT_NEAR(y[i], ref.y[i], 1e-5 * ref.mag[i] + 1e-6) << "element " << i;
  }
}

TEST_P(KernelRowTest, SwiGluMatchesReference) {
  for (const Shape3& s : kShapes) {
    const int64_t k = AlignK(s.k, kern().weights);
    SCOPED_TRACE(testing::Message() << "m=" << s.m << " n=" << s.n << " k=" << k);
    std::mt19937 rng(7);
    Tensor gate = RandomMatrix(s.n, k, rng, 0.05f), up = RandomMatrix(s.n, k, rng, 0.05f);
    PackedWeight w = PackedWeight::PackGateUp(gate, up, kern().weights).value();
    Tensor xt = RandomMatrix(s.m, k, rng, 1.0f);
    std::vector<float> x(xt.span<float>().begin(), xt.span<float>().end());
    ActivationBuffer buf;
    std::vector<float> h(static_cast<size_t>(s.m * s.n), -1.0f);
    MatmulJob job = Job(w, buf.Prepare(kern().acts, x.data(), s.m, k, k), s.m, h.data(), s.n);
    job.epilogue = Epilogue::kSwiGlu;
    RunMatmul(job, nullptr);
    const Oracle gu = Reference(kern(), x, s.m, k, w, 2 * s.n);
    for (int64_t i = 0; i < s.m; ++i)
      for (int64_t n = 0; n < s.n; ++n) {
        const size_t gi = static_cast<size_t>(i * 2 * s.n + n), ui = gi + static_cast<size_t>(s.n);
        const double g = gu.y[gi], u = gu.y[ui];
        const double want = g / (1 + std::exp(-g)) * u;
        // d(silu(g) u) = silu'(g) u dg + silu(g) du, |silu'| <= 1.1.
        const double tol = 1e-5 * (1.1 * std::fabs(u) * gu.mag[gi] + std::fabs(g) * gu.mag[ui]) + 1e-6;
        ASSERT_NEAR(h[i * s.n + n], want, tol) << i << "," << n;
      }
  }
}

TEST_P(KernelRowTest, KRangeGivesBlockPartials) {
  const int64_t align = std::max<int64_t>(Traits(kern().weights).k_alignment, 2);
  const int64_t m = 9, n = 37, k = 4 * align;
  std::mt19937 rng(11);
  PackedWeight w = PackedWeight::Pack(RandomMatrix(n, k, rng, 0.05f), kern().weights).value();
  Tensor xt = RandomMatrix(m, k, rng, 1.0f);
  std::vector<float> x(xt.span<float>().begin(), xt.span<float>().end());
  ActivationBuffer buf;
  const ActView view = buf.Prepare(kern().acts, x.data(), m, k, k);
  for (int64_t b = 0; b < 4; ++b) {
    std::vector<float> y(static_cast<size_t>(m * n));
    MatmulJob job = Job(w, view, m, y.data(), n);
    job.k_begin = b * align;
    job.k_end = (b + 1) * align;
    RunMatmul(job, nullptr);
    const Oracle ref = Reference(kern(), x, m, k, w, n, job.k_begin, job.k_end);
    for (size_t i = 0; i < y.size(); ++i)
      ASSERT_NEAR(y[i], ref.y[i], 1e-5 * ref.mag[i] + 1e-6) << b << ":" << i;
  }
}

// Batch invariance: a row's outputs do not depend on which other rows share the batch.
TEST_P(KernelRowTest, RowsAreBatchInvariant) {
  const int64_t k = AlignK(300, kern().weights), n = 50, m = 37;
  std::mt19937 rng(5);
  PackedWeight w = PackedWeight::Pack(RandomMatrix(n, k, rng, 0.05f), kern().weights).value();
  Tensor xt = RandomMatrix(m, k, rng, 1.0f);
  std::vector<float> x(xt.span<float>().begin(), xt.span<float>().end());
  ActivationBuffer all_buf, one_buf;
  std::vector<float> all(static_cast<size_t>(m * n)), one(static_cast<size_t>(n));
  RunMatmul(Job(w, all_buf.Prepare(kern().acts, x.data(), m, k, k), m, all.data(), n), nullptr);
  for (int64_t i = 0; i < m; i += 6) {
    RunMatmul(Job(w, one_buf.Prepare(kern().acts, x.data() + i * k, 1, k, k), 1, one.data(), n), nullptr);
    for (int64_t j = 0; j < n; ++j) ASSERT_EQ(one[j], all[i * n + j]) << "row " << i << " col " << j;
  }
}

// One parallel loop over jobs of few rows (long streaming runs of blocks) and of many (short
// runs), with SwiGLU and deterministic K-blocks, on 2 and 3 threads: every output has the bits of
// its job run alone on one thread (another task decomposition), and no output is left unwritten.
TEST_P(KernelRowTest, PooledJobsGiveTheOneThreadBits) {
  const int64_t k = 4 * AlignK(64, kern().weights), n = 600;  // 38 blocks of 16 columns
  std::mt19937 rng(17);
  const Tensor gate = RandomMatrix(n, k, rng, 0.05f), up = RandomMatrix(n, k, rng, 0.05f);
  const PackedWeight w = PackedWeight::Pack(gate, kern().weights).value();
  const PackedWeight gu = PackedWeight::PackGateUp(gate, up, kern().weights).value();
  struct Case {
    int64_t rows;
    bool swiglu;
    int64_t k_blocks;
  };
  const Case cases[] = {{1, false, 1}, {1, true, 1},  {3, false, 2}, {kMatmulStreamMaxRows, true, 1},
                        {5, false, 1}, {40, true, 1}, {9, false, 2}};
  const Tensor xt = RandomMatrix(40, k, rng, 1.0f);
  ActivationBuffer buf;
  const ActView x = buf.Prepare(kern().acts, xt.data<float>(), 40, k, k);
  for (int threads : {2, 3}) {
    SCOPED_TRACE(testing::Message() << threads << " threads");
    std::vector<MatmulJob> jobs;
    std::vector<std::vector<float>> pooled, alone;
    for (const Case& c : cases) {
      const int64_t ldy = c.k_blocks * n;  // y [rows, k_blocks, n]
      pooled.emplace_back(static_cast<size_t>(c.rows * ldy), -1.0f);
      alone.emplace_back(static_cast<size_t>(c.rows * ldy), -2.0f);
      MatmulJob job = Job(c.swiglu ? gu : w, x, c.rows, nullptr, ldy);
      if (c.swiglu) job.epilogue = Epilogue::kSwiGlu;
      job.k_blocks = c.k_blocks;
      job.block_stride = n;
      jobs.push_back(job);
    }
    for (size_t j = 0; j < jobs.size(); ++j) {
      jobs[j].y = alone[j].data();
      RunMatmul(jobs[j], nullptr);
      jobs[j].y = pooled[j].data();
    }
    ThreadPool pool(threads);
    RunMatmuls(jobs, &pool);
    for (size_t j = 0; j < jobs.size(); ++j) {
      ASSERT_EQ(std::memcmp(pooled[j].data(), alone[j].data(), pooled[j].size() * sizeof(float)), 0)
          << "job " << j << " (" << cases[j].rows << " rows)";
    }
  }
}

// Decode loops (every job streams): one-row jobs, plain and gate/up, run as several streams per
// thread where the row can (kernel_table.h's StreamsOf), and a loop with a 3-row job beside them
// (one stream per thread). On 1-3 threads every output has the bits of its job run alone.
TEST_P(KernelRowTest, StreamingLoopsGiveTheOneThreadBits) {
  const int64_t k = 4 * AlignK(64, kern().weights), n = 600;  // 38 blocks of 16 columns
  std::mt19937 rng(29);
  const Tensor gate = RandomMatrix(n, k, rng, 0.05f), up = RandomMatrix(n, k, rng, 0.05f);
  const PackedWeight w = PackedWeight::Pack(gate, kern().weights).value();
  const PackedWeight gu = PackedWeight::PackGateUp(gate, up, kern().weights).value();
  const Tensor xt = RandomMatrix(8, k, rng, 1.0f);
  ActivationBuffer buf;
  const ActView x = buf.Prepare(kern().acts, xt.data<float>(), 8, k, k);
  for (const bool with_three_rows : {false, true}) {
    for (int threads : {1, 2, 3}) {
      SCOPED_TRACE(testing::Message() << threads << " threads" << (with_three_rows ? ", a 3-row job" : ""));
      std::vector<MatmulJob> jobs;
      std::vector<std::vector<float>> pooled, alone;
      for (int j = 0; j < 7; ++j) {
        const bool swiglu = j % 3 == 1;
        const int64_t rows = with_three_rows && j == 6 ? 3 : 1;
        MatmulJob job = Job(swiglu ? gu : w, x, rows, nullptr, n);
        job.x = OffsetRows(x, j % 5);  // its own activation row(s)
        if (swiglu) job.epilogue = Epilogue::kSwiGlu;
        pooled.emplace_back(static_cast<size_t>(rows * n), -1.0f);
        alone.emplace_back(static_cast<size_t>(rows * n), -2.0f);
        job.y = alone.back().data();
        RunMatmul(job, nullptr);
        jobs.push_back(job);
      }
      for (size_t j = 0; j < jobs.size(); ++j) jobs[j].y = pooled[j].data();
      ThreadPool pool(threads);
      RunMatmuls(jobs, &pool);
      for (size_t j = 0; j < jobs.size(); ++j) {
        ASSERT_EQ(std::memcmp(pooled[j].data(), alone[j].data(), pooled[j].size() * sizeof(float)), 0)
            << "job " << j;
      }
    }
  }
}

// RunMatmulsOnThisThread: one-row jobs run as streams (where the row has them) beside a job of
// three rows and gate/up jobs, each job the bits of RunMatmul on it alone.
TEST_P(KernelRowTest, OnThisThreadGivesEachJobsOwnBits) {
  const int64_t k = 2 * AlignK(64, kern().weights), n = 200;
  std::mt19937 rng(31);
  const Tensor gate = RandomMatrix(n, k, rng, 0.05f), up = RandomMatrix(n, k, rng, 0.05f);
  const PackedWeight w = PackedWeight::Pack(gate, kern().weights).value();
  const PackedWeight gu = PackedWeight::PackGateUp(gate, up, kern().weights).value();
  const Tensor xt = RandomMatrix(9, k, rng, 1.0f);
  ActivationBuffer buf;
  const ActView x = buf.Prepare(kern().acts, xt.data<float>(), 9, k, k);
  std::vector<MatmulJob> jobs;
  std::vector<std::vector<float>> together, alone;
  for (int j = 0; j < 9; ++j) {
    const bool swiglu = j == 5, three_rows = j == 2;
    const int64_t rows = three_rows ? 3 : 1;
    MatmulJob job = Job(swiglu ? gu : w, OffsetRows(x, j % 6), rows, nullptr, n);
    if (swiglu) job.epilogue = Epilogue::kSwiGlu;
    together.emplace_back(static_cast<size_t>(rows * n), -1.0f);
    alone.emplace_back(static_cast<size_t>(rows * n), -2.0f);
    job.y = alone.back().data();
    RunMatmul(job, nullptr);
    job.y = together.back().data();
    jobs.push_back(job);
  }
  RunMatmulsOnThisThread(jobs);
  for (size_t j = 0; j < jobs.size(); ++j) {
    ASSERT_EQ(std::memcmp(together[j].data(), alone[j].data(), together[j].size() * sizeof(float)), 0)
        << "job " << j;
  }
}

// MatmulJob::quantize_into: on 1-3 threads, in streaming loops (one-row jobs) and chunked ones,
// plain and gate/up, each job's 8-bit rows are bit for bit QuantizeActivationRow of its own f32
// output rows (what ActivationBuffer would make of them), and the f32 output is unchanged.
TEST_P(KernelRowTest, QuantizeIntoGivesTheRowsOfItsOutput) {
  const int64_t k = 4 * AlignK(64, kern().weights), n = 600;  // 600 columns: a short last group
  std::mt19937 rng(31);
  const Tensor gate = RandomMatrix(n, k, rng, 0.05f), up = RandomMatrix(n, k, rng, 0.05f);
  const PackedWeight w = PackedWeight::Pack(gate, kern().weights).value();
  const PackedWeight gu = PackedWeight::PackGateUp(gate, up, kern().weights).value();
  const Tensor xt = RandomMatrix(42, k, rng, 1.0f);  // 40 rows from offsets 0-2
  ActivationBuffer buf;
  const ActView x = buf.Prepare(kern().acts, xt.data<float>(), 42, k, k);
  const int64_t ldq = (n + 31) / 32 * 32, ldb = ldq / 32;
  for (const int64_t rows : {int64_t{1}, int64_t{5}, int64_t{40}}) {
    for (int threads : {1, 2, 3}) {
      SCOPED_TRACE(testing::Message() << rows << " rows, " << threads << " threads");
      std::vector<MatmulJob> jobs;
      std::vector<std::vector<float>> y, alone;
      std::vector<std::vector<int8_t>> q;
      std::vector<std::vector<float>> d;
      std::vector<std::vector<int32_t>> sum;
      for (int j = 0; j < 5; ++j) {
        const bool swiglu = j % 2 == 1;
        MatmulJob job = Job(swiglu ? gu : w, OffsetRows(x, j % 3), rows, nullptr, n);
        if (swiglu) job.epilogue = Epilogue::kSwiGlu;
        alone.emplace_back(static_cast<size_t>(rows * n), -2.0f);
        job.y = alone.back().data();
        RunMatmul(job, nullptr);  // without quantize_into
        y.emplace_back(static_cast<size_t>(rows * n), -1.0f);
        q.emplace_back(static_cast<size_t>(rows * ldq), int8_t{99});
        d.emplace_back(static_cast<size_t>(rows * ldb), -1.0f);
        sum.emplace_back(static_cast<size_t>(rows * ldb), -1);
        jobs.push_back(job);
      }
      for (size_t j = 0; j < jobs.size(); ++j) {
        jobs[j].y = y[j].data();
        jobs[j].quantize_into = Q8Rows{q[j].data(), d[j].data(), sum[j].data(), ldq, ldb};
      }
      ThreadPool pool(threads);
      RunMatmuls(jobs, threads == 1 ? nullptr : &pool);
      for (size_t j = 0; j < jobs.size(); ++j) {
        ASSERT_EQ(std::memcmp(y[j].data(), alone[j].data(), y[j].size() * sizeof(float)), 0) << "job " << j;
        for (int64_t r = 0; r < rows; ++r) {
          std::vector<int8_t> want_q(static_cast<size_t>(ldq));
          std::vector<float> want_d(static_cast<size_t>(ldb));
          std::vector<int32_t> want_s(static_cast<size_t>(ldb));
          QuantizeActivationRow(y[j].data() + r * n, n, want_q.data(), want_d.data(), want_s.data());
          EXPECT_EQ(std::memcmp(q[j].data() + r * ldq, want_q.data(), static_cast<size_t>(ldq)), 0)
              << "job " << j << " row " << r;
          EXPECT_EQ(std::memcmp(d[j].data() + r * ldb, want_d.data(), want_d.size() * sizeof(float)), 0)
              << "job " << j << " row " << r;
          EXPECT_EQ(std::memcmp(sum[j].data() + r * ldb, want_s.data(), want_s.size() * sizeof(int32_t)), 0)
              << "job " << j << " row " << r;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Table, KernelRowTest, ::testing::ValuesIn(SupportedRows()), RowName);

// A decode loop of mixed formats, as a Q4_K GGUF's down projections (Q5_0 routed experts, a Q4_K
// shared expert): on each ISA this CPU has, the jobs whose row has a streams entry run as streams,
// the others one task at a time among them; on 1-3 threads every output has its job's bits alone.
TEST(MixedFormatDecodeLoop, EachJobGetsItsOneThreadBits) {
  const int64_t k = 512, n = 600;  // 38 blocks of 16 columns; K a multiple of 256 (Q4_K)
  std::mt19937 rng(31);
  const PackedWeight routed = PackedWeight::Pack(RandomMatrix(n, k, rng, 0.05f), WeightFormat::kQ5_0).value();
  const PackedWeight shared = PackedWeight::Pack(RandomMatrix(n, k, rng, 0.05f), WeightFormat::kQ4_K).value();
  const Tensor xt = RandomMatrix(6, k, rng, 1.0f);
  for (const char* isa : {"ref", "avx2", "avx512vnni"}) {
    if (!ValidateKernelPolicy({.forced = isa}).ok()) continue;
    SCOPED_TRACE(isa);
    const MatmulKernel& q5 = SelectKernel(WeightFormat::kQ5_0, 1, {.forced = isa});
    const MatmulKernel& q4k = SelectKernel(WeightFormat::kQ4_K, 1, {.forced = isa});
    ASSERT_EQ(q5.acts, q4k.acts);
    ActivationBuffer buf;
    const ActView x = buf.Prepare(q5.acts, xt.data<float>(), 6, k, k);
    for (int threads : {1, 2, 3}) {
      SCOPED_TRACE(testing::Message() << threads << " threads");
      std::vector<MatmulJob> jobs;
      std::vector<std::vector<float>> pooled(7, std::vector<float>(n, -1.0f)),
          alone(7, std::vector<float>(n, -2.0f));
      for (int j = 0; j < 7; ++j) {
        const bool is_shared = j == 3;
        MatmulJob job{.rows = 1,
                      .x = OffsetRows(x, j % 6),
                      .w = is_shared ? &shared : &routed,
                      .kernel = is_shared ? &q4k : &q5,
                      .y = alone[j].data(),
                      .ldy = n};
        RunMatmul(job, nullptr);
        job.y = pooled[j].data();
        jobs.push_back(job);
      }
      ThreadPool pool(threads);
      RunMatmuls(jobs, &pool);
      for (size_t j = 0; j < jobs.size(); ++j) {
        ASSERT_EQ(std::memcmp(pooled[j].data(), alone[j].data(), n * sizeof(float)), 0) << "job " << j;
      }
    }
  }
}

// Gathered rows (an expert-ordered MoE batch: a token once per expert it goes to) give the bytes
// Prepare gives for the same rows copied out by hand, in every format; repeats are copies.
TEST(ActivationBuffer, PrepareGatheredEqualsPrepareOfTheGatheredRows) {
  constexpr int64_t k = 77, ldx = 80;  // K not a multiple of 32 or 2: padded blocks and pairs
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(5 * ldx));
  for (float& v : x) v = nd(rng);
  const std::vector<int64_t> src = {4, 0, 4, 2, 0, 4, 1, 3, 3, 4, 0};  // first seen out of order
  std::vector<float> copied(src.size() * k);
  for (size_t r = 0; r < src.size(); ++r) std::copy_n(x.data() + src[r] * ldx, k, copied.data() + r * k);
  const int64_t rows = static_cast<int64_t>(src.size());
  ThreadPool pool(2);
  for (ActFormat f : {ActFormat::kF32, ActFormat::kBf16Pairs, ActFormat::kQ8Block32}) {
    SCOPED_TRACE(ActFormatName(f));
    ActivationBuffer a, b;
    const ActView got = a.PrepareGathered(f, x.data(), src, k, ldx, &pool);
    const ActView want = b.Prepare(f, copied.data(), rows, k, k);
    ASSERT_EQ(got.format, f);
    for (int64_t r = 0; r < rows; ++r) {
      switch (f) {
        case ActFormat::kF32:  // the same bits (NaN included) is the point
          // NOLINTNEXTLINE(bugprone-suspicious-memory-comparison)
          ASSERT_EQ(std::memcmp(got.f32 + r * got.ld, want.f32 + r * want.ld, k * sizeof(float)), 0) << r;
          break;
        case ActFormat::kBf16Pairs:
          ASSERT_EQ(got.ld, want.ld);
          ASSERT_EQ(std::memcmp(got.bf16 + r * got.ld, want.bf16 + r * want.ld, got.ld * 2), 0) << r;
          break;
        case ActFormat::kQ8Block32:
          ASSERT_EQ(got.q8.ldq, want.q8.ldq);
          ASSERT_EQ(std::memcmp(got.q8.q + r * got.q8.ldq, want.q8.q + r * want.q8.ldq, got.q8.ldq), 0) << r;
          ASSERT_EQ(std::memcmp(got.q8.d + r * got.q8.ldb, want.q8.d + r * want.q8.ldb, got.q8.ldb * 4), 0)
              << r;
          ASSERT_EQ(std::memcmp(got.q8.sum + r * got.q8.ldb, want.q8.sum + r * want.q8.ldb, got.q8.ldb * 4),
                    0)
              << r;
          break;
      }
    }
  }
}

// Rows of different widths (routed experts' down inputs beside a wider shared expert's): each row
// gets the bytes Prepare gives it alone at its own width, and nothing past its width is read (NaN
// there would show in the block's scale and sum).
TEST(ActivationBuffer, PrepareRowWidthsEqualsPrepareOfEachRowAlone) {
  constexpr int64_t ldx = 96;
  const std::vector<int64_t> widths = {77, 64, 96, 33, 2, 64, 90, 77, 50};  // >= 8 rows: the pool runs
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t rows = static_cast<int64_t>(widths.size());
  std::vector<float> x(static_cast<size_t>(rows * ldx), std::numeric_limits<float>::quiet_NaN());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < widths[r]; ++i) x[r * ldx + i] = nd(rng);
  }
  ThreadPool pool(2);
  for (ActFormat f : {ActFormat::kF32, ActFormat::kBf16Pairs, ActFormat::kQ8Block32}) {
    SCOPED_TRACE(ActFormatName(f));
    ActivationBuffer a;
    const ActView got = a.PrepareRowWidths(f, x.data(), widths, ldx, &pool);
    ASSERT_EQ(got.format, f);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t w = widths[r];
      ActivationBuffer b;
      const ActView want = b.Prepare(f, x.data() + r * ldx, 1, w, w);
      switch (f) {
        case ActFormat::kF32:
          ASSERT_EQ(got.f32 + r * got.ld, x.data() + r * ldx) << r;  // the rows as given
          break;
        case ActFormat::kBf16Pairs:
          ASSERT_EQ(std::memcmp(got.bf16 + r * got.ld, want.bf16, want.ld * 2), 0) << r;
          break;
        case ActFormat::kQ8Block32:
          ASSERT_EQ(got.q8.ldq, 96);
          ASSERT_EQ(std::memcmp(got.q8.q + r * got.q8.ldq, want.q8.q, want.q8.ldq), 0) << r;
          ASSERT_EQ(std::memcmp(got.q8.d + r * got.q8.ldb, want.q8.d, want.q8.ldb * 4), 0) << r;
          ASSERT_EQ(std::memcmp(got.q8.sum + r * got.q8.ldb, want.q8.sum, want.q8.ldb * 4), 0) << r;
          break;
      }
    }
  }
}

// Runs of blocks: whole kernel calls, at least one, and about kMatmulTasksPerThread per thread.
TEST(MatmulRunBlocks, IsAMultipleOfTheCallUnitGivingTasksPerThread) {
  EXPECT_EQ(MatmulRunBlocks(0, 2), kMatmulGroupBlocks);
  EXPECT_EQ(MatmulRunBlocks(1, 2), kMatmulGroupBlocks);
  EXPECT_EQ(MatmulRunBlocks(1408, 2), 60);  // 6 experts' gate/up + the shared expert's at decode
  for (int threads : {1, 2, 3, 8}) {
    for (int64_t units : {int64_t{7}, int64_t{96}, int64_t{1000}, int64_t{123457}}) {
      const int64_t run = MatmulRunBlocks(units, threads);
      EXPECT_EQ(run % kMatmulGroupBlocks, 0) << units << " units, " << threads << " threads";
      const int64_t tasks = (units + run - 1) / run;
      EXPECT_LE(tasks, threads * kMatmulTasksPerThread) << units << " units, " << threads << " threads";
      if (run > kMatmulGroupBlocks) {  // no smaller run would also keep to the task budget
        const int64_t shorter = run - kMatmulGroupBlocks;
        EXPECT_GT((units + shorter - 1) / shorter, threads * kMatmulTasksPerThread);
      }
    }
  }
}

// The task plan: every (job, chunk, block) in exactly one task; compute-bound jobs in whole kernel
// calls; streaming (decode) runs no longer than MatmulRunBlocks, shrinking to single blocks (gate/up
// pairs) at the end of the loop, where the threads would otherwise wait for one long run; a small
// decode matmul (the router's 64 rows) is spread over the threads instead of being one task.
TEST(PlanMatmulTasks, CoversEveryBlockOnceWithShortRunsAtTheEnd) {
  std::mt19937 rng(7);
  const PackedWeight big = PackedWeight::Pack(RandomMatrix(16 * 88, 32, rng, 1), WeightFormat::kF32).value();
  const PackedWeight small = PackedWeight::Pack(RandomMatrix(64, 32, rng, 1), WeightFormat::kF32).value();
  const Tensor g = RandomMatrix(16 * 44, 32, rng, 1), u = RandomMatrix(16 * 44, 32, rng, 1);
  const PackedWeight gate_up = PackedWeight::PackGateUp(g, u, WeightFormat::kF32).value();
  ASSERT_TRUE(gate_up.interleaved_gate_up());
  for (int threads : {1, 2, 3, 8}) {
    for (int64_t rows : {int64_t{1}, int64_t{4}, int64_t{5}, int64_t{400}}) {
      SCOPED_TRACE(std::to_string(threads) + " threads, " + std::to_string(rows) + " rows");
      // (A job of no rows, e.g. a rank's share of a batch that has none for it, has no tasks.)
      std::vector<MatmulJob> jobs = {{.rows = rows, .w = &gate_up},
                                     {.rows = 0, .w = &big},
                                     {.rows = 1, .w = &small},
                                     {.rows = rows, .w = &big}};
      const std::vector<MatmulTask> tasks = PlanMatmulTasks(jobs, threads);
      std::vector<std::vector<int>> seen(jobs.size());
      int64_t units = 0;
      for (size_t j = 0; j < jobs.size(); ++j) {
        const int64_t chunks = (jobs[j].rows + kMatmulMaxChunkRows - 1) / kMatmulMaxChunkRows;
        seen[j].assign(static_cast<size_t>(chunks * jobs[j].w->n_blocks()), 0);
        units += chunks * jobs[j].w->n_blocks();
      }
      const int64_t longest = MatmulRunBlocks(units, threads);
      for (const MatmulTask& t : tasks) {
        ASSERT_LT(t.job, jobs.size());
        const MatmulJob& job = jobs[t.job];
        ASSERT_GT(job.rows, 0) << "a task for a job of no rows";
        ASSERT_LT(t.b0, t.b1);
        ASSERT_LE(t.b1, job.w->n_blocks());
        if (job.w->interleaved_gate_up()) {
          EXPECT_EQ(t.b0 % 2, 0);
        }
        if (job.rows > kMatmulStreamMaxRows) {
          EXPECT_EQ(t.b0 % kMatmulGroupBlocks, 0);
          EXPECT_TRUE(t.b1 - t.b0 == kMatmulGroupBlocks || t.b1 == job.w->n_blocks());
        } else {
          EXPECT_EQ(t.chunk, 0);
          EXPECT_LE(t.b1 - t.b0, longest + 1);
        }
        for (int64_t b = t.b0; b < t.b1; ++b)
          ++seen[t.job][static_cast<size_t>(t.chunk * job.w->n_blocks() + b)];
      }
      for (size_t j = 0; j < jobs.size(); ++j) {
        for (size_t i = 0; i < seen[j].size(); ++i) {
          ASSERT_EQ(seen[j][i], 1) << "job " << j << " unit " << i;
        }
      }
      if (rows <= kMatmulStreamMaxRows && threads > 1) {
        const MatmulTask& last = tasks.back();  // the big job's last run: one block
        EXPECT_EQ(last.b1 - last.b0, 1);
        const MatmulJob router{.rows = rows, .w = &small};  // alone in its loop
        EXPECT_GE(PlanMatmulTasks(std::span<const MatmulJob>(&router, 1), threads).size(), 2u);
      }
    }
  }
}

// The streaming plan (every job of at most kMatmulStreamMaxRows rows): each job's blocks once, in
// memory order, in runs of at most run_bytes (kMatmulStreamTaskBytes by default, whole gate/up
// pairs, at least one), and at least 2 x threads runs when the loop has that many units (so the
// contiguous schedule has something to hand over at the end).
TEST(PlanStreamingMatmulTasks, CoversEveryBlockOnceInMemoryOrderInShortRuns) {
  std::mt19937 rng(9);
  const PackedWeight big =
      PackedWeight::Pack(RandomMatrix(16 * 88, 1024, rng, 1), WeightFormat::kQ4_0).value();
  const PackedWeight small = PackedWeight::Pack(RandomMatrix(64, 64, rng, 1), WeightFormat::kF32).value();
  const Tensor g = RandomMatrix(16 * 44, 2048, rng, 1), u = RandomMatrix(16 * 44, 2048, rng, 1);
  const PackedWeight gate_up = PackedWeight::PackGateUp(g, u, WeightFormat::kQ8_0).value();
  ASSERT_GT(gate_up.block_bytes(), kMatmulStreamTaskBytes / 32);  // so the byte bound matters
  for (const auto& [threads, run_bytes] : {std::pair{1, kMatmulStreamTaskBytes},
                                           {2, kMatmulStreamTaskBytes},
                                           {3, kMatmulStreamTaskBytes},
                                           {8, kMatmulStreamTaskBytes},
                                           {1, kMatmulOneStreamTaskBytes},
                                           {2, kMatmulOneStreamTaskBytes}}) {
    SCOPED_TRACE(std::to_string(threads) + " threads, runs of " + std::to_string(run_bytes) + " bytes");
    std::vector<MatmulJob> jobs = {{.rows = 1, .w = &gate_up},
                                   {.rows = 0, .w = &big},  // no rows: no tasks
                                   {.rows = 4, .w = &small},
                                   {.rows = 2, .w = &big, .k_begin = 512}};  // half of K streams
    const std::vector<MatmulTask> tasks = PlanStreamingMatmulTasks(jobs, threads, run_bytes);
    std::vector<std::vector<int>> seen(jobs.size());
    size_t longest = 0;  // bytes of the longest run
    for (size_t j = 0; j < jobs.size(); ++j) seen[j].assign(static_cast<size_t>(jobs[j].w->n_blocks()), 0);
    size_t prev_job = 0;
    int64_t prev_b1 = 0;
    for (const MatmulTask& t : tasks) {
      ASSERT_LT(t.job, jobs.size());
      const MatmulJob& job = jobs[t.job];
      ASSERT_GT(job.rows, 0) << "a task for a job of no rows";
      EXPECT_EQ(t.chunk, 0);
      ASSERT_LT(t.b0, t.b1);
      ASSERT_LE(t.b1, job.w->n_blocks());
      // In memory order: each job's runs follow each other, jobs in the loop's order.
      if (t.job == prev_job) {
        EXPECT_EQ(t.b0, prev_b1);
      } else {
        EXPECT_GT(t.job, prev_job);
        EXPECT_EQ(t.b0, 0);
      }
      prev_job = t.job;
      prev_b1 = t.b1;
      const int64_t unit = job.w->interleaved_gate_up() ? 2 : 1;
      EXPECT_EQ(t.b0 % unit, 0);
      const size_t bytes = job.w->block_bytes() * static_cast<size_t>(t.b1 - t.b0) *
                           static_cast<size_t>(job.KEnd() - job.k_begin) /
                           static_cast<size_t>(job.w->in_features());
      EXPECT_TRUE(bytes <= run_bytes || t.b1 - t.b0 == unit || t.b1 == job.w->n_blocks())
          << bytes << " bytes in job " << t.job;
      longest = std::max(longest, bytes);
      for (int64_t b = t.b0; b < t.b1; ++b) ++seen[t.job][static_cast<size_t>(b)];
    }
    for (size_t j = 0; j < jobs.size(); ++j) {
      for (size_t i = 0; i < seen[j].size(); ++i)
        ASSERT_EQ(seen[j][i], jobs[j].rows > 0 ? 1 : 0) << j << " " << i;
    }
    // One thread: the loop's share is long, so the byte bound sets the runs (the longest run is
    // within one gate/up pair of run_bytes: the longer bound gives longer runs).
    if (threads == 1) {
      EXPECT_GT(longest + 2 * gate_up.block_bytes(), run_bytes);
    }
    const MatmulJob router{.rows = 1, .w = &small};  // 4 blocks alone in its loop
    EXPECT_EQ(PlanStreamingMatmulTasks(std::span<const MatmulJob>(&router, 1), threads).size(),
              threads == 1 ? 2u : 4u);
  }
}

TEST(KernelTable, EveryFormatHasRefAvx2AndAvx512Rows) {
  for (const WeightFormatTraits& f : AllWeightFormats()) {
    bool ref = false, avx2 = false, avx512 = false;
    for (const MatmulKernel& k : AllKernels()) {
      if (k.weights != f.format) continue;
      ref |= std::string(k.isa) == "ref";
      avx2 |= std::string(k.isa) == "avx2";
      avx512 |= std::string(k.isa).rfind("avx512", 0) == 0;
    }
    EXPECT_TRUE(ref && avx2 && avx512) << f.name;
  }
}

// The integer rows (q8 activations, any ISA) return the ref row's bits: every block format is
// interleaved and its kernels perform the reference's f32 operations (kernels/quant_dot.h), over
// the whole K, a block-aligned K range (as deterministic K-blocks use) and with SwiGLU.
TEST(KernelTable, IntegerRowsGiveTheRefRowBits) {
  for (const MatmulKernel* kern : SupportedRows()) {
    if (kern->acts != ActFormat::kQ8Block32 || std::string(kern->isa) == "ref") continue;
    const MatmulKernel* ref = FindKernel(std::string("ref-") + Traits(kern->weights).name);
    ASSERT_NE(ref, nullptr) << kern->name;
    const int64_t align = Traits(kern->weights).k_alignment;
    for (const Shape3& s : kShapes) {
      const int64_t k = AlignK(s.k, kern->weights) + 2 * align;
      SCOPED_TRACE(testing::Message() << kern->name << " m=" << s.m << " n=" << s.n << " k=" << k);
      std::mt19937 rng(13);
      Tensor gate = RandomMatrix(s.n, k, rng, 0.05f), up = RandomMatrix(s.n, k, rng, 0.05f);
      const PackedWeight w = PackedWeight::Pack(gate, kern->weights).value();
      const PackedWeight gu = PackedWeight::PackGateUp(gate, up, kern->weights).value();
      Tensor xt = RandomMatrix(s.m, k, rng, 1.0f);
      ActivationBuffer buf;
      const ActView x = buf.Prepare(kern->acts, xt.data<float>(), s.m, k, k);
      for (int variant = 0; variant < 3; ++variant) {  // whole K, a K range, SwiGLU
        std::vector<float> out[2];
        const MatmulKernel* rows[2] = {kern, ref};
        for (int i = 0; i < 2; ++i) {
          out[i].assign(static_cast<size_t>(s.m * s.n), -1.0f);
          MatmulJob job{.rows = s.m,
                        .x = x,
                        .w = variant == 2 ? &gu : &w,
                        .kernel = rows[i],
                        .y = out[i].data(),
                        .ldy = s.n};
          if (variant == 1) {
            job.k_begin = align;
            job.k_end = k - align;
          }
          if (variant == 2) job.epilogue = Epilogue::kSwiGlu;
          RunMatmul(job, nullptr);
        }
        ASSERT_EQ(std::memcmp(out[0].data(), out[1].data(), out[0].size() * sizeof(float)), 0)
            << "variant " << variant;
      }
    }
  }
}

TEST(KernelTable, SelectionFollowsPolicy) {
  const CpuFeatures& cpu = GetCpuFeatures();
  EXPECT_STREQ(SelectKernel(WeightFormat::kQ4_K, 1, {.forced = "ref"}).name, "ref-q4_k");
  EXPECT_STREQ(SelectKernel(WeightFormat::kBF16, 1, {.forced = "ref-bf16"}).name, "ref-bf16");
  if (cpu.HasAvx2Kernels()) {
    EXPECT_STREQ(SelectKernel(WeightFormat::kQ8_0, 64, {.forced = "avx2"}).name,
                 cpu.IsAmdZen4() ? "avx2-q8_0-nopf" : "avx2-q8_0");
    EXPECT_STREQ(SelectKernel(WeightFormat::kQ8_0, 64, {.forced = "avx2-q8_0"}).name, "avx2-q8_0");
  }
  if (cpu.HasAvx512Bf16Kernels()) {
    EXPECT_STREQ(SelectKernel(WeightFormat::kBF16, 1, {}).name, "avx512-bf16");
    EXPECT_STREQ(SelectKernel(WeightFormat::kBF16, kBf16DotMinRows, {}).name, "avx512-bf16dot");
    EXPECT_STREQ(SelectKernel(WeightFormat::kBF16, 512, {.precision = ActivationPrecision::kF32}).name,
                 "avx512-bf16");
    // Deterministic: one row whatever the batch.
    KernelPolicy det{.deterministic = true};
    EXPECT_EQ(&SelectKernel(WeightFormat::kBF16, 1, det), &SelectKernel(WeightFormat::kBF16, 300, det));
  } else if (cpu.HasAvx2Kernels()) {
    EXPECT_STREQ(SelectKernel(WeightFormat::kBF16, 512, {}).name, "avx2-bf16");
  }
  for (const WeightFormatTraits& f : AllWeightFormats())
    EXPECT_TRUE(SelectKernel(f.format, 3, {}).supported(cpu)) << f.name;
}

// The -nopf rows (no software prefetch in the tiles) are picked where preferred, on AMD Zen 4, for
// every block format but Q6_K; elsewhere the prefetching rows; and a row forced by name always wins.
TEST(KernelTable, NoPrefetchRowsArePreferredOnZen4Only) {
  const CpuFeatures zen4{.avx512f = true,
                         .avx512bw = true,
                         .avx512vl = true,
                         .avx512dq = true,
                         .avx512_bf16 = true,
                         .avx512_vnni = true,
                         .avx2 = true,
                         .fma = true,
                         .f16c = true,
                         .os_saves_ymm = true,
                         .os_saves_zmm = true,
                         .amd = true,
                         .family = 0x19,
                         .model = 0x11};
  CpuFeatures zen5 = zen4, zen3 = zen4;
  zen5.family = 0x1A;
  zen5.model = 0x02;
  zen3.avx512f = zen3.avx512bw = zen3.avx512vl = zen3.avx512dq = zen3.avx512_bf16 = zen3.avx512_vnni = false;
  zen3.os_saves_zmm = false;
  for (const WeightFormatTraits& f : AllWeightFormats()) {
    if (f.k_alignment == 1) continue;  // f32 / f16 / bf16: no integer rows
    const std::string fmt = f.name;
    const bool nopf = f.format != WeightFormat::kQ6_K;
    for (int64_t rows : {1, 512}) {
      SCOPED_TRACE(fmt + " rows " + std::to_string(rows));
      EXPECT_EQ(SelectKernel(f.format, rows, {}, zen4).name, "avx512vnni-" + fmt + (nopf ? "-nopf" : ""));
      EXPECT_EQ(SelectKernel(f.format, rows, {.deterministic = true}, zen4).name,
                "avx512vnni-" + fmt + (nopf ? "-nopf" : ""));
      EXPECT_EQ(SelectKernel(f.format, rows, {.forced = "avx2"}, zen4).name,
                "avx2-" + fmt + (nopf ? "-nopf" : ""));
      EXPECT_EQ(SelectKernel(f.format, rows, {.forced = "avx512vnni-" + fmt}, zen4).name,
                "avx512vnni-" + fmt);
      EXPECT_EQ(SelectKernel(f.format, rows, {}, zen5).name, "avx512vnni-" + fmt);
      EXPECT_EQ(SelectKernel(f.format, rows, {}, zen3).name, "avx2-" + fmt);
    }
  }
  // Each -nopf row is its prefetching row's twin: same weights, ISA and activations.
  for (const MatmulKernel& k : AllKernels()) {
    const std::string name = k.name;
    if (!name.ends_with("-nopf")) continue;
    const MatmulKernel* twin = FindKernel(name.substr(0, name.size() - 5));
    ASSERT_NE(twin, nullptr) << name;
    EXPECT_EQ(twin->weights, k.weights) << name;
    EXPECT_EQ(twin->acts, k.acts) << name;
    EXPECT_STREQ(twin->isa, k.isa) << name;
    EXPECT_NE(twin->task, k.task) << name;
  }
}

// The level --kernel asks of the kernels outside the table: each ISA name maps to its level, and
// every row name or an empty value leaves them at the best.
TEST(KernelTable, ForcedIsaLevelNamesEveryIsa) {
  EXPECT_EQ(ForcedIsaLevel("ref"), IsaLevel::kRef);
  EXPECT_EQ(ForcedIsaLevel("avx2"), IsaLevel::kAvx2);
  EXPECT_EQ(ForcedIsaLevel("avx512"), IsaLevel::kAvx512);
  EXPECT_EQ(ForcedIsaLevel("avx512vnni"), IsaLevel::kAvx512);
  EXPECT_EQ(ForcedIsaLevel(""), std::nullopt);
  EXPECT_EQ(ForcedIsaLevel("avx9"), std::nullopt);
  for (const MatmulKernel& k : AllKernels()) EXPECT_EQ(ForcedIsaLevel(k.name), std::nullopt) << k.name;
}

TEST(KernelTable, RejectsUnknownOrUnsupportedKernels) {
  EXPECT_FALSE(ValidateKernelPolicy({.forced = "avx9"}).ok());
  EXPECT_NE(ValidateKernelPolicy({.forced = "avx9"}).message().find("--kernel avx9"), std::string::npos);
  EXPECT_TRUE(ValidateKernelPolicy({.forced = "ref"}).ok());
  EXPECT_TRUE(ValidateKernelPolicy({.forced = "ref-q6_k"}).ok());
  if (!GetCpuFeatures().HasAvx512VnniKernels()) {
    EXPECT_FALSE(ValidateKernelPolicy({.forced = "avx512vnni-q4_0"}).ok());
  }
}

TEST(PackedWeight, KeepsGgufBlocksByteForByte) {
  // A Q8_0 source packed as Q8_0 is copied, not re-quantised; a column slice on block bounds too.
  std::mt19937 rng(3);
  Tensor f = RandomMatrix(20, 96, rng, 1.0f);
  PackedWeight once = PackedWeight::Pack(f, WeightFormat::kQ8_0).value();
  Tensor q = Tensor::Zeros(DType::kQ8_0, {20, 96}).value();
  for (int64_t n = 0; n < 20; ++n) once.RawRow(n, q.data<uint8_t>() + n * 102);
  PackedWeight twice = PackedWeight::Pack(q, WeightFormat::kQ8_0).value();
  ASSERT_EQ(once.bytes(), twice.bytes());
  EXPECT_EQ(std::memcmp(once.block(0), twice.block(0), once.bytes()), 0);
  PackedWeight slice = PackedWeight::Pack(q, WeightFormat::kQ8_0, 32, 96).value();
  for (int64_t n = 0; n < 20; ++n) {
    uint8_t row[68];
    slice.RawRow(n, row);
    EXPECT_EQ(std::memcmp(row, q.data<uint8_t>() + n * 102 + 34, 68), 0) << n;
  }
  EXPECT_FALSE(PackedWeight::Pack(f, WeightFormat::kQ4_K).ok());  // 96 is not a multiple of 256
}

// "auto" keeps a stored block format; a row length its blocks do not fit falls back as llama.cpp's
// quantiser (q4_k -> q5_0, q5_k -> q5_1, q6_k -> q8_0, 32-element formats -> bf16).
TEST(WeightFormat, ResolveFallsBackLikeLlamaCpp) {
  for (const WeightFormatTraits& t : AllWeightFormats()) {
    const WeightFormat f = t.format;
    SCOPED_TRACE(t.name);
    EXPECT_EQ(ResolveWeightFormat(std::nullopt, Traits(f).storage, 2048), f);
    EXPECT_EQ(ResolveWeightFormat(f, DType::kBF16, 2048), f);
  }
  EXPECT_EQ(ResolveWeightFormat(std::nullopt, DType::kQ4_K, 1408), WeightFormat::kQ5_0);
  EXPECT_EQ(ResolveWeightFormat(std::nullopt, DType::kQ5_K, 1408), WeightFormat::kQ5_1);
  EXPECT_EQ(ResolveWeightFormat(WeightFormat::kQ5_K, DType::kBF16, 128), WeightFormat::kQ5_1);
  EXPECT_EQ(ResolveWeightFormat(WeightFormat::kQ6_K, DType::kBF16, 1408), WeightFormat::kQ8_0);
  EXPECT_EQ(ResolveWeightFormat(WeightFormat::kQ5_K, DType::kBF16, 48), WeightFormat::kBF16);
  EXPECT_EQ(ResolveWeightFormat(std::nullopt, DType::kF8_E4M3, 48), WeightFormat::kBF16);
}

// The load-only block types (Q3_K, Q2_K, IQ4_NL, IQ4_XS) have no format of their own: "auto" resolves to
// q8_0, and packing one (any format, a column slice, a gate/up pair) equals packing its
// dequantised f32 values: the rows are dequantised one at a time, then quantised.
TEST(PackedWeight, LoadOnlyTypesPackAsTheirF32Values) {
  std::mt19937 rng(11);
  for (DType t : {DType::kQ3_K, DType::kQ2_K, DType::kIQ4_NL, DType::kIQ4_XS}) {
    SCOPED_TRACE(DTypeName(t));
    const int64_t bs = DTypeBlockSize(t), n = 19, k = 2 * bs;
    EXPECT_EQ(FormatOfDType(t), std::nullopt);
    EXPECT_EQ(ResolveWeightFormat(std::nullopt, t, k), WeightFormat::kQ8_0);
    EXPECT_EQ(ResolveWeightFormat(std::nullopt, t, 48), WeightFormat::kBF16);  // a 48-wide TP slice
    EXPECT_EQ(ResolveWeightFormat(WeightFormat::kQ4_K, t, 512), WeightFormat::kQ4_K);
    Tensor q = Tensor::Zeros(t, {n, k}).value(), u = Tensor::Zeros(t, {n, k}).value();
    for (Tensor* x : {&q, &u}) {
      for (int64_t r = 0; r < n; ++r) {
        const std::vector<uint8_t> row = load_only_test::RandomLoadOnlyRow(t, k, 0.1f, &rng);
        std::memcpy(x->data<uint8_t>() + r * row.size(), row.data(), row.size());
      }
    }
    const Tensor f = q.ToF32().value(), fu = u.ToF32().value();
    for (WeightFormat w :
         {WeightFormat::kQ8_0, WeightFormat::kQ4_0, WeightFormat::kF32, WeightFormat::kBF16}) {
      const PackedWeight a = PackedWeight::Pack(q, w).value(), b = PackedWeight::Pack(f, w).value();
      ASSERT_EQ(a.bytes(), b.bytes()) << WeightFormatName(w);
      EXPECT_EQ(std::memcmp(a.block(0), b.block(0), a.bytes()), 0) << WeightFormatName(w);
    }
    const PackedWeight sa = PackedWeight::Pack(q, WeightFormat::kQ8_0, bs, 2 * bs).value();
    const PackedWeight sb = PackedWeight::Pack(f, WeightFormat::kQ8_0, bs, 2 * bs).value();
    EXPECT_EQ(std::memcmp(sa.block(0), sb.block(0), sa.bytes()), 0);
    const PackedWeight ga = PackedWeight::PackGateUp(q, u, WeightFormat::kQ8_0).value();
    const PackedWeight gb = PackedWeight::PackGateUp(f, fu, WeightFormat::kQ8_0).value();
    EXPECT_EQ(std::memcmp(ga.block(0), gb.block(0), ga.bytes()), 0);
    // The row ops never read them (the MLA loader converts them first).
    EXPECT_FALSE(MakeStoredRows(t, k).ok());
  }
}

// Every block format is packed interleaved, losslessly: RawRow gives back each row's GGUF bytes
// (N not a multiple of 16, a block-aligned column slice, a gate/up pair), and repacking them gives
// the same packed bytes.
TEST(PackedWeight, RawRowGivesBackTheGgufBytes) {
  std::mt19937 rng(9);
  for (WeightFormat f : {WeightFormat::kQ8_0, WeightFormat::kQ4_0, WeightFormat::kQ5_0, WeightFormat::kQ5_1,
                         WeightFormat::kQ4_K, WeightFormat::kQ5_K, WeightFormat::kQ6_K}) {
    SCOPED_TRACE(WeightFormatName(f));
    const DType t = Traits(f).storage;
    const int64_t n = 21, bs = DTypeBlockSize(t), k = 3 * bs;
    const size_t rb = DTypeRowBytes(t, k), bb = DTypeBlockBytes(t);
    Tensor g = Tensor::Zeros(t, {n, k}).value(), u = Tensor::Zeros(t, {n, k}).value();
    // Any bytes: packing moves them and never decodes them.
    for (Tensor* q : {&g, &u})
      for (size_t i = 0; i < n * rb; ++i) q->data<uint8_t>()[i] = static_cast<uint8_t>(rng());
    const PackedWeight p = PackedWeight::Pack(g, f).value();
    const PackedWeight slice = PackedWeight::Pack(g, f, bs, 3 * bs).value();
    const PackedWeight gu = PackedWeight::PackGateUp(g, u, f).value();
    ASSERT_EQ(p.row_bytes(), rb);
    std::vector<uint8_t> row(rb);
    for (int64_t r = 0; r < n; ++r) {
      p.RawRow(r, row.data());
      EXPECT_EQ(std::memcmp(row.data(), g.data<uint8_t>() + r * rb, rb), 0) << r;
      slice.RawRow(r, row.data());
      EXPECT_EQ(std::memcmp(row.data(), g.data<uint8_t>() + r * rb + bb, 2 * bb), 0) << r;
      gu.RawRow(r, row.data());
      EXPECT_EQ(std::memcmp(row.data(), g.data<uint8_t>() + r * rb, rb), 0) << r;
      gu.RawRow(n + r, row.data());
      EXPECT_EQ(std::memcmp(row.data(), u.data<uint8_t>() + r * rb, rb), 0) << r;
    }
    Tensor back = Tensor::Zeros(t, {n, k}).value();
    for (int64_t r = 0; r < n; ++r) p.RawRow(r, back.data<uint8_t>() + r * rb);
    const PackedWeight again = PackedWeight::Pack(back, f).value();
    ASSERT_EQ(again.bytes(), p.bytes());
    EXPECT_EQ(std::memcmp(again.block(0), p.block(0), p.bytes()), 0);
  }
}

// LinearForward on rows ldx floats apart, into rows ldy floats apart (MLA's per-head kv_b
// products read a head's slice of every token's row): the bits of the same rows packed densely,
// and the single-threaded run (no pool) gives the bits of a two-thread pool's.
TEST(LinearForwardTest, StridedRowsGiveTheBitsOfDenseRows) {
  ThreadPool pool(2);
  const KernelPolicy policy;
  for (WeightFormat f : {WeightFormat::kF32, WeightFormat::kQ8_0, WeightFormat::kQ5_0, WeightFormat::kQ4_K}) {
    SCOPED_TRACE(WeightFormatName(f));
    std::mt19937 rng(7);
    const int64_t n = 48, k = AlignK(128, f), ldx = k + 40, ldy = n + 24;
    const PackedWeight w = PackedWeight::Pack(RandomMatrix(n, k, rng, 0.05f), f).value();
    for (int64_t m : {1, 3, 16}) {
      Tensor dense_x = RandomMatrix(m, k, rng, 1.0f);
      std::vector<float> strided_x(static_cast<size_t>(m * ldx), std::numeric_limits<float>::quiet_NaN());
      for (int64_t i = 0; i < m; ++i) {
        std::copy(dense_x.data<float>() + i * k, dense_x.data<float>() + (i + 1) * k,
                  strided_x.begin() + i * ldx);
      }
      ActivationBuffer dense_buf, strided_buf;
      std::vector<float> dense(static_cast<size_t>(m * n)), strided(static_cast<size_t>(m * ldy), -7.0f);
      LinearForward(w, dense_x.data<float>(), m, dense.data(),
                    {.pool = &pool, .policy = &policy, .acts = &dense_buf});
      LinearForward(w, strided_x.data(), m, strided.data(),
                    {.pool = nullptr, .policy = &policy, .acts = &strided_buf}, false, ldy, ldx);
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          ASSERT_EQ(dense[i * n + j], strided[i * ldy + j]) << "m=" << m << " row " << i << " col " << j;
        }
        for (int64_t j = n; j < ldy; ++j) ASSERT_EQ(strided[i * ldy + j], -7.0f) << "wrote past row " << i;
      }
    }
  }
}

// LinearForwardRowPerWeight (one token's heads, each through its own weight): row i of x (ldx
// floats apart) through weight i gives the bits LinearForward gives it alone, written ldy floats
// apart and nothing past each weight's out_features.
TEST(LinearForwardTest, RowPerWeightGivesEachRowItsOwnLinearForwardBits) {
  const KernelPolicy policy;
  for (WeightFormat f : {WeightFormat::kF32, WeightFormat::kBF16, WeightFormat::kQ8_0, WeightFormat::kQ4_0,
                         WeightFormat::kQ5_0, WeightFormat::kQ4_K, WeightFormat::kQ6_K}) {
    SCOPED_TRACE(WeightFormatName(f));
    std::mt19937 rng(11);
    const int64_t heads = 7, n = 80, k = AlignK(128, f), ldx = k + 64, ldy = n + 16;
    std::vector<PackedWeight> w;
    for (int64_t h = 0; h < heads; ++h)
      w.push_back(PackedWeight::Pack(RandomMatrix(n, k, rng, 0.05f), f).value());
    const Tensor x = RandomMatrix(heads, ldx, rng, 1.0f);
    ActivationBuffer buf;
    const LinearContext ctx{.pool = nullptr, .policy = &policy, .acts = &buf};
    std::vector<float> y(static_cast<size_t>(heads * ldy), -7.0f);
    LinearForwardRowPerWeight(w, x.data<float>(), ldx, y.data(), ldy, ctx);
    for (int64_t h = 0; h < heads; ++h) {
      std::vector<float> alone(static_cast<size_t>(n));
      LinearForward(w[static_cast<size_t>(h)], x.data<float>() + h * ldx, 1, alone.data(), ctx);
      for (int64_t j = 0; j < n; ++j) ASSERT_EQ(y[h * ldy + j], alone[j]) << "head " << h << " col " << j;
      for (int64_t j = n; j < ldy; ++j) ASSERT_EQ(y[h * ldy + j], -7.0f) << "wrote past head " << h;
    }
  }
}

}  // namespace
}  // namespace moerun
