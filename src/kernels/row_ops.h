// Row ops on a matrix kept in its stored format (f32, f16, bf16 or a GGUF block format Q8_0 / Q4_0 /
// Q5_0 / Q5_1 / Q4_K / Q5_K / Q6_K, never re-quantised), with f32 activations. Used by MLA's absorbed
// attention on the kv_b halves (model/deepseek_model.h), whose products are matrix-vector per head:
//
//   RowsAxpy: y[c] += sum_i x[i] * W[i][c]   (dequantise-and-axpy over rows; kv_b's K rows)
//   RowsDot:  y[i]  = sum_c W[i][c] * x[c]   (dequantise-and-dot per row; kv_b's V rows, attn_k_b)
//
// Each op has a portable reference (rows dequantised by core/block_quant.h / ConvertToF32, plain
// f32 arithmetic), an AVX2 + FMA + F16C path and an AVX-512 path, chosen at run time
// (core/cpu_features.h). Dequantised elements are bit-identical on every path (the same f32
// formulas, no contraction); the accumulation order is fixed per ISA:
//   - RowsAxpy: per output element, one f32 chain over the rows in order, y = y + x[i] * w
//     (ref: multiply then add; SIMD: one fma per row).
//   - RowsDot: ref: one f32 accumulator, elements in order. SIMD: elements are cut into vectors of
//     W lanes (AVX2 8, AVX-512 16) from element 0; vector j goes by fma into accumulator j % 2, the
//     last partial vector zero-padded; the two accumulators are added and reduced in a fixed tree.
// So a result depends only on the row bytes and activations, never on batch size, threads or
// tensor-parallel layout. A RowBatch applies the op to m activation vectors at once (prefill: one
// per token): each weight chunk is dequantised once for all of them, and every vector gets the
// operations it would get alone.
//
// Invariants: `cols` is a multiple of DTypeBlockSize(dtype) (any length for dense types); rows are
// `row_stride` bytes apart (>= DTypeRowBytes(dtype, cols)); x and y do not alias the weights.
// Thread safety: pure functions of their arguments.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"

namespace moerun {

// A read-only view of `rows` rows of `cols` elements of `dtype`, `row_stride` bytes apart.
struct StoredRowsView {
  DType dtype = DType::kF32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_stride = 0;
};

// A matrix [rows, cols] owned in its stored format, rows packed back to back.
// Thread safety: immutable after construction.
struct StoredRows {
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_bytes = 0;        // DTypeRowBytes(dtype, cols)
  std::vector<uint8_t> bytes;  // rows * row_bytes

  // Rows [r0, r1).
  StoredRowsView View(int64_t r0, int64_t r1) const {
    return {dtype, bytes.data() + static_cast<size_t>(r0) * row_bytes, r1 - r0, cols, row_bytes};
  }
  size_t nbytes() const { return bytes.size(); }
};

// True for the dtypes the row ops read: f32, f16, bf16 and every block format but the load-only ones.
bool RowOpsSupport(DType t);

// An empty [0, cols] matrix of `dtype`, to which rows are appended by AppendRow. InvalidArgument
// if the dtype is unsupported or cols is not a multiple of its block size.
StatusOr<StoredRows> MakeStoredRows(DType dtype, int64_t cols);
// Appends one row of DTypeRowBytes(rows.dtype, rows.cols) bytes.
void AppendRow(StoredRows* rows, const void* row);

enum class RowOpsIsa { kRef, kAvx2, kAvx512 };
std::string_view RowOpsIsaName(RowOpsIsa isa);  // "ref", "avx2", "avx512"
bool RowOpsIsaSupported(RowOpsIsa isa);
// The best supported ISA, or the one a --kernel value names ("ref", "avx2", "avx512",
// "avx512vnni"; "" or a row name such as "avx2-q4_k": the best), capped at what the CPU has.
RowOpsIsa SelectRowOpsIsa(std::string_view forced = "");

// m activation vectors: vector v reads x + v * ldx and writes y + v * ldy (strides in floats).
struct RowBatch {
  int64_t m = 1;
  int64_t ldx = 0;
  int64_t ldy = 0;
};

// REQUIRES: RowOpsSupport(w.dtype), RowOpsIsaSupported(isa). Per vector x: [w.rows], y: [w.cols].
void RowsAxpy(RowOpsIsa isa, const StoredRowsView& w, const float* x, float* y, RowBatch batch = {});
// REQUIRES: as above. Per vector x: [w.cols], y: [w.rows].
void RowsDot(RowOpsIsa isa, const StoredRowsView& w, const float* x, float* y, RowBatch batch = {});

namespace internal {
void RowsAxpyRef(const StoredRowsView& w, const float* x, float* y, RowBatch batch);
void RowsDotRef(const StoredRowsView& w, const float* x, float* y, RowBatch batch);
void RowsAxpyAvx2(const StoredRowsView& w, const float* x, float* y, RowBatch batch);
void RowsDotAvx2(const StoredRowsView& w, const float* x, float* y, RowBatch batch);
void RowsAxpyAvx512(const StoredRowsView& w, const float* x, float* y, RowBatch batch);
void RowsDotAvx512(const StoredRowsView& w, const float* x, float* y, RowBatch batch);
}  // namespace internal

}  // namespace moerun
