// The SIMD bodies of kernels/row_ops.h, shared by row_ops_avx2.cc and row_ops_avx512.cc: each
// instantiates RowsAxpyT / RowsDotT with its vector trait (kernels/simd_f32_x86.h: F32x8, F32x16).
//
// A row is processed in chunks of kChunk elements: f32 rows are read in place, f16 / bf16 rows are
// widened into a buffer, block rows are dequantised into it with the f32 formulas of
// core/block_quant.cc (these TUs are compiled with -ffp-contract=off, so every dequantised value is
// bit-identical to DequantizeRow's). The accumulation orders are the ones row_ops.h documents.
// Not a public header: include only from the row_ops_*.cc ISA translation units.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/block_quant.h"
#include "kernels/row_ops.h"

namespace moerun::internal::row_ops {

constexpr int64_t kChunk = 256;  // a multiple of every block size and of 2 * W

inline uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Dequantises `n` elements (whole blocks) of type t starting at block pointer b into y, with the
// formulas and f32 operation order of core/block_quant.cc's DequantizeRow.
// 8 bytes (as int32 lanes, already the integer weight) times d, or d * q - m: the scalar formulas'
// f32 operations (int -> f32 exact, then one rounding per operation), 8 lanes at a time.
inline void Store8(__m128i bytes8, bool is_signed, __m256 d, float* y) {
  const __m256i q = is_signed ? _mm256_cvtepi8_epi32(bytes8) : _mm256_cvtepu8_epi32(bytes8);
  _mm256_storeu_ps(y, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
}

// A Q5_0 / Q5_1 block's q - offset as int8 (its qh word at `qh`, 16 nibble bytes at `qs`):
// elements 0..15 in *lo, 16..31 in *hi (the low / high nibbles of qs with bit j of qh as bit 4:
// each qh byte spread over 8 bytes, tested bit by bit).
inline void Q5Levels(const uint8_t* qh_bytes, const uint8_t* qs, int8_t offset, __m128i* lo, __m128i* hi) {
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, 4);
  const __m128i h = _mm_cvtsi32_si128(static_cast<int>(qh));
  const __m128i bit = _mm_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  auto fifth = [&](int64_t byte0) {                 // 16 where bit j of qh bytes byte0, byte0 + 1 is set
    constexpr int64_t kEvery = 0x0101010101010101;  // bytes 0..7 <- byte0, bytes 8..15 <- byte0 + 1
    const __m128i spread = _mm_shuffle_epi8(h, _mm_set_epi64x(kEvery * (byte0 + 1), kEvery * byte0));
    return _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(spread, bit), bit), _mm_set1_epi8(16));
  };
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i low4 = _mm_set1_epi8(0x0F), off = _mm_set1_epi8(offset);
  *lo = _mm_sub_epi8(_mm_or_si128(_mm_and_si128(x, low4), fifth(0)), off);
  *hi = _mm_sub_epi8(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(x, 4), low4), fifth(2)), off);
}
inline void Q5_0Levels(const uint8_t* b, __m128i* lo, __m128i* hi) { Q5Levels(b + 2, b + 6, 16, lo, hi); }

// 8 unsigned bytes q times d, minus m (K formats) or plus m (Q5_1): two f32 roundings, as the
// scalar formulas.
inline void Store8MinusMin(__m128i bytes8, __m256 d, __m256 m, float* y) {
  _mm256_storeu_ps(y, _mm256_sub_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes8))), m));
}
inline void Store8PlusMin(__m128i bytes8, __m256 d, __m256 m, float* y) {
  _mm256_storeu_ps(y, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes8)), d), m));
}

