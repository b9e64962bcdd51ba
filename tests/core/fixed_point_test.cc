// AccumulateFixed: every path (scalar, AVX-512) gives bitwise the same 128-bit integers as a plain
// sum of ToFixed terms, on adversarial values (huge and tiny magnitudes, inf/NaN, subnormals,
// negative zeros, exact cancellation, the fast range's boundaries, > 2^14 terms per column) and
// whatever the order of the terms.
#include "core/fixed_point.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace moerun {
namespace {

struct Terms {
  int64_t cols = 0;
  std::vector<std::vector<float>> y;  // [rows][cols]
  std::vector<float> w;               // [rows]

  std::vector<FixedTermRow> Rows() const {
    std::vector<FixedTermRow> r;
    for (size_t i = 0; i < y.size(); ++i) r.push_back({y[i].data(), w[i]});
    return r;
  }
};

std::vector<Fixed128> Reference(const Terms& t) {
  std::vector<Fixed128> acc(static_cast<size_t>(t.cols), 0);
  for (size_t r = 0; r < t.y.size(); ++r)
    for (int64_t c = 0; c < t.cols; ++c) acc[c] += ToFixed(t.w[r] * t.y[r][c]);
  return acc;
}

std::vector<Fixed128> RunPath(const Terms& t, FixedPath path, std::vector<FixedTermRow> rows = {}) {
  if (rows.empty()) rows = t.Rows();
  std::vector<Fixed128> acc(static_cast<size_t>(t.cols), 0);
  AccumulateFixed(acc.data(), t.cols, rows, path);
  return acc;
}

std::vector<FixedPath> Paths() {
  std::vector<FixedPath> p = {FixedPath::kScalar, FixedPath::kAuto};
  if (FixedPathSupported(FixedPath::kAvx512)) p.push_back(FixedPath::kAvx512);
  if (FixedPathSupported(FixedPath::kAvx2)) p.push_back(FixedPath::kAvx2);
  return p;
}

void ExpectAllPathsEqual(const Terms& t, const char* what) {
  const std::vector<Fixed128> ref = Reference(t);
  for (FixedPath p : Paths()) {
    const std::vector<Fixed128> got = RunPath(t, p);
    for (int64_t c = 0; c < t.cols; ++c) {
      ASSERT_TRUE(got[c] == ref[c]) << what << ": path " << FixedPathName(p) << " column " << c << " differs";
    }
    // Reversed and shuffled term order: the same integers.
    std::vector<FixedTermRow> rows = t.Rows();
    std::reverse(rows.begin(), rows.end());
    std::mt19937 rng(7);
    std::shuffle(rows.begin(), rows.end(), rng);
    const std::vector<Fixed128> shuffled = RunPath(t, p, rows);
    for (int64_t c = 0; c < t.cols; ++c)
      ASSERT_TRUE(shuffled[c] == ref[c]) << what << " shuffled, column " << c;
  }
}

float Bits(uint32_t b) { return std::bit_cast<float>(b); }

// A random f32 with a uniformly random exponent in [lo, hi] (biased), random mantissa and sign.
float RandomFloat(std::mt19937& rng, int lo, int hi) {
  std::uniform_int_distribution<uint32_t> e(static_cast<uint32_t>(lo), static_cast<uint32_t>(hi));
  std::uniform_int_distribution<uint32_t> m(0, 0x7fffffu), s(0, 1);
  return Bits((s(rng) << 31) | (e(rng) << 23) | m(rng));
}

TEST(FixedPoint, AvxPathIsReportedConsistently) {
  EXPECT_TRUE(FixedPathSupported(FixedPath::kScalar));
  EXPECT_TRUE(FixedPathSupported(FixedPath::kAuto));
  std::printf("fixed-point paths: avx512 %s, avx2 %s\n",
              FixedPathSupported(FixedPath::kAvx512) ? "yes" : "no",
              FixedPathSupported(FixedPath::kAvx2) ? "yes" : "no");
}

TEST(FixedPoint, ToFixedBasics) {
  EXPECT_TRUE(ToFixed(0.0f) == 0);
  EXPECT_TRUE(ToFixed(-0.0f) == 0);
  EXPECT_TRUE(ToFixed(1.0f) == Fixed128{1} << kFixedFracBits);
  EXPECT_TRUE(ToFixed(-1.0f) == -(Fixed128{1} << kFixedFracBits));
  EXPECT_TRUE(ToFixed(std::ldexp(1.0f, -80)) == 1);
  EXPECT_TRUE(ToFixed(std::ldexp(1.0f, -81)) == 0);
  EXPECT_TRUE(ToFixed(-std::ldexp(1.5f, -80)) == -1);  // truncation toward zero
  EXPECT_EQ(FromFixed(ToFixed(0.1f)), 0.1f);
  EXPECT_EQ(FromFixed(ToFixed(-123.456f)), -123.456f);
}

// FromFixed as it was first written (long double + ldexp): the integer-only version must match it.
float FromFixedLongDouble(Fixed128 f) {
  return static_cast<float>(std::ldexp(static_cast<long double>(f), -kFixedFracBits));
}

TEST(FixedPoint, FromFixedMatchesLongDoubleRounding) {
  std::vector<Fixed128> values = {0,
                                  1,
                                  -1,
                                  Fixed128{1} << 126,
                                  -(Fixed128{1} << 126),
                                  static_cast<Fixed128>(UFixed128{1} << 127),
                                  (Fixed128{1} << 126) - 1};
  for (int b = 0; b < 127; ++b) {
    const Fixed128 p = Fixed128{1} << b;
    for (Fixed128 v : {p, p - 1, p + 1, p + (p >> 24), p + (p >> 24) + 1, p + (p >> 25), p + (p >> 25) + 1,
                       p + (p >> 64), p + (p >> 64) + (p >> 25), p - (p >> 65)}) {
      values.push_back(v);
      values.push_back(-v);
    }
  }
  std::mt19937_64 rng(6);
  for (int i = 0; i < 200000; ++i) {
    const int bits = static_cast<int>(rng() % 127);
    UFixed128 u = (static_cast<UFixed128>(rng()) << 64) | rng();
    u >>= 127 - bits;
    if (i % 3 == 0) u |= (UFixed128{1} << (bits > 40 ? bits - 40 : 0));  // ties and near-ties
    if (i % 5 == 0 && bits > 64) u &= ~((UFixed128{1} << (bits - 64)) - 1);
    const Fixed128 v = static_cast<Fixed128>(u);
    values.push_back(i % 2 ? -v : v);
  }
  for (Fixed128 v : values) {
    const float want = FromFixedLongDouble(v), got = FromFixed(v);
    ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(want))
        << "hi " << static_cast<uint64_t>(static_cast<UFixed128>(v) >> 64) << " lo "
        << static_cast<uint64_t>(v);
  }
}

