// The AVX-512 VNNI quantised dot kernels (kernels/quant_dot_x86_impl.h with MOERUN_QUANT_DOT_VNNI)
// on any AVX2 CPU: this translation unit compiles their source against SIMDe's portable AVX-512
// (tests/testing/simde_avx512.h), so an AVX2-only machine still checks every AVX-512 tile and
// stream kernel bit for bit against the scalar reference, as kernels_test does natively where the
// CPU has AVX-512 VNNI. What it checks is the kernels' lane arithmetic and layout handling, not
// the real instructions' timing or encoding.
#include "../testing/simde_avx512.h"  // first: the AVX-512 names become SIMDe's

#define MOERUN_QUANT_DOT_VNNI 1
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "../testing/quant_dot_inputs.h"
#include "core/cpu_features.h"
#include "kernels/quant_dot_x86_impl.h"

namespace moerun {
namespace {

using quant_test::Acts;
using quant_test::ForEachShapeInput;
using quant_test::kShapeRows;
using quant_test::QuantizeActs;
using quant_test::RandomTileCase;
using quant_test::RawWeights;
using quant_test::TileCase;
using quant_test::Weights;

constexpr DType kFormats[] = {DType::kQ8_0, DType::kQ4_0, DType::kQ5_0, DType::kQ5_1,
                              DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

class EmulatedAvx512Test : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!GetCpuFeatures().HasAvx2Kernels()) GTEST_SKIP() << "SIMDe's AVX-512 is built on AVX2 here";
  }
};

// Every tile shape (1..19 activation rows: each R split; 1..16 weight rows) and K range of every
// block format, with and without the software prefetch: the reference's bits.
TEST_F(EmulatedAvx512Test, TilesGiveTheReferenceBits) {
  std::mt19937 rng(31);
  for (DType t : kFormats) {
    SCOPED_TRACE(DTypeName(t));
    ForEachShapeInput(t, rng, [&](const Acts& a, const Weights& w) {
      for (int trial = 0; trial < 24; ++trial) {
        TileCase c = RandomTileCase(rng, DTypeBlockSize(t) == 256, kShapeRows);
        if (trial < 4) {  // the decode shapes (1..4 rows) every time
          c.m0 = 0;
          c.m1 = 1 + trial;
        }
        const auto [m0, m1, kb0, kb1, n] = c;
        std::vector<float> want(static_cast<size_t>((m1 - m0) * kQuantDotMaxRows), 0.0f);
        QuantDotTileRef(t, w.packed.data(), w.row_bytes, n, a.view, m0, m1, kb0, kb1, want.data());
        for (bool prefetch : {true, false}) {
          std::vector<float> got(want.size(), 0.0f);
          (prefetch ? QuantDotTileX86<true> : QuantDotTileX86<false>)(t, w.packed.data(), w.row_bytes, n,
                                                                      a.view, m0, m1, kb0, kb1, got.data());
          ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
              << "m=[" << m0 << "," << m1 << ") kb=[" << kb0 << "," << kb1 << ") n=" << n
              << " prefetch=" << prefetch;
        }
      }
    });
    if (HasFatalFailure()) return;
  }
}

// 1..4 streams (different blocks, activation rows and row counts) over one K range: each stream
// gets the reference tile's bits for its one row.
TEST_F(EmulatedAvx512Test, StreamsGiveTheReferenceBits) {
  std::mt19937 rng(32);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (DType t : kFormats) {
    SCOPED_TRACE(DTypeName(t));
    const bool kq = DTypeBlockSize(t) == 256;
    const int64_t k = kq ? 256 * 3 : 32 * 21, rows = 5;
    std::vector<float> x(static_cast<size_t>(rows * k));
    for (float& v : x) v = nd(rng);
    const Acts a = QuantizeActs(x, rows, k);
    std::vector<Weights> blocks;
    for (int i = 0; i < kQuantDotMaxStreams; ++i) blocks.push_back(RawWeights(t, k, rng));
    for (int n = 1; n <= kQuantDotMaxStreams; ++n) {
      const int64_t kb0 = kq ? 8 : 3, kb1 = k / 32;
      std::vector<QuantDotStream> streams(static_cast<size_t>(n));
      std::vector<std::vector<float>> got(static_cast<size_t>(n)), want(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) {
        const int n_rows = 16 - 5 * i;
        const int64_t m = (i + n) % rows;
        got[i].assign(16, -1.0f);
        want[i].assign(kQuantDotMaxRows, -1.0f);
        streams[i] = {blocks[i].packed.data(), n_rows, &a.view, m, got[i].data()};
        QuantDotTileRef(t, blocks[i].packed.data(), blocks[i].row_bytes, n_rows, a.view, m, m + 1, kb0, kb1,
                        want[i].data());
        want[i].resize(16);
      }
      QuantDotStreamsX86<true>(t, streams.data(), n, kb0, kb1);
      for (int i = 0; i < n; ++i) {
        ASSERT_EQ(std::memcmp(got[i].data(), want[i].data(), 16 * sizeof(float)), 0)
            << "stream " << i << " of " << n;
      }
    }
  }
}

}  // namespace
}  // namespace moerun
