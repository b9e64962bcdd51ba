// Attention's small f32 products (kernels/small_gemm.h): every ISA the CPU has against a double
// oracle, GemmNN bitwise equal across ISAs, each element independent of the tile it falls in, and
// GemmNN split over p (GemmNNAccumulate continuing each chain) bitwise equal to one call, and
// GemmNNPaged over a block table bitwise equal to GemmNN over the gathered rows, and GemmNTPaged
// over any range of a block table bitwise equal to GemmNT over the gathered rows.
#include "kernels/small_gemm.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace moerun {
namespace {

std::vector<SmallGemmIsa> Isas() {
  std::vector<SmallGemmIsa> out;
  for (SmallGemmIsa isa : {SmallGemmIsa::kRef, SmallGemmIsa::kAvx2, SmallGemmIsa::kAvx512}) {
    if (SmallGemmIsaSupported(isa)) out.push_back(isa);
  }
  return out;
}

// Block ids 0 .. blocks - 1 in a random order (a paged B whose blocks are not in row order).
std::vector<int32_t> ShuffledBlockTable(int64_t blocks, std::mt19937& rng) {
  std::vector<int32_t> table(static_cast<size_t>(blocks));
  for (int32_t b = 0; b < static_cast<int32_t>(blocks); ++b) table[static_cast<size_t>(b)] = b;
  std::shuffle(table.begin(), table.end(), rng);
  return table;
}

std::vector<float> Random(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

TEST(SmallGemm, MatchesDoubleOracle) {
  std::mt19937 rng(4);
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t m = 1 + rng() % 11, n = 1 + rng() % 45, k = trial == 0 ? 576 : 1 + rng() % 600;
    const int64_t lda = k + 3, ldb = k + 5, ldc = n + 2;
    const std::vector<float> a = Random(static_cast<size_t>(m * lda), rng),
                             b = Random(static_cast<size_t>(n * ldb), rng);
    // NN operands: A [m, k] (probabilities), B [k, n] with row stride ldbn.
    const int64_t ldbn = n + 7;
    const std::vector<float> bn = Random(static_cast<size_t>(k * ldbn), rng);
    for (SmallGemmIsa isa : Isas()) {
      std::vector<float> c(static_cast<size_t>(m * ldc), -7.0f), cn(c.size(), -7.0f);
      GemmNT(isa, m, n, k, a.data(), lda, b.data(), ldb, c.data(), ldc);
      GemmNN(isa, m, n, k, a.data(), lda, bn.data(), ldbn, cn.data(), ldc);
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          double nt = 0, ntmag = 0, nn = 0, nnmag = 0;
          for (int64_t p = 0; p < k; ++p) {
            const double t = static_cast<double>(a[i * lda + p]) * b[j * ldb + p];
            nt += t;
            ntmag += std::fabs(t);
            const double u = static_cast<double>(a[i * lda + p]) * bn[p * ldbn + j];
            nn += u;
            nnmag += std::fabs(u);
          }
          ASSERT_LE(std::fabs(c[i * ldc + j] - nt), 1e-5 * ntmag)
              << static_cast<int>(isa) << " m" << m << " n" << n << " k" << k;
          ASSERT_LE(std::fabs(cn[i * ldc + j] - nn), 1e-5 * nnmag) << static_cast<int>(isa);
        }
        EXPECT_EQ(c[i * ldc + n], -7.0f) << "wrote past n";
      }
    }
  }
}

TEST(SmallGemm, NNIsBitwiseEqualOnEveryIsa) {
  std::mt19937 rng(5);
  const int64_t m = 7, n = 517, k = 300;
  const std::vector<float> a = Random(static_cast<size_t>(m * k), rng),
                           b = Random(static_cast<size_t>(k * n), rng);
  std::vector<float> want(static_cast<size_t>(m * n));
  GemmNN(SmallGemmIsa::kRef, m, n, k, a.data(), k, b.data(), n, want.data(), n);
  for (SmallGemmIsa isa : Isas()) {
    std::vector<float> got(want.size());
    GemmNN(isa, m, n, k, a.data(), k, b.data(), n, got.data(), n);
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0) << static_cast<int>(isa);
  }
}