template <class V>
void DequantBlocks(DType t, const uint8_t* b, int64_t n, float* y) {
  const __m128i low4 = _mm_set1_epi8(0x0F);
  switch (t) {
    case DType::kQ8_0:
      for (int64_t i = 0; i < n; i += 32, b += 34, y += 32) {
        const __m256 d = _mm256_set1_ps(V::Half(LoadU16(b)));
        const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2));
        const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 18));
        Store8(lo, true, d, y);
        Store8(_mm_srli_si128(lo, 8), true, d, y + 8);
        Store8(hi, true, d, y + 16);
        Store8(_mm_srli_si128(hi, 8), true, d, y + 24);
      }
      return;
    case DType::kQ4_0:
      for (int64_t i = 0; i < n; i += 32, b += 18, y += 32) {
        const __m256 d = _mm256_set1_ps(V::Half(LoadU16(b)));
        const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2));
        const __m128i eight = _mm_set1_epi8(8);
        const __m128i lo = _mm_sub_epi8(_mm_and_si128(x, low4), eight);  // q - 8 in -8..7
        const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(x, 4), low4), eight);
        Store8(lo, true, d, y);
        Store8(_mm_srli_si128(lo, 8), true, d, y + 8);
        Store8(hi, true, d, y + 16);
        Store8(_mm_srli_si128(hi, 8), true, d, y + 24);
      }
      return;
    case DType::kQ4_K:
    case DType::kQ5_K: {  // d * sc * q - dmin * m, Q5_K's q with bit j of its qh bytes as bit 4
      const bool q5 = t == DType::kQ5_K;
      for (int64_t i = 0; i < n; i += 256, b += DTypeBlockBytes(t)) {
        const float d = V::Half(LoadU16(b)), dmin = V::Half(LoadU16(b + 2));
        const uint8_t* q = b + (q5 ? 48 : 16);
        for (int j = 0; j < 8; ++j, y += 32) {
          uint8_t sc, m;
          Q4KScaleMin(j, b + 4, &sc, &m);
          const __m256 d1 = _mm256_set1_ps(d * sc), m1 = _mm256_set1_ps(dmin * m);
          for (int h = 0; h < 2; ++h) {
            const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 32 * (j / 2) + 16 * h));
            __m128i v = _mm_and_si128((j & 1) ? _mm_srli_epi16(x, 4) : x, low4);
            if (q5) {
              const __m128i qh = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 16 + 16 * h));
              const __m128i fifth = _mm_and_si128(_mm_srl_epi16(qh, _mm_cvtsi32_si128(j)), _mm_set1_epi8(1));
              v = _mm_or_si128(v, _mm_slli_epi16(fifth, 4));
            }
            Store8MinusMin(v, d1, m1, y + 16 * h);
            Store8MinusMin(_mm_srli_si128(v, 8), d1, m1, y + 16 * h + 8);
          }
        }
      }
      return;
    }
    case DType::kQ5_0:  // (q - 16) * d, as DequantizeQ5_0
      for (int64_t i = 0; i < n; i += 32, b += 22, y += 32) {
        const __m256 d = _mm256_set1_ps(V::Half(LoadU16(b)));
        __m128i lo, hi;
        Q5_0Levels(b, &lo, &hi);
        Store8(lo, true, d, y);
        Store8(_mm_srli_si128(lo, 8), true, d, y + 8);
        Store8(hi, true, d, y + 16);
        Store8(_mm_srli_si128(hi, 8), true, d, y + 24);
      }
      return;
    case DType::kQ5_1:  // q * d + m, as DequantizeQ5_1
      for (int64_t i = 0; i < n; i += 32, b += 24, y += 32) {
        const __m256 d = _mm256_set1_ps(V::Half(LoadU16(b))), m = _mm256_set1_ps(V::Half(LoadU16(b + 2)));
        __m128i lo, hi;
        Q5Levels(b + 4, b + 8, 0, &lo, &hi);
        Store8PlusMin(lo, d, m, y);
        Store8PlusMin(_mm_srli_si128(lo, 8), d, m, y + 8);
        Store8PlusMin(hi, d, m, y + 16);
        Store8PlusMin(_mm_srli_si128(hi, 8), d, m, y + 24);
      }
      return;
    case DType::kQ6_K:  // rare for kv_b: the reference dequantiser (same values by definition)
      DequantizeRow(t, b, y, n);
      return;
    default:
      return;
  }
}