TEST(FixedPoint, RandomExponentsEveryRange) {
  std::mt19937 rng(1);
  for (auto [lo, hi] : {std::pair{100, 140}, std::pair{1, 254}, std::pair{0, 255}, std::pair{60, 100}}) {
    // Wide ranges saturate (|v| >= 2^47); two saturated terms in one column would overflow the
    // 128-bit sum, so those rows are summed one at a time.
    const bool saturates = hi > 127 + 40;
    for (int part = 0; part < (saturates ? 50 : 1); ++part) {
      Terms t;
      t.cols = 16 * 5 + 7;  // a scalar tail too
      for (int r = 0; r < (saturates ? 1 : 50); ++r) {
        t.w.push_back((part + r) % 7 == 0 ? -1.0f : RandomFloat(rng, 120, 130));
        std::vector<float> row(static_cast<size_t>(t.cols));
        for (float& v : row) v = RandomFloat(rng, lo, hi);
        t.y.push_back(row);
      }
      ExpectAllPathsEqual(t, "random exponents");
    }
  }
}

TEST(FixedPoint, AdversarialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  const float big = 0x1p16f;
  const std::vector<float> specials = {0.0f,
                                       -0.0f,
                                       1.0f,
                                       -1.0f,
                                       std::nextafter(big, 0.0f),
                                       -std::nextafter(big, 0.0f),
                                       big,
                                       -big,
                                       0x1p-32f,
                                       -0x1p-32f,
                                       std::nextafter(0x1p-32f, 0.0f),
                                       std::nextafter(0x1p-32f, 1.0f),
                                       0x1p-56f,
                                       0x1p-80f,
                                       -0x1p-80f,
                                       0x1.8p-80f,
                                       -0x1.8p-80f,
                                       0x1p-81f,
                                       std::numeric_limits<float>::min(),
                                       std::numeric_limits<float>::denorm_min(),
                                       -std::numeric_limits<float>::denorm_min(),
                                       Bits(0x007fffffu),
                                       std::numeric_limits<float>::max(),
                                       -std::numeric_limits<float>::max(),
                                       0x1p47f,
                                       0x1p100f,
                                       inf,
                                       -inf,
                                       std::numeric_limits<float>::quiet_NaN(),
                                       3.0f * 0x1p-33f,
                                       0x1.fffffep15f,
                                       0x1.fffffep-33f,
                                       1e-30f,
                                       1e30f};
  std::mt19937 rng(2);
  // Every special alone in a row of ordinary values, so one bad lane sends its group to scalar.
  for (float s : specials) {
    Terms t;
    t.cols = 48;
    for (int r = 0; r < 9; ++r) {
      t.w.push_back(r == 4 ? 1.0f : RandomFloat(rng, 122, 127));
      std::vector<float> row(48);
      for (float& v : row) v = RandomFloat(rng, 110, 130);
      row[static_cast<size_t>(5 + r)] = s;
      t.y.push_back(row);
    }
    ExpectAllPathsEqual(t, "special value");
  }
  // All specials against all specials as weight x value, one weight at a time (several saturated
  // terms in one column would overflow the 128-bit sum, outside the documented range).
  for (float w : specials) {
    Terms t;
    t.cols = static_cast<int64_t>(specials.size());
    t.w.push_back(w);
    t.y.push_back(specials);
    ExpectAllPathsEqual(t, "special x special");
  }
}

