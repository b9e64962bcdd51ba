// kernels/row_ops.h on every stored dtype x every ISA this CPU supports, against a double-precision
// oracle built from the rows dequantised by core/block_quant.h (ConvertToF32). Tolerance: 1e-5 of the sum of
// |terms| of each output. Also: every path dequantises to exactly the reference's values (a unit-vector dot
// reads one back), rows are independent (a row's dot does not depend on which rows share the call) and
// RowsAxpy over a split of the rows equals the whole call bit for bit (one fma chain per element, in row
// order).
#include "kernels/row_ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/block_quant.h"
#include "core/cpu_features.h"

namespace moerun {
namespace {

constexpr double kRelTol = 1e-5;

struct Matrix {
  StoredRowsView view;
  std::vector<uint8_t> bytes;
  std::vector<float> deq;  // [rows, cols]: the rows as the reference dequantiser reads them
};

// rows x cols random values stored as `t`, rows `pad` bytes apart beyond their length.
Matrix MakeMatrix(DType t, int64_t rows, int64_t cols, size_t pad, std::mt19937* rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const size_t row_bytes = DTypeRowBytes(t, cols), stride = row_bytes + pad;
  Matrix m;
  m.bytes.assign(stride * static_cast<size_t>(rows), 0xAB);
  m.deq.resize(static_cast<size_t>(rows * cols));
  std::vector<float> v(static_cast<size_t>(cols));
  for (int64_t i = 0; i < rows; ++i) {
    // Per-row scale spread so rows of very different magnitude meet in one sum.
    const float scale = std::ldexp(1.0f, static_cast<int>(i % 5) - 2);
    for (float& e : v) e = nd(*rng) * scale;
    uint8_t* dst = m.bytes.data() + static_cast<size_t>(i) * stride;
    switch (t) {
      case DType::kF32:
        std::memcpy(dst, v.data(), row_bytes);
        break;
      case DType::kF16:
        for (int64_t c = 0; c < cols; ++c) {
          const uint16_t h = F32ToF16(v[c]);
          std::memcpy(dst + 2 * c, &h, 2);
        }
        break;
      case DType::kBF16:
        for (int64_t c = 0; c < cols; ++c) {
          const uint16_t h = F32ToBf16(v[c]);
          std::memcpy(dst + 2 * c, &h, 2);
        }
        break;
      default:
        QuantizeRow(t, v.data(), cols, dst);
    }
    ConvertToF32(t, dst, m.deq.data() + i * cols, static_cast<size_t>(cols));
  }
  m.view = {t, m.bytes.data(), rows, cols, stride};
  return m;
}

std::vector<float> RandomVector(int64_t n, std::mt19937* rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& e : v) e = u(*rng);
  return v;
}

std::vector<RowOpsIsa> SupportedIsas() {
  std::vector<RowOpsIsa> out;
  for (RowOpsIsa isa : {RowOpsIsa::kRef, RowOpsIsa::kAvx2, RowOpsIsa::kAvx512})
    if (RowOpsIsaSupported(isa)) out.push_back(isa);
  return out;
}

std::vector<int64_t> ColsFor(DType t) {
  if (!IsBlockDType(t)) return {1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 100, 255, 256, 257, 300, 525};
  if (DTypeBlockSize(t) == 32) return {32, 64, 96, 160, 288, 512};
  return {256, 512, 768};
}

struct Case {
  RowOpsIsa isa;
  DType dtype;
};

class RowOpsTest : public ::testing::TestWithParam<Case> {};

TEST_P(RowOpsTest, DotMatchesDoubleOracle) {
  const auto [isa, t] = GetParam();
  std::mt19937 rng(7);
  for (int64_t cols : ColsFor(t)) {
    for (int64_t rows : {1, 2, 5, 13}) {
      const Matrix m = MakeMatrix(t, rows, cols, static_cast<size_t>(rows % 3) * 8, &rng);
      const std::vector<float> x = RandomVector(cols, &rng);
      std::vector<float> y(static_cast<size_t>(rows), NAN);
      RowsDot(isa, m.view, x.data(), y.data());
      for (int64_t i = 0; i < rows; ++i) {
        double want = 0, mag = 0;
        for (int64_t c = 0; c < cols; ++c) {
          const double term = static_cast<double>(m.deq[i * cols + c]) * x[c];
          want += term;
          mag += std::fabs(term);
        }
        ASSERT_NEAR(y[i], want, kRelTol * mag + 1e-30)
            << RowOpsIsaName(isa) << " " << DTypeName(t) << " rows " << rows << " cols " << cols << " row "
            << i;
      }
      // A unit vector reads one dequantised element back exactly: every path dequantises to the
      // reference's values.
      for (int64_t c : {int64_t{0}, cols / 2, cols - 1}) {
        std::vector<float> e(static_cast<size_t>(cols), 0.0f), ye(static_cast<size_t>(rows));
        e[c] = 1.0f;
        RowsDot(isa, m.view, e.data(), ye.data());
        for (int64_t i = 0; i < rows; ++i) ASSERT_EQ(ye[i], m.deq[i * cols + c]) << cols << " " << c;
      }
      // Each row alone gives the same bits: no dependence on the rows sharing the call.
      for (int64_t i = 0; i < rows; ++i) {
        StoredRowsView one = m.view;
        one.data = m.bytes.data() + static_cast<size_t>(i) * m.view.row_stride;
        one.rows = 1;
        float yi = NAN;
        RowsDot(isa, one, x.data(), &yi);
        ASSERT_EQ(std::memcmp(&yi, &y[i], sizeof yi), 0) << cols << " row " << i;
      }
    }
  }
}

TEST_P(RowOpsTest, AxpyMatchesDoubleOracle) {
  const auto [isa, t] = GetParam();
  std::mt19937 rng(11);
  for (int64_t cols : ColsFor(t)) {
    for (int64_t rows : {1, 3, 4, 7, 16}) {
      const Matrix m = MakeMatrix(t, rows, cols, static_cast<size_t>(rows % 2) * 6, &rng);
      const std::vector<float> x = RandomVector(rows, &rng), y0 = RandomVector(cols, &rng);
      std::vector<float> y = y0;
      RowsAxpy(isa, m.view, x.data(), y.data());
      for (int64_t c = 0; c < cols; ++c) {
        double want = y0[c], mag = std::fabs(y0[c]);
        for (int64_t i = 0; i < rows; ++i) {
          const double term = static_cast<double>(x[i]) * m.deq[i * cols + c];
          want += term;
          mag += std::fabs(term);
        }
        ASSERT_NEAR(y[c], want, kRelTol * mag + 1e-30)
            << RowOpsIsaName(isa) << " " << DTypeName(t) << " rows " << rows << " cols " << cols << " col "
            << c;
      }
      // Rows [0, k) then [k, rows): the same fma chain per element, so the same bits.
      for (int64_t k : {int64_t{1}, rows / 2, rows - 1}) {
        if (k <= 0 || k >= rows) continue;
        std::vector<float> y2 = y0;
        StoredRowsView a = m.view, b = m.view;
        a.rows = k;
        b.rows = rows - k;
        b.data = m.bytes.data() + static_cast<size_t>(k) * m.view.row_stride;
        RowsAxpy(isa, a, x.data(), y2.data());
        RowsAxpy(isa, b, x.data() + k, y2.data());
        ASSERT_EQ(std::memcmp(y.data(), y2.data(), y.size() * sizeof(float)), 0) << cols << " split " << k;
      }
    }
  }
}

std::vector<Case> AllCases() {
  std::vector<Case> out;
  for (RowOpsIsa isa : SupportedIsas()) {
    for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0, DType::kQ5_0,
                    DType::kQ5_1, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K})
      out.push_back({isa, t});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(AllIsasAndDtypes, RowOpsTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<Case>& p) {
                           return std::string(RowOpsIsaName(p.param.isa)) + "_" +
                                  std::string(DTypeName(p.param.dtype));
                         });