// Attention over KV blocks: GemmNN on the first part of p, then GemmNNAccumulate on each next part
// (random cuts, including parts of one p), gives the bits of one GemmNN over all of p.
TEST(SmallGemm, NNAccumulatedOverPartsOfPIsBitwiseOneCall) {
  std::mt19937 rng(8);
  for (int trial = 0; trial < 30; ++trial) {
    const int64_t m = 1 + rng() % 9, n = 1 + rng() % 70, k = 1 + rng() % 150;
    const int64_t lda = k + 1, ldb = n + 3, ldc = n + 2;
    const std::vector<float> a = Random(static_cast<size_t>(m * lda), rng),
                             b = Random(static_cast<size_t>(k * ldb), rng);
    std::vector<int64_t> cuts = {0, k};
    for (int c = rng() % 5; c > 0; --c) cuts.push_back(1 + rng() % k);
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    for (SmallGemmIsa isa : Isas()) {
      std::vector<float> want(static_cast<size_t>(m * ldc), -3.0f), got(want.size(), -3.0f);
      GemmNN(isa, m, n, k, a.data(), lda, b.data(), ldb, want.data(), ldc);
      for (size_t c = 0; c + 1 < cuts.size(); ++c) {
        const int64_t p0 = cuts[c], len = cuts[c + 1] - p0;
        if (c == 0) {
          GemmNN(isa, m, n, len, a.data() + p0, lda, b.data() + p0 * ldb, ldb, got.data(), ldc);
        } else {
          GemmNNAccumulate(isa, m, n, len, a.data() + p0, lda, b.data() + p0 * ldb, ldb, got.data(), ldc);
        }
      }
      ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
          << static_cast<int>(isa) << " m" << m << " n" << n << " k" << k << " parts " << cuts.size() - 1;
    }
  }
}

// A paged B (rows in shuffled blocks of a block table) gives the bits of GemmNN over the gathered
// rows, on every ISA, for row counts around every tile height and partial column vectors, and
// lengths k within and across the x86 paths' 128-row chunks of B (which the reference does not cut).
TEST(SmallGemm, NNPagedIsBitwiseGemmNNOverTheGatheredRows) {
  std::mt19937 rng(9);
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t m = trial < 20 ? 1 + trial : 1 + rng() % 40, n = 1 + rng() % 80;
    const int64_t k = trial % 3 == 0 ? 1 + rng() % 120 : 120 + rng() % 300;
    const int64_t block_rows = 1 + rng() % 17, ld = n + rng() % 5, blocks = (k + block_rows - 1) / block_rows;
    const int64_t block_stride = block_rows * ld + rng() % 7, lda = k + 2, ldc = n + 1;
    const std::vector<int32_t> table = ShuffledBlockTable(blocks, rng);
    const std::vector<float> a = Random(static_cast<size_t>(m * lda), rng),
                             storage = Random(static_cast<size_t>(blocks * block_stride), rng);
    const PagedRows paged{storage.data(), ld, table.data(), block_rows, block_stride};
    std::vector<float> gathered(static_cast<size_t>(k * n));
    for (int64_t p = 0; p < k; ++p) std::copy(paged.Row(p), paged.Row(p) + n, gathered.begin() + p * n);
    for (SmallGemmIsa isa : Isas()) {
      std::vector<float> want(static_cast<size_t>(m * ldc), -5.0f), got(want.size(), -5.0f);
      GemmNN(isa, m, n, k, a.data(), lda, gathered.data(), n, want.data(), ldc);
      GemmNNPaged(isa, m, n, k, a.data(), lda, paged, got.data(), ldc);
      ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
          << static_cast<int>(isa) << " m" << m << " n" << n << " k" << k << " block_rows " << block_rows;
      if (isa == SmallGemmIsa::kRef) continue;
      std::vector<float> ref(want.size(), -5.0f);  // and the bits of the portable reference
      GemmNNPaged(SmallGemmIsa::kRef, m, n, k, a.data(), lda, paged, ref.data(), ldc);
      ASSERT_EQ(std::memcmp(got.data(), ref.data(), got.size() * sizeof(float)), 0) << static_cast<int>(isa);
    }
  }
}

