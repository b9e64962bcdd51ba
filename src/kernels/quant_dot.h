// Integer dot-product tiles between GGUF block-quantised weights (Q8_0, Q4_0, Q5_0, Q5_1, Q4_K,
// Q5_K, Q6_K; layouts in docs/formats.md) and activations quantised to int8 per 32-element block.
//
// Arithmetic. For each (activation row m, weight row j) and 32-element block kb the integer part I
// is exact in int32, then enters f32 with the block's scales (da = activation block scale, A = its
// int8 sum):
//   Q8_0: I = sum w*a;                              term = dw * da * I
//   Q4_0: I = sum q*a - 8*A  (= sum (q - 8) a);     term = dw * da * I
//   Q5_0: I = sum q*a - 16*A (5-bit q);             term = dw * da * I
//   Q5_1: I = sum q*a (5-bit q);                    term = dw * da * I + m * da * A
//   Q4_K: I = sum q*a over sub-block s = kb % 8;    term = d*sc_s * da * I - dmin*m_s * da * A
//   Q5_K: as Q4_K with 5-bit q
//   Q6_K: I = sc_2i * sum_{16} (q-32) a + sc_2i+1 * sum_{16} (q-32) a  (i = kb % 8);
//                                                   term = d * da * I
// and the output is the f32 sum of the terms over kb in [kb0, kb1). The reference sums them in
// block order: one fma (acc = fma(dw * da, I, acc)); Q5_1 adds a second, acc = fma(m, da * A, acc);
// Q4_K / Q5_K take the weight's part first (inner = fma(d*sc, I, -(dmin*m * A))), then
// acc = fma(da, inner, acc). All seven formats come interleaved
// (kernels/block_interleave.h): the x86 paths give each weight row its own vector lane, form I exactly in
// int32 (or, for Q6_K's two scaled halves, in f32 where every step is exact: |I| < 2^24), and then do the
// reference's f32 operations per (row, block) in block order, so every ISA returns the reference's bits,
// whatever the tile shape. The value for (m, j) depends only on the weight row, the activation row
// and [kb0, kb1), never on m0, m1 or n_rows (batch invariance).
//
// Thread safety: pure functions; concurrent calls may share inputs and must not share `out`.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace moerun {

// Activations quantised per 32-element block: q = round(x / d), d = max|x| / 127 (0 -> all zero).
struct Q8Activations {
  const int8_t* q = nullptr;     // [rows, ldq] int8; K padded with zeros to a multiple of 32
  const float* d = nullptr;      // [rows, ldb] scale of each 32-element block
  const int32_t* sum = nullptr;  // [rows, ldb] sum of the block's 32 int8 values
  int64_t ldq = 0, ldb = 0;      // row strides in elements
};

// The same rows being written (by QuantizeActivationRow); View() reads them.
struct Q8Rows {
  int8_t* q = nullptr;     // [rows, ldq]
  float* d = nullptr;      // [rows, ldb]
  int32_t* sum = nullptr;  // [rows, ldb]
  int64_t ldq = 0, ldb = 0;
  Q8Rows From(int64_t row) const { return {q + row * ldq, d + row * ldb, sum + row * ldb, ldq, ldb}; }
  Q8Activations View() const { return {q, d, sum, ldq, ldb}; }
};

// Quantises one row x[0, k) into q[0, k_pad), d[0, k_pad/32), sum[...] with k_pad = k rounded up to
// 32. Per block: amax = max |x| (padding counts as 0), d = amax / 127, q = x * (127 / amax) rounded
// to nearest even (so |q| <= 127), or all zero when amax == 0.
// Uses AVX2 when the CPU has it, with the same operations as the scalar code (same bytes).
void QuantizeActivationRow(const float* x, int64_t k, int8_t* q, float* d, int32_t* sum);
void QuantizeActivationRowRef(const float* x, int64_t k, int8_t* q, float* d, int32_t* sum);
void QuantizeActivationRowAvx2(const float* x, int64_t k, int8_t* q, float* d, int32_t* sum);
void QuantizeActivationRowAvx512Vnni(const float* x, int64_t k, int8_t* q, float* d, int32_t* sum);

// The tile function: for m in [m0, m1) and j in [0, n_rows) (n_rows <= 16):
//   out[(m - m0) * 16 + j] = sum over 32-element blocks kb in [kb0, kb1) of
//        dot(weight row j restricted to block kb, activation row m restricted to block kb)
// where `w` is one packed 16-row block of a PackedWeight in `format` (one of the 7 block types):
// the interleaved columns of all 16 rows (block_interleave.h; w_row_bytes unused, rows j >= n_rows
// are computed but not stored). kb indexes 32-element blocks from the start of the row (for
// the K types, kb0 and kb1 are multiples of 8). Computed as the header comment above says. Q8_0 weights may
// be any int8 (including -128).
using QuantDotTileFn = void (*)(DType format, const uint8_t* w, size_t w_row_bytes, int n_rows,
                                const Q8Activations& a, int64_t m0, int64_t m1, int64_t kb0, int64_t kb1,
                                float* out);