TEST(FixedPoint, CancellationAndNegativeZeros) {
  std::mt19937 rng(3);
  Terms t;
  t.cols = 64;
  std::vector<float> pos(64), neg(64);
  for (size_t c = 0; c < 64; ++c) {
    pos[c] = RandomFloat(rng, 90, 141);
    neg[c] = -pos[c];
  }
  for (int r = 0; r < 10; ++r) {
    t.w.push_back(0.75f);
    t.y.push_back(r % 2 ? pos : neg);
  }
  t.w.push_back(-0.0f);
  t.y.push_back(pos);
  ExpectAllPathsEqual(t, "cancellation");
  for (FixedPath p : Paths()) {
    for (Fixed128 v : RunPath(t, p)) EXPECT_TRUE(v == 0) << FixedPathName(p);
  }
}

TEST(FixedPoint, ManyTermsCrossTheInt64Batches) {
  std::mt19937 rng(4);
  Terms t;
  t.cols = 32;
  const int rows = (1 << 14) * 2 + 123;
  for (int r = 0; r < rows; ++r) {
    t.w.push_back(1.0f);
    std::vector<float> row(32);
    // Near the top of the fast range, same sign: the int64 lane sums would overflow unbatched.
    for (float& v : row) v = RandomFloat(rng, 127 + 15, 127 + 15);
    for (float& v : row) v = std::fabs(v);
    t.y.push_back(row);
  }
  ExpectAllPathsEqual(t, "many terms");
}

