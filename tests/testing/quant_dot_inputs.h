// Test inputs for the quantised dot tiles (kernels/quant_dot.h), shared by quant_test.cc and
// quant_dot_avx512_emulated_test.cc: activations quantised per row with padded strides, and 16-row
// weights (GGUF rows, their interleaved packing and their dequantised values).
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "core/block_quant.h"
#include "kernels/block_interleave.h"
#include "kernels/quant_dot.h"

namespace moerun::quant_test {

// Quantised activations [rows, k] with a padded stride (ldq > k_pad) to catch stride bugs.
struct Acts {
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<int32_t> sum;
  Q8Activations view;
};

inline Acts QuantizeActs(const std::vector<float>& x, int64_t rows, int64_t k) {
  Acts a;
  const int64_t nb = (k + 31) / 32;
  const int64_t ldq = nb * 32 + 64, ldb = nb + 3;
  a.q.assign(static_cast<size_t>(rows * ldq), 0);
  a.d.assign(static_cast<size_t>(rows * ldb), 0.0f);
  a.sum.assign(static_cast<size_t>(rows * ldb), 0);
  for (int64_t m = 0; m < rows; ++m) {
    QuantizeActivationRow(x.data() + m * k, k, a.q.data() + m * ldq, a.d.data() + m * ldb,
                          a.sum.data() + m * ldb);
  }
  a.view = {a.q.data(), a.d.data(), a.sum.data(), ldq, ldb};
  return a;
}

struct Weights {
  std::vector<uint8_t> bytes;   // [16 rows, row_bytes] GGUF rows
  std::vector<uint8_t> packed;  // what a tile reads: the interleaved columns of `bytes`
  std::vector<float> deq;       // [16, k]
  size_t row_bytes = 0;
};

inline void PackForTile(DType t, Weights* w) {
  w->packed = w->bytes;
  if (IsInterleavedBlockType(t)) {
    InterleaveRows(t, w->bytes.data(), w->row_bytes, static_cast<int64_t>(w->row_bytes / DTypeBlockBytes(t)),
                   w->packed.data());
  }
}

inline Weights QuantizeWeights(DType t, const std::vector<float>& w, int64_t k) {
  Weights out;
  out.row_bytes = DTypeRowBytes(t, k);
  out.bytes.resize(out.row_bytes * 16);
  out.deq.resize(static_cast<size_t>(16 * k));
  for (int j = 0; j < 16; ++j) QuantizeRow(t, w.data() + j * k, k, out.bytes.data() + j * out.row_bytes);
  DequantizeRow(t, out.bytes.data(), out.deq.data(), 16 * k);
  PackForTile(t, &out);
  return out;
}

// Random raw bytes (every int8 / nibble / 6-bit pattern, incl. Q8_0 -128 and Q6_K scale -128),
// with the f16 scales overwritten by moderate values.
inline Weights RawWeights(DType t, int64_t k, std::mt19937& rng) {
  Weights out;
  out.row_bytes = DTypeRowBytes(t, k);
  out.bytes.resize(out.row_bytes * 16);
  for (uint8_t& b : out.bytes) b = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> u(-0.02f, 0.02f);
  const size_t bb = DTypeBlockBytes(t);
  for (size_t off = 0; off < out.bytes.size(); off += bb) {
    auto put = [&](size_t at) {
      const uint16_t h = F32ToF16(u(rng));
      std::memcpy(&out.bytes[off + at], &h, 2);
    };
    if (t == DType::kQ6_K) {
      put(208);
    } else {
      put(0);
      if (InterleavedHalfFields(t) == 2) put(2);  // Q5_1's m, the K types' dmin
    }
  }
  out.deq.resize(static_cast<size_t>(16 * k));
  DequantizeRow(t, out.bytes.data(), out.deq.data(), 16 * k);
  PackForTile(t, &out);
  return out;
}

// The shape tests' inputs for format t: kShapeRows activation rows of normal values, then of
// +-1 (+-127 once quantised: the largest sums), each with new 16-row weights; K is 5 super-blocks
// for the K formats, 37 blocks for the others. fn(const Acts&, const Weights&).
constexpr int64_t kShapeRows = 19;
template <typename Fn>
void ForEachShapeInput(DType t, std::mt19937& rng, Fn&& fn) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t k = DTypeBlockSize(t) == 256 ? 256 * 5 : 32 * 37;
  for (int pattern = 0; pattern < 2; ++pattern) {
    std::vector<float> x(static_cast<size_t>(kShapeRows * k));
    for (float& v : x) v = pattern == 0 ? nd(rng) : ((rng() & 1) ? 1.0f : -1.0f);
    const Acts a = QuantizeActs(x, kShapeRows, k);
    const Weights w = RawWeights(t, k, rng);
    fn(a, w);
  }
}

// One random tile of the shape tests: activation rows [m0, m1) of `rows`, blocks [kb0, kb1) (whole
// super-blocks of a K format) of a K of at least 40 blocks (37 for the 32-element formats) and
// n (1..16) weight rows.
struct TileCase {
  int64_t m0, m1, kb0, kb1;
  int n;
};
inline TileCase RandomTileCase(std::mt19937& rng, bool k_format, int64_t rows) {
  TileCase c{};
  c.m0 = static_cast<int64_t>(rng() % static_cast<unsigned>(rows));
  c.m1 = c.m0 + 1 + static_cast<int64_t>(rng() % static_cast<unsigned>(rows - c.m0));
  const int64_t step = k_format ? 8 : 1;
  c.kb0 = static_cast<int64_t>(rng() % (k_format ? 4 : 30)) * step;
  c.kb1 = c.kb0 + step * (1 + static_cast<int64_t>(rng() % (k_format ? (40 - c.kb0) / 8 : 7)));
  c.n = 1 + static_cast<int>(rng() % 16);
  return c;
}

}  // namespace moerun::quant_test