// A batch of m vectors (strided, as the attention's tokens x heads) gives each vector the bits it
// gets alone, for both ops, every dtype and ISA.
TEST(RowOps, BatchEqualsOneVectorAtATime) {
  std::mt19937 rng(31);
  for (RowOpsIsa isa : SupportedIsas()) {
    for (DType t : {DType::kF32, DType::kBF16, DType::kQ8_0, DType::kQ4_0, DType::kQ5_0, DType::kQ5_1,
                    DType::kQ4_K, DType::kQ5_K, DType::kQ6_K})
      for (const int64_t m : {2, 5, 7, 13, 16}) {  // token tiles 3, 2, 1 (AVX2), 6, 4, 2, 1 (AVX-512)
        // Partial vectors and chunks: f32 / bf16 rows of any length, 32-blocks in odd vector counts.
        const int64_t block = DTypeBlockSize(t);
        const int64_t rows = 9, cols = block == 1 ? 100 + 28 * m : block == 32 ? 32 * (4 + m) : 512;
        const int64_t ldx = 700, ldy = 700;  // >= cols (640 at m = 16)
        const Matrix w = MakeMatrix(t, rows, cols, 0, &rng);
        const std::vector<float> x = RandomVector(m * ldx, &rng);
        std::vector<float> yb(static_cast<size_t>(m * ldy), 0.25f), y1 = yb;
        RowsAxpy(isa, w.view, x.data(), yb.data(), {.m = m, .ldx = ldx, .ldy = ldy});
        for (int64_t v = 0; v < m; ++v) RowsAxpy(isa, w.view, x.data() + v * ldx, y1.data() + v * ldy);
        EXPECT_EQ(std::memcmp(yb.data(), y1.data(), yb.size() * sizeof(float)), 0)
            << RowOpsIsaName(isa) << DTypeName(t);
        std::fill(yb.begin(), yb.end(), -1.0f);
        y1 = yb;
        RowsDot(isa, w.view, x.data(), yb.data(), {.m = m, .ldx = ldx, .ldy = ldy});
        for (int64_t v = 0; v < m; ++v) RowsDot(isa, w.view, x.data() + v * ldx, y1.data() + v * ldy);
        EXPECT_EQ(std::memcmp(yb.data(), y1.data(), yb.size() * sizeof(float)), 0)
            << RowOpsIsaName(isa) << DTypeName(t);
      }
  }
}

TEST(RowOps, IsaSelection) {
  EXPECT_EQ(SelectRowOpsIsa("ref"), RowOpsIsa::kRef);
  const RowOpsIsa best = SelectRowOpsIsa("");
  EXPECT_TRUE(RowOpsIsaSupported(best));
  EXPECT_EQ(SelectRowOpsIsa("avx512"), best);
  EXPECT_EQ(SelectRowOpsIsa("avx2-q4_k"), best);
  EXPECT_EQ(SelectRowOpsIsa("avx2"),
            RowOpsIsaSupported(RowOpsIsa::kAvx2) ? RowOpsIsa::kAvx2 : RowOpsIsa::kRef);
  EXPECT_FALSE(MakeStoredRows(DType::kQ4_K, 128).ok());  // not whole blocks
  EXPECT_FALSE(MakeStoredRows(DType::kI32, 16).ok());
}

}  // namespace
}  // namespace moerun
