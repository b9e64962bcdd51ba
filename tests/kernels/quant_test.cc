// Quantised dot tiles (kernels/quant_dot.h) against an independent double-precision oracle
// (dequantised weights x dequantised activations), batch invariance, and exactness when every
// scale is a power of two; the interleaved layout (every block format) is lossless and gives the
// scalar reference's bits on every ISA.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "../testing/quant_dot_inputs.h"
#include "core/block_quant.h"
#include "core/cpu_features.h"
#include "kernels/block_interleave.h"
#include "kernels/quant_dot.h"

namespace moerun {
namespace {

using quant_test::Acts;
using quant_test::ForEachShapeInput;
using quant_test::kShapeRows;
using quant_test::PackForTile;
using quant_test::QuantizeActs;
using quant_test::QuantizeWeights;
using quant_test::RandomTileCase;
using quant_test::RawWeights;
using quant_test::TileCase;
using quant_test::Weights;

constexpr DType kFormats[] = {DType::kQ8_0, DType::kQ4_0, DType::kQ5_0, DType::kQ5_1,
                              DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

std::vector<QuantDotIsa> SupportedIsas() {
  std::vector<QuantDotIsa> out;
  for (QuantDotIsa isa : kAllQuantDotIsas) {
    if (QuantDotIsaSupported(isa)) out.push_back(isa);
  }
  return out;
}

// Oracle: sum over blocks [kb0, kb1) of dequantised weight * (q * d) activation in double, and
// the sum of |terms| for the tolerance.
void Oracle(const std::vector<float>& wdeq, int64_t k, const Acts& a, int64_t m, int j, int64_t kb0,
            int64_t kb1, double* dot, double* mag) {
  *dot = 0;
  *mag = 0;
  for (int64_t e = kb0 * 32; e < kb1 * 32; ++e) {
    const double av = static_cast<double>(a.q[static_cast<size_t>(m * a.view.ldq + e)]) *
                      a.d[static_cast<size_t>(m * a.view.ldb + e / 32)];
    const double t = static_cast<double>(wdeq[static_cast<size_t>(j * k + e)]) * av;
    *dot += t;
    *mag += std::fabs(t);
  }
}

void CheckAgainstOracle(QuantDotIsa isa, DType t, const Weights& w, int64_t k, const Acts& a, int64_t m0,
                        int64_t m1, int n_rows, int64_t kb0, int64_t kb1) {
  std::vector<float> out(static_cast<size_t>((m1 - m0) * 16), -999.0f);
  QuantDotTileFor(isa)(t, w.packed.data(), w.row_bytes, n_rows, a.view, m0, m1, kb0, kb1, out.data());
  for (int64_t m = m0; m < m1; ++m) {
    for (int j = 0; j < n_rows; ++j) {
      double dot, mag;
      Oracle(w.deq, k, a, m, j, kb0, kb1, &dot, &mag);
      const double got = out[static_cast<size_t>((m - m0) * 16 + j)];
      ASSERT_LE(std::fabs(got - dot), 1e-5 * mag + 1e-30)
          << QuantDotIsaName(isa) << " " << DTypeName(t) << " m=" << m << " j=" << j << " k=" << k << " kb=["
          << kb0 << "," << kb1 << ") got " << got << " want " << dot;
    }
  }
}

TEST(QuantDotTest, ActivationQuantisation) {
  std::vector<float> x(40, 0.0f);
  x[0] = 2.0f;    // amax of block 0 -> q = 127
  x[1] = -1.0f;   // -63.5 -> -64 (ties to even)
  x[2] = 0.5f;    // 31.75 -> 32
  x[33] = -3.0f;  // block 1 (elements 32..39, padded with zeros to 64)
  std::vector<int8_t> q(64, 99);
  float d[2];
  int32_t s[2];
  QuantizeActivationRow(x.data(), 40, q.data(), d, s);
  EXPECT_EQ(q[0], 127);
  EXPECT_EQ(q[1], -64);
  EXPECT_EQ(q[2], 32);
  EXPECT_EQ(q[3], 0);
  EXPECT_EQ(q[33], -127);
  for (int e = 40; e < 64; ++e) EXPECT_EQ(q[e], 0);
  EXPECT_EQ(d[0], 2.0f / 127.0f);
  EXPECT_EQ(d[1], 3.0f / 127.0f);
  EXPECT_EQ(s[0], 127 - 64 + 32);
  EXPECT_EQ(s[1], -127);
  std::vector<float> z(32, 0.0f);
  QuantizeActivationRow(z.data(), 32, q.data(), d, s);
  EXPECT_EQ(d[0], 0.0f);
  EXPECT_EQ(s[0], 0);
  for (int e = 0; e < 32; ++e) EXPECT_EQ(q[e], 0);
}

// The SIMD activation quantisers produce the scalar one's bytes (ties, tails, zero blocks).
TEST(QuantDotTest, ActivationQuantisersAgree) {
  std::mt19937 rng(17);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  using Fn = void (*)(const float*, int64_t, int8_t*, float*, int32_t*);
  std::vector<std::pair<const char*, Fn>> fns;
  if (QuantDotIsaSupported(QuantDotIsa::kAvx2)) fns.push_back({"avx2", &QuantizeActivationRowAvx2});
  if (QuantDotIsaSupported(QuantDotIsa::kAvx512Vnni))
    fns.push_back({"avx512vnni", &QuantizeActivationRowAvx512Vnni});
  for (int trial = 0; trial < 60; ++trial) {
    const int64_t k = 1 + static_cast<int64_t>(rng() % 700), nb = (k + 31) / 32;
    std::vector<float> x(static_cast<size_t>(k));
    for (float& v : x) v = nd(rng);
    if (trial % 4 == 1) {
      for (float& v : x) v = static_cast<float>(static_cast<int>(rng() % 255) - 127) * 0.5f;  // ties at .5
    }
    if (trial % 4 == 2) std::fill(x.begin(), x.begin() + std::min<int64_t>(k, 40), 0.0f);  // zero block
    std::vector<int8_t> q0(static_cast<size_t>(nb * 32)), q1(q0.size());
    std::vector<float> d0(static_cast<size_t>(nb)), d1(d0.size());
    std::vector<int32_t> s0(d0.size()), s1(d0.size());
    QuantizeActivationRowRef(x.data(), k, q0.data(), d0.data(), s0.data());
    for (const auto& [name, fn] : fns) {
      fn(x.data(), k, q1.data(), d1.data(), s1.data());
      ASSERT_EQ(q0, q1) << name << " k=" << k;
      ASSERT_EQ(std::memcmp(d0.data(), d1.data(), d0.size() * sizeof(float)), 0) << name;
      ASSERT_EQ(s0, s1) << name;
    }
  }
}

TEST(QuantDotTest, MatchesOracleRandomAndAdversarial) {
  std::mt19937 rng(1234);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (DType t : kFormats) {
    const bool kq = DTypeBlockSize(t) == 256;
    for (int trial = 0; trial < 12; ++trial) {
      const int64_t k = kq ? 256 * (1 + trial % 4) : 32 * (1 + (trial * 13) % 70);  // Q8_0/Q4_0: K % 256 != 0
      const int64_t rows = 24;
      std::vector<float> x(static_cast<size_t>(rows * k));
      for (float& v : x) v = nd(rng);
      if (trial % 3 == 1) {
        for (float& v : x) v = (rng() & 1) ? 1.0f : -1.0f;  // every activation q = +-127
      }
      const Acts a = QuantizeActs(x, rows, k);
      Weights w;
      if (trial % 2 == 0) {
        std::vector<float> wf(static_cast<size_t>(16 * k));
        for (float& v : wf) v = nd(rng) * 0.1f;
        w = QuantizeWeights(t, wf, k);
      } else {
        w = RawWeights(t, k, rng);
      }
      const int64_t nb = k / 32, step = kq ? 8 : 1;
      for (QuantDotIsa isa : SupportedIsas()) {
        for (int sub = 0; sub < 4; ++sub) {
          int64_t kb0 = 0, kb1 = nb;
          if (sub > 0) {
            kb0 = static_cast<int64_t>(rng() % static_cast<unsigned>(nb / step)) * step;
            kb1 = kb0 + step + static_cast<int64_t>(rng() % static_cast<unsigned>((nb - kb0) / step)) * step;
          }
          const int64_t m0 = static_cast<int64_t>(rng() % 4);
          const int64_t m1 = m0 + 1 + static_cast<int64_t>(rng() % 20);
          const int n_rows = 1 + static_cast<int>(rng() % 16);
          CheckAgainstOracle(isa, t, w, k, a, m0, m1, n_rows, kb0, kb1);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

// The same (m, j) element computed inside different tiles (m ranges, row subsets) is bitwise equal.
TEST(QuantDotTest, BatchInvariance) {
  std::mt19937 rng(99);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (DType t : kFormats) {
    const int64_t k = DTypeBlockSize(t) == 256 ? 512 : 352, rows = 20;
    std::vector<float> x(static_cast<size_t>(rows * k)), wf(static_cast<size_t>(16 * k));
    for (float& v : x) v = nd(rng);
    for (float& v : wf) v = nd(rng);
    const Acts a = QuantizeActs(x, rows, k);
    const Weights w = QuantizeWeights(t, wf, k);
    const int64_t nb = k / 32;
    for (QuantDotIsa isa : SupportedIsas()) {
      QuantDotTileFn fn = QuantDotTileFor(isa);
      std::vector<float> full(static_cast<size_t>(rows * 16));
      fn(t, w.packed.data(), w.row_bytes, 16, a.view, 0, rows, 0, nb, full.data());
      for (int trial = 0; trial < 30; ++trial) {
        const int64_t m0 = static_cast<int64_t>(rng() % rows);
        const int64_t m1 = m0 + 1 + static_cast<int64_t>(rng() % static_cast<unsigned>(rows - m0));
        // Interleaved blocks are read whole (rows past n_rows are computed, not stored).
        const int j0 = IsInterleavedBlockType(t) ? 0 : static_cast<int>(rng() % 16);
        const int n = 1 + static_cast<int>(rng() % static_cast<unsigned>(16 - j0));
        std::vector<float> part(static_cast<size_t>((m1 - m0) * 16));
        fn(t, w.packed.data() + j0 * w.row_bytes, w.row_bytes, n, a.view, m0, m1, 0, nb, part.data());
        for (int64_t m = m0; m < m1; ++m) {
          for (int j = 0; j < n; ++j) {
            const float p = part[static_cast<size_t>((m - m0) * 16 + j)];
            const float f = full[static_cast<size_t>(m * 16 + j0 + j)];
            ASSERT_EQ(std::memcmp(&p, &f, sizeof p), 0) << QuantDotIsaName(isa) << " " << DTypeName(t);
          }
        }
      }
    }
  }
}

// Every path agrees with the exact oracle (and, InterleavedIsasGiveTheReferenceBits below, with
// the scalar reference bit for bit).
TEST(QuantDotTest, IsasAgreeWithOracle) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (DType t : kFormats) {
    const int64_t k = 1024, rows = 9;
    std::vector<float> x(static_cast<size_t>(rows * k));
    for (float& v : x) v = nd(rng);
    const Acts a = QuantizeActs(x, rows, k);
    const Weights w = RawWeights(t, k, rng);
    for (QuantDotIsa isa : SupportedIsas()) {
      CheckAgainstOracle(isa, t, w, k, a, 0, rows, 16, 0, k / 32);
      if (HasFatalFailure()) return;
    }
  }
}

// Power-of-two scales (weights 2^-2 / 2^-4, activations 2^-3) and small enough sums: every f32
// operation is exact, so the result equals the exactly computed integer value.
TEST(QuantDotTest, ExactWithPowerOfTwoScales) {
  std::mt19937 rng(77);
  for (DType t : kFormats) {
    const bool kq = DTypeBlockSize(t) == 256;
    const int64_t k = kq ? 256 : 512, rows = 5;
    // Activations: one element per block at 127 * 2^-3 (so d = 2^-3 exactly), others j * 2^-3.
    const int amax_other = t == DType::kQ8_0 || t == DType::kQ4_0 ? 127 : 3;
    std::vector<float> x(static_cast<size_t>(rows * k));
    for (size_t i = 0; i < x.size(); ++i) {
      const int v = (i % 32 == 5) ? 127 : static_cast<int>(rng() % (2 * amax_other + 1)) - amax_other;
      x[i] = static_cast<float>(v) * 0.125f;
    }
    const Acts a = QuantizeActs(x, rows, k);
    Weights w;
    w.row_bytes = DTypeRowBytes(t, k);
    w.bytes.resize(16 * w.row_bytes);
    for (uint8_t& b : w.bytes) b = static_cast<uint8_t>(rng());
    const size_t bb = DTypeBlockBytes(t);
    for (size_t off = 0; off < w.bytes.size(); off += bb) {
      const uint16_t quarter = 0x3400, sixteenth = 0x2C00;  // f16 2^-2, 2^-4
      if (t == DType::kQ6_K) {
        std::memcpy(&w.bytes[off + 208], &sixteenth, 2);
      } else if (DTypeBlockSize(t) == 256) {  // Q4_K / Q5_K: d, dmin
        std::memcpy(&w.bytes[off], &sixteenth, 2);
        std::memcpy(&w.bytes[off + 2], &sixteenth, 2);
      } else {
        std::memcpy(&w.bytes[off], &quarter, 2);
        if (t == DType::kQ5_1) std::memcpy(&w.bytes[off + 2], &sixteenth, 2);  // m
      }
    }
    w.deq.resize(static_cast<size_t>(16 * k));
    DequantizeRow(t, w.bytes.data(), w.deq.data(), 16 * k);
    PackForTile(t, &w);
    for (QuantDotIsa isa : SupportedIsas()) {
      std::vector<float> out(static_cast<size_t>(rows * 16));
      QuantDotTileFor(isa)(t, w.packed.data(), w.row_bytes, 16, a.view, 0, rows, 0, k / 32, out.data());
      for (int64_t m = 0; m < rows; ++m) {
        for (int j = 0; j < 16; ++j) {
          double dot, mag;
          Oracle(w.deq, k, a, m, j, 0, k / 32, &dot, &mag);
          ASSERT_EQ(static_cast<double>(out[static_cast<size_t>(m * 16 + j)]), dot)
              << QuantDotIsaName(isa) << " " << DTypeName(t) << " m=" << m << " j=" << j;
        }
      }
    }
  }
}

// The interleaved layout moves the GGUF bytes losslessly.
TEST(QuantDotTest, InterleaveRoundTrip) {
  std::mt19937 rng(8);
  for (DType t : kFormats) {
    const int64_t k = DTypeBlockSize(t) == 256 ? 768 : 96;
    const Weights w = RawWeights(t, k, rng);
    const size_t bb = DTypeBlockBytes(t);
    for (int j = 0; j < 16; ++j) {
      for (int64_t kb = 0; kb < 3; ++kb) {
        std::vector<uint8_t> back(bb);
        DeinterleaveBlock(t, w.packed.data() + kb * InterleavedColumnBytes(t), j, back.data());
        ASSERT_EQ(std::memcmp(back.data(), w.bytes.data() + j * w.row_bytes + kb * bb, bb), 0)
            << DTypeName(t);
      }
    }
    // The f16 scales of a column come first, in row order (Q6_K's d is the block's last 2 bytes).
    uint16_t d5;
    std::memcpy(&d5, w.packed.data() + InterleavedColumnBytes(t) + 2 * 5, 2);
    EXPECT_EQ(std::memcmp(&d5, w.bytes.data() + 5 * w.row_bytes + bb + InterleavedFieldOffset(t, 0), 2), 0);
    if (t == DType::kQ6_K) {  // then the int8 sub-block scales: word 0 holds scales 0..3 of each row
      EXPECT_EQ(std::memcmp(w.packed.data() + 32 + 4 * 5, w.bytes.data() + 5 * w.row_bytes + 192, 4), 0);
    }
  }
}

// Every supported ISA's tile over (m0..m1, kb0..kb1, n rows) is bitwise equal to the reference's.
void ExpectReferenceBits(DType t, const Weights& w, const Acts& a, int64_t m0, int64_t m1, int64_t kb0,
                         int64_t kb1, int n) {
  std::vector<float> want(static_cast<size_t>((m1 - m0) * 16), 0.0f);
  QuantDotTileRef(t, w.packed.data(), w.row_bytes, n, a.view, m0, m1, kb0, kb1, want.data());
  for (QuantDotIsa isa : SupportedIsas()) {
    std::vector<float> got(want.size(), 0.0f);
    QuantDotTileFor(isa)(t, w.packed.data(), w.row_bytes, n, a.view, m0, m1, kb0, kb1, got.data());
    ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
        << QuantDotIsaName(isa) << " " << DTypeName(t) << " m=[" << m0 << "," << m1 << ") kb=[" << kb0 << ","
        << kb1 << ") n=" << n;
  }
}

// On every block format (all interleaved) every ISA performs the reference's f32 operations:
// bitwise equal, for any tile shape (1..19 activation rows: every R split of the kernels, 1..16
// weight rows) and K range (as deterministic K-blocks cut it), with normal and all-+-127
// activations.
TEST(QuantDotTest, InterleavedIsasGiveTheReferenceBits) {
  std::mt19937 rng(21);
  for (DType t : kFormats) {
    ForEachShapeInput(t, rng, [&](const Acts& a, const Weights& w) {
      for (int trial = 0; trial < 20 && !HasFatalFailure(); ++trial) {
        const TileCase c = RandomTileCase(rng, DTypeBlockSize(t) == 256, kShapeRows);
        ExpectReferenceBits(t, w, a, c.m0, c.m1, c.kb0, c.kb1, c.n);
      }
    });
    if (HasFatalFailure()) return;
  }
}

// Q6_K at the edge of the exactness argument (quant_dot_interleaved_x86.h): every q = 0 or 63,
// scales -128 or 127 and activations +-127 aligned with them, so |I| reaches 2 x 128 x 16 x 32 x 127
// (just under 2^24); the f32 combination of the two scaled halves must still give the reference's bits.
TEST(QuantDotTest, Q6KLargestSumsGiveTheReferenceBits) {
  const DType t = DType::kQ6_K;
  const int64_t k = 512, rows = 9;
  for (int variant = 0; variant < 4; ++variant) {
    const bool q_zero = variant & 1, scale_min = variant & 2;
    Weights w;
    w.row_bytes = DTypeRowBytes(t, k);
    w.bytes.assign(16 * w.row_bytes, q_zero ? 0x00 : 0xFF);  // q = 0 (value -32) or 63 (value 31)
    for (size_t off = 0; off < w.bytes.size(); off += DTypeBlockBytes(t)) {
      std::memset(&w.bytes[off + 192], scale_min ? 0x80 : 0x7F, 16);  // int8 scales -128 or 127
      const uint16_t d = F32ToF16(0.01f);
      std::memcpy(&w.bytes[off + 208], &d, 2);
    }
    PackForTile(t, &w);
    // Activations q = +-127: row 0 all +127 (the largest |I|), the other rows mostly.
    std::vector<float> x(static_cast<size_t>(rows * k));
    std::mt19937 rng(variant);
    for (size_t i = 0; i < x.size(); ++i)
      x[i] = (i < static_cast<size_t>(k) || rng() % 4 != 0) ? 1.0f : -1.0f;
    const Acts a = QuantizeActs(x, rows, k);
    for (int64_t m1 = 1; m1 <= rows; ++m1) {
      ExpectReferenceBits(t, w, a, 0, m1, 0, k / 32, 16);
      ExpectReferenceBits(t, w, a, 0, m1, 8, k / 32, 16);
      if (HasFatalFailure()) return;
    }
  }
}

// The nibble formats at their kernels' edges: the 5-bit ones at the AVX2 int16 bound (4 words of
// vpmaddubsw pair sums, 4 x 2 x 31 x 127 < 2^15), Q4_0 / Q4_K where the AVX-512 decode tiles sum
// the high nibbles in place as 16 q (up to 16 x 15 x 127 x 16 per lane, shifted back exactly).
// Every q = 31 / 15 (all bits set) or 0 (every fifth bit clear; the K formats keep their 6-bit
// scales and mins at 63), activations +-127, row 0 all +127; every ISA and tile height (1, 2, ...
// rows: the decode tiles among them) still gives the reference's bits, and the values are the
// double oracle's.
TEST(QuantDotTest, NibbleFormatLargestSumsGiveTheReferenceBits) {
  for (const DType t : {DType::kQ4_0, DType::kQ4_K, DType::kQ5_0, DType::kQ5_1, DType::kQ5_K}) {
    SCOPED_TRACE(DTypeName(t));
    const int64_t k = 512, rows = 9;
    for (const uint8_t fill : {uint8_t{0xFF}, uint8_t{0x00}}) {
      Weights w;
      w.row_bytes = DTypeRowBytes(t, k);
      w.bytes.assign(16 * w.row_bytes, fill);
      for (size_t off = 0; off < w.bytes.size(); off += DTypeBlockBytes(t)) {
        const uint16_t d = F32ToF16(0.01f);
        std::memcpy(&w.bytes[off], &d, 2);
        if (InterleavedHalfFields(t) == 2) std::memcpy(&w.bytes[off + 2], &d, 2);  // m / dmin
        if (DTypeBlockSize(t) == 256) std::memset(&w.bytes[off + 4], 0xFF, 12);    // sc = m = 63
      }
      w.deq.resize(static_cast<size_t>(16 * k));
      DequantizeRow(t, w.bytes.data(), w.deq.data(), 16 * k);
      PackForTile(t, &w);
      std::vector<float> x(static_cast<size_t>(rows * k));
      std::mt19937 rng(fill);
      for (size_t i = 0; i < x.size(); ++i)
        x[i] = (i < static_cast<size_t>(k) || rng() % 4 != 0) ? 1.0f : -1.0f;
      const Acts a = QuantizeActs(x, rows, k);
      for (int64_t m1 = 1; m1 <= rows; ++m1) {
        ExpectReferenceBits(t, w, a, 0, m1, 0, k / 32, 16);
        if (HasFatalFailure()) return;
      }
      std::vector<float> out(16);
      QuantDotTileRef(t, w.packed.data(), w.row_bytes, 16, a.view, 0, 1, 0, k / 32, out.data());
      double want = 0, mag = 0;
      Oracle(w.deq, k, a, 0, 3, 0, k / 32, &want, &mag);
      EXPECT_NEAR(out[3], want, 1e-5 * mag + 1e-6);
    }
  }
}

TEST(QuantDotTest, DispatchHelpers) {
  const CpuFeatures& f = GetCpuFeatures();
  EXPECT_TRUE(QuantDotIsaSupported(QuantDotIsa::kRef));
  EXPECT_EQ(QuantDotIsaSupported(QuantDotIsa::kAvx2), f.HasAvx2Kernels());
  EXPECT_EQ(QuantDotIsaSupported(QuantDotIsa::kAvx512Vnni), f.HasAvx512VnniKernels());
  EXPECT_TRUE(QuantDotIsaSupported(BestQuantDotIsa()));
  std::printf("quant dot ISAs here: best %s; cpu: %s\n", QuantDotIsaName(BestQuantDotIsa()),
              f.ToString().c_str());
}

}  // namespace
}  // namespace moerun
