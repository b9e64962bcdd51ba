// StoredWeight: a 2-D weight W [R, C] as a checkpoint stores it, viewed without copying: a Tensor of
// any float or GGUF block dtype, or block-scaled FP8.
//
// Block-scaled FP8 (DeepSeek-V3's release; Hugging Face "fp8" quantization_config, docs/models.md
// §2.3): the values are F8_E4M3 [R, C] and a companion `scale_inv` [ceil(R / bm), ceil(C / bn)]
// holds one f32 multiplier per bm x bn block (edge blocks are partial):
//   W[i][j] = f32(fp8[i][j]) * scale_inv[i / bm][j / bn]
// evaluated as one f32 multiply (the fp8 value is exact in f32), as DeepSeek's weight_dequant does
// before its cast. Nothing is dequantised up front: ReadRow produces one row (or a column range of
// it) at a time, so a packer holds at most one f32 row of extra memory.
//
// Invariants: values() is 2-D. If block_scaled(): values().dtype() == kF8_E4M3; the scale tensor is
// f32 [ceil(R_full / bm), ceil(C / bn)] for the unsliced row count R_full; row_offset() + rows() <=
// R_full (Rows() narrows the view and keeps the scale indexing of the full tensor).
// Thread safety: immutable; const methods are thread-safe (views share their owners).
#pragma once

#include <cstdint>
#include <string_view>

#include "core/status.h"
#include "core/tensor.h"

namespace moerun {

class StoredWeight {
 public:
  StoredWeight() = default;
  // A plain weight (any dtype but F8_E4M3), used as stored. REQUIRES: rank 2.
  explicit StoredWeight(Tensor values) : values_(std::move(values)) {}

  // FP8 values [R, C] with their per-block scales. InvalidArgument naming `name` (e.g.
  // "model.layers.3.mlp.down_proj.weight") and the bound when values is not F8_E4M3 or not 2-D,
  // the block is not positive, or scale_inv is not a float [ceil(R / bm), ceil(C / bn)] (a BF16 /
  // F16 scale is widened to f32 once; the scale tensor is tiny).
  static StatusOr<StoredWeight> BlockScaled(Tensor values, Tensor scale_inv, int64_t block_rows,
                                            int64_t block_cols, std::string_view name);

  bool block_scaled() const { return block_rows_ > 0; }
  DType dtype() const { return values_.dtype(); }
  int64_t rows() const { return values_.dim(0); }
  int64_t cols() const { return values_.dim(1); }
  const Shape& shape() const { return values_.shape(); }
  // The stored values (for FP8 the raw codes, meaningless without the scales).
  const Tensor& values() const { return values_; }
  const Tensor& scale_inv() const { return scale_; }  // f32; unset unless block_scaled()
  int64_t block_rows() const { return block_rows_; }
  int64_t block_cols() const { return block_cols_; }
  int64_t row_offset() const { return row0_; }

  // Rows [begin, end) as a view. REQUIRES: 0 <= begin <= end <= rows().
  StoredWeight Rows(int64_t begin, int64_t end) const;
  // Row r (of this view), columns [c0, c1), dequantised into out[0, c1 - c0).
  // REQUIRES: block_scaled(), 0 <= r < rows(), 0 <= c0 <= c1 <= cols().
  void ReadRow(int64_t r, int64_t c0, int64_t c1, float* out) const;
  // The whole weight as a new f32 tensor (for small tensors; packers use ReadRow).
  StatusOr<Tensor> ToF32() const;

 private:
  Tensor values_;
  Tensor scale_;                             // f32 [ceil(R_full / bm), ceil(C / bn)], or empty
  int64_t block_rows_ = 0, block_cols_ = 0;  // > 0 iff block-scaled
  int64_t row0_ = 0;                         // first row of this view in the full tensor
};

// The scale grid a block-scaled [rows, cols] weight needs: [ceil(rows / bm), ceil(cols / bn)].
Shape BlockScaleShape(int64_t rows, int64_t cols, int64_t block_rows, int64_t block_cols);

}  // namespace moerun