// GemmNTPaged over rows [j0, j1) of a paged B (shuffled blocks, rows not 64-byte aligned, k within
// and past a vector) writes columns j0.. of C with GemmNT's bits over the gathered rows on every ISA,
// and leaves every other column of C as it was. (Its prefetches touch only rows in [j0, j1).)
TEST(SmallGemm, NTPagedIsBitwiseGemmNTOverTheGatheredRows) {
  std::mt19937 rng(10);
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t m = trial < 20 ? 1 + trial : 1 + rng() % 40, n = 1 + rng() % 90;
    const int64_t k = trial % 3 == 0 ? 1 + rng() % 40 : 60 + rng() % 600;
    const int64_t block_rows = 1 + rng() % 17, ld = k + rng() % 5, blocks = (n + block_rows - 1) / block_rows;
    const int64_t block_stride = block_rows * ld + rng() % 7, lda = k + 3, ldc = n + 2;
    const int64_t j0 = trial % 4 == 0 ? 0 : rng() % n, j1 = j0 + 1 + rng() % (n - j0);
    const std::vector<int32_t> table = ShuffledBlockTable(blocks, rng);
    const std::vector<float> a = Random(static_cast<size_t>(m * lda), rng),
                             storage = Random(static_cast<size_t>(blocks * block_stride + 1), rng);
    const PagedRows paged{storage.data() + 1, ld, table.data(), block_rows, block_stride};
    std::vector<float> gathered(static_cast<size_t>((j1 - j0) * k));
    for (int64_t j = j0; j < j1; ++j)
      std::copy(paged.Row(j), paged.Row(j) + k, gathered.begin() + (j - j0) * k);
    for (SmallGemmIsa isa : Isas()) {
      std::vector<float> want(static_cast<size_t>(m * ldc), -5.0f), got(want.size(), -5.0f);
      GemmNT(isa, m, j1 - j0, k, a.data(), lda, gathered.data(), k, want.data() + j0, ldc);
      GemmNTPaged(isa, m, j0, j1, k, a.data(), lda, paged, got.data(), ldc);
      ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
          << static_cast<int>(isa) << " m" << m << " j" << j0 << ".." << j1 << " k" << k << " block_rows "
          << block_rows;
    }
  }
}

// The same element from a sub-product (other rows / columns around it) has the same bits.
TEST(SmallGemm, ElementsDoNotDependOnTheTiling) {
  std::mt19937 rng(6);
  const int64_t m = 13, n = 29, k = 576;
  const std::vector<float> a = Random(static_cast<size_t>(m * k), rng),
                           b = Random(static_cast<size_t>(n * k), rng);
  for (SmallGemmIsa isa : Isas()) {
    std::vector<float> full(static_cast<size_t>(m * n));
    GemmNT(isa, m, n, k, a.data(), k, b.data(), k, full.data(), n);
    // Each row alone (single-row tiles) against the full call (whole register tiles).
    for (int64_t i = 0; i < m; ++i) {
      std::vector<float> row(static_cast<size_t>(n));
      GemmNT(isa, 1, n, k, a.data() + i * k, k, b.data(), k, row.data(), n);
      ASSERT_EQ(std::memcmp(row.data(), full.data() + i * n, row.size() * sizeof(float)), 0)
          << "isa " << static_cast<int>(isa) << " row " << i;
    }
    for (int trial = 0; trial < 25; ++trial) {
      const int64_t i0 = rng() % m, i1 = i0 + 1 + rng() % (m - i0), j0 = rng() % n,
                    j1 = j0 + 1 + rng() % (n - j0);
      std::vector<float> part(static_cast<size_t>((i1 - i0) * (j1 - j0)));
      GemmNT(isa, i1 - i0, j1 - j0, k, a.data() + i0 * k, k, b.data() + j0 * k, k, part.data(), j1 - j0);
      for (int64_t i = i0; i < i1; ++i) {
        for (int64_t j = j0; j < j1; ++j) {
          const float p = part[(i - i0) * (j1 - j0) + (j - j0)], f = full[i * n + j];
          ASSERT_EQ(std::memcmp(&p, &f, sizeof p), 0) << static_cast<int>(isa);
        }
      }
    }
  }
}

TEST(SmallGemm, KernelFlagSelectsTheIsa) {
  EXPECT_EQ(SelectSmallGemmIsa("ref"), SmallGemmIsa::kRef);
  EXPECT_EQ(SelectSmallGemmIsa(""), SmallGemmIsa::kAuto);
  EXPECT_EQ(SelectSmallGemmIsa("avx2-q4_k"), SmallGemmIsa::kAuto);  // a row name: the best
  const SmallGemmIsa avx2 =
      SmallGemmIsaSupported(SmallGemmIsa::kAvx2) ? SmallGemmIsa::kAvx2 : SmallGemmIsa::kRef;
  EXPECT_EQ(SelectSmallGemmIsa("avx2"), avx2);
  const SmallGemmIsa avx512 = SmallGemmIsaSupported(SmallGemmIsa::kAvx512) ? SmallGemmIsa::kAvx512 : avx2;
  EXPECT_EQ(SelectSmallGemmIsa("avx512"), avx512);
  EXPECT_EQ(SelectSmallGemmIsa("avx512vnni"), avx512);
}

}  // namespace
}  // namespace moerun