// Elements [c0, c0 + n) of `row` as f32: in place for f32 rows, else converted into buf.
template <class V>
const float* ChunkF32(DType t, const uint8_t* row, int64_t c0, int64_t n, float* buf) {
  switch (t) {
    case DType::kF32:
      return reinterpret_cast<const float*>(row) + c0;
    case DType::kF16:
      V::WidenF16(reinterpret_cast<const uint16_t*>(row) + c0, buf, n);
      return buf;
    case DType::kBF16:
      V::WidenBf16(reinterpret_cast<const uint16_t*>(row) + c0, buf, n);
      return buf;
    default:
      DequantBlocks<V>(t, row + DTypeRowBytes(t, c0), n, buf);
      return buf;
  }
}

// y[0, n) = fma chain over NR rows (wf[k], coefficient a[k]) in row order.
template <class V, int NR>
void AxpyChunk(const float* const* wf, const float* a, int64_t n, float* y) {
  constexpr int W = V::W;
  typename V::Vec va[NR];
  for (int k = 0; k < NR; ++k) va[k] = V::Set1(a[k]);
  int64_t c = 0;
  for (; c + W <= n; c += W) {
    typename V::Vec acc = V::Load(y + c);
    for (int k = 0; k < NR; ++k) acc = V::Fma(va[k], V::Load(wf[k] + c), acc);
    V::Store(y + c, acc);
  }
  if (c < n) {  // zero-padded tail (dense rows of any length)
    alignas(64) float ty[W] = {}, tw[W] = {};
    const int64_t m = n - c;
    std::copy(y + c, y + n, ty);
    typename V::Vec acc = V::Load(ty);
    for (int k = 0; k < NR; ++k) {
      std::copy(wf[k] + c, wf[k] + n, tw);
      acc = V::Fma(va[k], V::Load(tw), acc);
    }
    V::Store(ty, acc);
    std::copy(ty, ty + m, y + c);
  }
}

template <class V, int NR>
void AxpyRows(const StoredRowsView& w, int64_t i0, const float* x, float* y, RowBatch batch) {
  alignas(64) float buf[NR][kChunk];
  const float* wf[NR];
  for (int64_t c0 = 0; c0 < w.cols; c0 += kChunk) {
    const int64_t n = std::min(kChunk, w.cols - c0);
    for (int k = 0; k < NR; ++k) {
      const auto* row = static_cast<const uint8_t*>(w.data) + static_cast<size_t>(i0 + k) * w.row_stride;
      wf[k] = ChunkF32<V>(w.dtype, row, c0, n, buf[k]);
    }
    for (int64_t v = 0; v < batch.m; ++v)
      AxpyChunk<V, NR>(wf, x + v * batch.ldx + i0, n, y + v * batch.ldy + c0);
  }
}

template <class V>
void RowsAxpyT(const StoredRowsView& w, const float* x, float* y, RowBatch batch) {
  int64_t i = 0;
  for (; i + 4 <= w.rows; i += 4) AxpyRows<V, 4>(w, i, x, y, batch);
  for (; i < w.rows; ++i) AxpyRows<V, 1>(w, i, x, y, batch);
}

// One row, already f32 (wf: [cols]), dotted with x in the documented order: chunks of kChunk,
// vectors alternating between two accumulators, the last partial vector zero-padded.
template <class V>
float DotRowF32(const float* wf_row, int64_t cols, const float* x) {
  constexpr int W = V::W;
  typename V::Vec acc0 = V::Zero(), acc1 = V::Zero();
  for (int64_t c0 = 0; c0 < cols; c0 += kChunk) {  // each chunk starts at an even vector index
    const int64_t n = std::min(kChunk, cols - c0);
    const float* wf = wf_row + c0;
    const float* xc = x + c0;
    int64_t c = 0;
    for (; c + 2 * W <= n; c += 2 * W) {
      acc0 = V::Fma(V::Load(wf + c), V::Load(xc + c), acc0);
      acc1 = V::Fma(V::Load(wf + c + W), V::Load(xc + c + W), acc1);
    }
    bool odd = false;  // the next vector goes to acc1
    if (c + W <= n) {
      acc0 = V::Fma(V::Load(wf + c), V::Load(xc + c), acc0);
      c += W;
      odd = true;
    }
    if (c < n) {  // zero-padded last vector (dense rows of any length)
      alignas(64) float tw[W] = {}, tx[W] = {};
      std::copy(wf + c, wf + n, tw);
      std::copy(xc + c, xc + n, tx);
      if (odd) {
        acc1 = V::Fma(V::Load(tw), V::Load(tx), acc1);
      } else {
        acc0 = V::Fma(V::Load(tw), V::Load(tx), acc0);
      }
    }
  }
  return V::Reduce(V::Add(acc0, acc1));
}

