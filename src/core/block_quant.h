// Quantise / dequantise rows of llama.cpp's GGUF block formats (Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K,
// Q6_K), and dequantise the load-only ones (Q3_K, Q2_K, IQ4_NL, IQ4_XS; core/dtype.h).
//
// Byte layouts and value formulas are in docs/formats.md. QuantizeRow follows the same algorithm
// and float rounding as ggml's reference quantisers (quantize_row_*_ref, without an importance
// matrix), so it writes byte-identical blocks; DequantizeRow evaluates ggml's formulas in the same
// f32 operation order. Invariants: n is a multiple of DTypeBlockSize(t); dst holds
// DTypeRowBytes(t, n) bytes; blocks are packed with no padding or alignment requirement.
// Thread safety: pure functions of their arguments.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace moerun {

// Quantises x[0, n) into DTypeRowBytes(t, n) bytes at dst.
// REQUIRES: IsBlockDType(t) && !IsLoadOnlyDType(t).
void QuantizeRow(DType t, const float* x, int64_t n, void* dst);

// Dequantises n elements of type t from src into y[0, n). REQUIRES: IsBlockDType(t).
void DequantizeRow(DType t, const void* src, float* y, int64_t n);

// Q5_0 / Q5_1: the 5-bit level (0..31) of element e (< 32) of a block, from its `qh` word (bit e:
// the fifth bit) and its 16 nibble bytes `qs` (element e < 16 in the low nibble of qs[e], e >= 16
// in the high nibble of qs[e - 16]; docs/formats.md).
inline int Q5Level(uint32_t qh, const uint8_t* qs, int e) {
  const int nibble = e < 16 ? (qs[e] & 0x0F) : (qs[e - 16] >> 4);
  return nibble | static_cast<int>(((qh >> e) & 1u) << 4);
}

// Q4_K: the 6-bit scale and min of sub-block j (0..7) from the 12 packed scale bytes of a block
// (ggml's get_scale_min_k4; docs/formats.md).
inline void Q4KScaleMin(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

}  // namespace moerun