inline constexpr int kQuantDotMaxRows = 16;  // n_rows limit and the row stride of `out`

// Portable scalar C++ (the reference row of the kernel table).
void QuantDotTileRef(DType format, const uint8_t* w, size_t w_row_bytes, int n_rows, const Q8Activations& a,
                     int64_t m0, int64_t m1, int64_t kb0, int64_t kb1, float* out);
// AVX2 + FMA + F16C (vpmaddubsw / vpmaddwd). REQUIRES: GetCpuFeatures().HasAvx2Kernels().
void QuantDotTileAvx2(DType format, const uint8_t* w, size_t w_row_bytes, int n_rows, const Q8Activations& a,
                      int64_t m0, int64_t m1, int64_t kb0, int64_t kb1, float* out);
// AVX-512 VL/BW + VNNI (vpdpbusd on zmm). REQUIRES: GetCpuFeatures().HasAvx512VnniKernels().
void QuantDotTileAvx512Vnni(DType format, const uint8_t* w, size_t w_row_bytes, int n_rows,
                            const Q8Activations& a, int64_t m0, int64_t m1, int64_t kb0, int64_t kb1,
                            float* out);

// The same tiles without software prefetch: the weight stream is left to the hardware prefetchers
// (the same bits; faster decode on some CPUs, see kernel_table.h's -nopf rows).
void QuantDotTileAvx2NoPrefetch(DType format, const uint8_t* w, size_t w_row_bytes, int n_rows,
                                const Q8Activations& a, int64_t m0, int64_t m1, int64_t kb0, int64_t kb1,
                                float* out);
void QuantDotTileAvx512VnniNoPrefetch(DType format, const uint8_t* w, size_t w_row_bytes, int n_rows,
                                      const Q8Activations& a, int64_t m0, int64_t m1, int64_t kb0,
                                      int64_t kb1, float* out);

// One activation row against one 16-row block: a stream of QuantDotStreamsFn. out[j] (j < n_rows)
// gets what QuantDotTileFn gives for m0 = m, m1 = m + 1.
struct QuantDotStream {
  const uint8_t* w = nullptr;        // one packed 16-row block (as QuantDotTileFn's w)
  int n_rows = 0;                    // rows of it stored, <= 16
  const Q8Activations* a = nullptr;  // the stream's activations
  int64_t m = 0;                     // its activation row
  float* out = nullptr;              // [n_rows]
};
inline constexpr int kQuantDotMaxStreams = 4;
// Up to kQuantDotMaxStreams streams of one format over the same blocks [kb0, kb1), column by
// column across the streams, so one core keeps that many memory streams in flight (the bits of
// QuantDotTileFn for each stream).
using QuantDotStreamsFn = void (*)(DType format, const QuantDotStream* streams, int n, int64_t kb0,
                                   int64_t kb1);
// AVX2 and AVX-512 VNNI, with and without the tiles' software prefetch. The K formats and Q6_K run
// their streams one by one. REQUIRES: the ISA's CPU features, 1 <= n <= kQuantDotMaxStreams.
void QuantDotStreamsAvx2(DType format, const QuantDotStream* streams, int n, int64_t kb0, int64_t kb1);
void QuantDotStreamsAvx2NoPrefetch(DType format, const QuantDotStream* streams, int n, int64_t kb0,
                                   int64_t kb1);
void QuantDotStreamsAvx512Vnni(DType format, const QuantDotStream* streams, int n, int64_t kb0, int64_t kb1);
void QuantDotStreamsAvx512VnniNoPrefetch(DType format, const QuantDotStream* streams, int n, int64_t kb0,
                                         int64_t kb1);

// Dispatch helpers.
enum class QuantDotIsa { kRef, kAvx2, kAvx2NoPrefetch, kAvx512Vnni, kAvx512VnniNoPrefetch };
inline constexpr QuantDotIsa kAllQuantDotIsas[] = {QuantDotIsa::kRef, QuantDotIsa::kAvx2,
                                                   QuantDotIsa::kAvx2NoPrefetch, QuantDotIsa::kAvx512Vnni,
                                                   QuantDotIsa::kAvx512VnniNoPrefetch};
const char* QuantDotIsaName(QuantDotIsa isa);  // "avx2", "avx2-nopf", ...
bool QuantDotIsaSupported(QuantDotIsa isa);    // by this CPU (cpu_features.h)
QuantDotTileFn QuantDotTileFor(QuantDotIsa isa);
QuantDotIsa BestQuantDotIsa();  // the fastest supported one

}  // namespace moerun