TEST(FixedPoint, MoeLikeRowsAreOrderIndependent) {
  // 6 slots x 8 K-blocks + 8 shared-expert blocks, H = 2048: the shape deterministic mode sums.
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  Terms t;
  t.cols = 2048;
  for (int r = 0; r < 56; ++r) {
    t.w.push_back(std::fabs(nd(rng)) * 4);
    std::vector<float> row(2048);
    for (float& v : row) v = nd(rng);
    t.y.push_back(row);
  }
  ExpectAllPathsEqual(t, "moe rows");
}

// The fused deterministic down projection adds 8 terms per call to each token row and keeps the
// partial sums in int64 limbs until a flush: every path gives the integers of the plain sum, with
// terms the vector paths cannot take (huge, NaN, subnormal) among them and a tail of columns past
// the last whole vector; the flush leaves the limbs zero for the next row.
TEST(FixedPoint, LimbsFlushedOnceGiveThePlainSum) {
  std::mt19937 rng(11);
  Terms t;
  t.cols = 70;  // four 16-column vectors and a tail of 6
  for (int r = 0; r < 8 * 40; ++r) {
    std::vector<float> row(static_cast<size_t>(t.cols));
    for (float& v : row) v = RandomFloat(rng, 100, 140);  // 2^-27 .. 2^13
    t.y.push_back(row);
    t.w.push_back(RandomFloat(rng, 120, 127));
  }
  t.y[9][3] = 0x1p20f;                                    // outside the fast range
  t.y[17][20] = std::numeric_limits<float>::quiet_NaN();  // poisons column 20
  t.y[30][40] = Bits(0x00000123u);                        // subnormal
  t.y[31][69] = -0x1p17f;                                 // in the tail
  const std::vector<Fixed128> ref = Reference(t);
  const std::vector<FixedTermRow> rows = t.Rows();
  for (FixedPath p : Paths()) {
    std::vector<Fixed128> acc(static_cast<size_t>(t.cols), 0);
    std::vector<int64_t> hi(static_cast<size_t>(t.cols), 0), lo(static_cast<size_t>(t.cols), 0);
    const FixedLimbs limbs{hi.data(), lo.data()};
    for (size_t r0 = 0; r0 < rows.size(); r0 += 8)
      AccumulateFixed(acc.data(), t.cols, std::span(rows).subspan(r0, 8), p, limbs);
    FlushFixedLimbs(acc.data(), t.cols, limbs);
    for (int64_t c = 0; c < t.cols; ++c) {
      ASSERT_TRUE(acc[c] == ref[c]) << "path " << FixedPathName(p) << " column " << c << " differs";
      ASSERT_EQ(hi[c], 0);
      ASSERT_EQ(lo[c], 0);
    }
  }
}

}  // namespace
}  // namespace moerun

namespace moerun {
namespace {

// A NaN or ±Inf term is never dropped from a deterministic sum: FromFixedChecked gives NaN back,
// whatever the finite terms beside it (they cannot cancel it) and for many poisoned terms.
TEST(FixedPoint, NonFiniteTermsSurviveTheSum) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    Fixed128 sum = ToFixed(1.5f) + ToFixed(bad) + ToFixed(-0x1p36f);
    EXPECT_TRUE(std::isnan(FromFixedChecked(sum)));
    sum += Fixed128{255} * ToFixed(bad);  // 256 poisoned terms: 2^126, no overflow
    EXPECT_TRUE(std::isnan(FromFixedChecked(sum)));
  }
  EXPECT_EQ(FromFixedChecked(ToFixed(1.5f) + ToFixed(-0.25f)), 1.25f);
  EXPECT_EQ(FromFixedChecked(ToFixed(-0x1p36f)), -0x1p36f);
  EXPECT_TRUE(std::isnan(FromFixedChecked(ToFixed(0x1p37f))));  // beyond the checked range
}

}  // namespace
}  // namespace moerun