// One Q8_0 / Q4_0 / Q5_0 row dotted with one vector, dequantising in registers: the same values and
// the same order as DotRowF32 on the dequantised row (vector j of the row into accumulator j % 2).
template <class V>
float DotRowSimpleBlocks(DType t, const uint8_t* row, int64_t cols, const float* x) {
  constexpr int W = V::W;
  typename V::Vec acc[2] = {V::Zero(), V::Zero()};
  const bool q8 = t == DType::kQ8_0, q5 = t == DType::kQ5_0;
  const size_t bb = DTypeBlockBytes(t);
  const __m128i low4 = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
  for (int64_t c = 0; c < cols; c += 32, row += bb) {
    __m128i q[2];  // the block's integer levels: elements 0..15, 16..31 (int8, in registers)
    if (q8) {
      q[0] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2));
      q[1] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 18));
    } else if (q5) {
      Q5_0Levels(row, &q[0], &q[1]);
    } else {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2));
      q[0] = _mm_sub_epi8(_mm_and_si128(v, low4), eight);
      q[1] = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), low4), eight);
    }
    const typename V::Vec d = V::Set1(V::Half(LoadU16(row)));
    // Vector j of the row (W elements from c + j * W) into accumulator j % 2: every block holds
    // 32 / W vectors, an even number, so vector 0 of each block goes to accumulator 0.
    for (int j = 0; j < 32 / W; ++j) {
      __m128i bytes = q[j * W / 16];  // W = 8: the high 8 bytes for odd j
      if constexpr (W == 8) bytes = j % 2 == 0 ? bytes : _mm_srli_si128(bytes, 8);
      acc[j & 1] = V::Fma(V::Mul(V::FromI8Lanes(bytes), d), V::Load(x + c + j * W), acc[j & 1]);
    }
  }
  return V::Reduce(V::Add(acc[0], acc[1]));
}

// RR f32 rows (wf[r]: [cols]) dotted with RT vectors (x[t]) into y[r][t]: each of the RR x RT
// results gets exactly DotRowF32's operations, but every loaded weight vector serves RT vectors and
// every loaded activation vector RR rows (one product per load pair in DotRowF32).
template <class V, int RR, int RT>
void DotTileF32(const float* const (&wf)[RR], int64_t cols, const float* const (&x)[RT], float (&y)[RR][RT]) {
  constexpr int W = V::W;
  typename V::Vec acc[2][RR][RT];
  for (auto& a : acc)
    for (auto& ar : a)
      for (auto& v : ar) v = V::Zero();
  auto step = [&](int k, int64_t c) {  // one vector of every row and vector into accumulator k
    typename V::Vec w[RR];
    for (int r = 0; r < RR; ++r) w[r] = V::Load(wf[r] + c);
    for (int t = 0; t < RT; ++t) {
      const typename V::Vec xv = V::Load(x[t] + c);
      for (int r = 0; r < RR; ++r) acc[k][r][t] = V::Fma(w[r], xv, acc[k][r][t]);
    }
  };
  for (int64_t c0 = 0; c0 < cols; c0 += kChunk) {  // each chunk starts at an even vector index
    const int64_t n = std::min(kChunk, cols - c0);
    int64_t c = 0;
    for (; c + 2 * W <= n; c += 2 * W) {
      step(0, c0 + c);
      step(1, c0 + c + W);
    }
    int k = 0;  // the accumulator of the next vector
    if (c + W <= n) {
      step(0, c0 + c);
      c += W;
      k = 1;
    }
    if (c < n) {  // zero-padded last vector, as DotRowF32
      for (int r = 0; r < RR; ++r) {
        alignas(64) float tw[W] = {};
        std::copy(wf[r] + c0 + c, wf[r] + c0 + n, tw);
        for (int t = 0; t < RT; ++t) {
          alignas(64) float tx[W] = {};
          std::copy(x[t] + c0 + c, x[t] + c0 + n, tx);
          acc[k][r][t] = V::Fma(V::Load(tw), V::Load(tx), acc[k][r][t]);
        }
      }
    }
  }
  for (int r = 0; r < RR; ++r)
    for (int t = 0; t < RT; ++t) y[r][t] = V::Reduce(V::Add(acc[0][r][t], acc[1][r][t]));
}

