// Quantise / dequantise rows of llama.cpp's GGUF block formats (Q8_0, Q4_0, Q4_K, Q6_K).
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

// Quantises x[0, n) into DTypeRowBytes(t, n) bytes at dst. REQUIRES: IsBlockDType(t).
void QuantizeRow(DType t, const float* x, int64_t n, void* dst);

// Dequantises n elements of type t from src into y[0, n). REQUIRES: IsBlockDType(t).
void DequantizeRow(DType t, const void* src, float* y, int64_t n);

}  // namespace moerun