// Rows i .. i + RR - 1 (f32 in wf[r]) against every vector of the batch: kTokens at a time, then one.
template <class V, int RR>
void DotRowsBatch(const float* const (&wf)[RR], int64_t cols, int64_t i, const float* x, float* y,
                  RowBatch batch) {
  constexpr int kTokens = V::W == 8 ? 3 : 6;  // 2 x RR x kTokens accumulators fit the registers
  int64_t v = 0;
  for (; v + kTokens <= batch.m; v += kTokens) {
    const float* xs[kTokens];
    for (int t = 0; t < kTokens; ++t) xs[t] = x + (v + t) * batch.ldx;
    float out[RR][kTokens];
    DotTileF32<V, RR, kTokens>(wf, cols, xs, out);
    for (int r = 0; r < RR; ++r)
      for (int t = 0; t < kTokens; ++t) y[(v + t) * batch.ldy + i + r] = out[r][t];
  }
  for (; v < batch.m; ++v) {
    for (int r = 0; r < RR; ++r) y[v * batch.ldy + i + r] = DotRowF32<V>(wf[r], cols, x + v * batch.ldx);
  }
}

template <class V>
void RowsDotT(const StoredRowsView& w, const float* x, float* y, RowBatch batch) {
  if (batch.m == 1 &&
      (w.dtype == DType::kQ8_0 || w.dtype == DType::kQ4_0 || w.dtype == DType::kQ5_0)) {  // decode
    for (int64_t i = 0; i < w.rows; ++i) {
      y[i] = DotRowSimpleBlocks<V>(
          w.dtype, static_cast<const uint8_t*>(w.data) + static_cast<size_t>(i) * w.row_stride, w.cols, x);
    }
    return;
  }
  constexpr int kRows = 2;  // rows dequantised together, each loaded vector serving both
  thread_local std::vector<float> buf;
  buf.resize(static_cast<size_t>(kRows * w.cols));
  // Row i as f32: in place (f32 rows) or dequantised into buf slot s.
  auto row_f32 = [&](int64_t i, int s) -> const float* {
    const auto* row = static_cast<const uint8_t*>(w.data) + static_cast<size_t>(i) * w.row_stride;
    if (w.dtype == DType::kF32) return reinterpret_cast<const float*>(row);
    float* out = buf.data() + s * w.cols;
    for (int64_t c0 = 0; c0 < w.cols; c0 += kChunk) {
      const int64_t n = std::min(kChunk, w.cols - c0);
      const float* chunk = ChunkF32<V>(w.dtype, row, c0, n, out + c0);
      if (chunk != out + c0) std::copy(chunk, chunk + n, out + c0);
    }
    return out;
  };
  int64_t i = 0;
  for (; i + kRows <= w.rows; i += kRows) {
    const float* const wf[kRows] = {row_f32(i, 0), row_f32(i + 1, 1)};
    DotRowsBatch<V, kRows>(wf, w.cols, i, x, y, batch);
  }
  for (; i < w.rows; ++i) {
    const float* const wf[1] = {row_f32(i, 0)};
    DotRowsBatch<V, 1>(wf, w.cols, i, x, y, batch);
  }
}

}  // namespace moerun::internal::row_ops
