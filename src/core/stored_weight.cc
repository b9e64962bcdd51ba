#include "core/stored_weight.h"

#include <algorithm>
#include <cassert>

namespace moerun {

Shape BlockScaleShape(int64_t rows, int64_t cols, int64_t block_rows, int64_t block_cols) {
  return {(rows + block_rows - 1) / block_rows, (cols + block_cols - 1) / block_cols};
}

StatusOr<StoredWeight> StoredWeight::BlockScaled(Tensor values, Tensor scale_inv, int64_t block_rows,
                                                 int64_t block_cols, std::string_view name) {
  if (values.dtype() != DType::kF8_E4M3 || values.rank() != 2) {
    return InvalidArgument("tensor '{}' is {} {}, expected a 2-D F8_E4M3 matrix to go with its scales", name,
                           DTypeName(values.dtype()), ShapeToString(values.shape()));
  }
  if (block_rows < 1 || block_cols < 1) {
    return InvalidArgument("tensor '{}': FP8 block {} x {} must be at least 1 x 1", name, block_rows,
                           block_cols);
  }
  const Shape want = BlockScaleShape(values.dim(0), values.dim(1), block_rows, block_cols);
  const DType sd = scale_inv.dtype();
  if (sd != DType::kF32 && sd != DType::kBF16 && sd != DType::kF16) {
    return InvalidArgument("tensor '{}': scale_inv has dtype {}, expected F32 (or BF16, F16)", name,
                           DTypeName(sd));
  }
  if (scale_inv.shape() != want) {
    return InvalidArgument("tensor '{}': scale_inv has shape {}, expected {} (ceil of {} / {} x {} blocks)",
                           name, ShapeToString(scale_inv.shape()), ShapeToString(want),
                           ShapeToString(values.shape()), block_rows, block_cols);
  }
  StoredWeight w(std::move(values));
  if (sd == DType::kF32) {
    w.scale_ = std::move(scale_inv);
  } else {
    ASSIGN_OR_RETURN(w.scale_, scale_inv.ToF32());
  }
  w.block_rows_ = block_rows;
  w.block_cols_ = block_cols;
  return w;
}

StoredWeight StoredWeight::Rows(int64_t begin, int64_t end) const {
  StoredWeight w = *this;
  w.values_ = values_.Rows(begin, end);
  w.row0_ = row0_ + begin;
  return w;
}

void StoredWeight::ReadRow(int64_t r, int64_t c0, int64_t c1, float* out) const {
  assert(block_scaled() && r >= 0 && r < rows() && 0 <= c0 && c0 <= c1 && c1 <= cols());
  const uint8_t* q = values_.data<uint8_t>() + static_cast<size_t>(r) * static_cast<size_t>(cols());
  const float* s = scale_.data<float>() + ((row0_ + r) / block_rows_) * scale_.dim(1);
  for (int64_t c = c0; c < c1;) {
    const int64_t b = c / block_cols_;
    const int64_t end = std::min(c1, (b + 1) * block_cols_);
    const float scale = s[b];
    for (; c < end; ++c) out[c - c0] = F8E4M3ToF32(q[c]) * scale;
  }
}

StatusOr<Tensor> StoredWeight::ToF32() const {
  if (!block_scaled()) return values_.ToF32();
  ASSIGN_OR_RETURN(Tensor out, Tensor::Zeros(DType::kF32, values_.shape()));
  for (int64_t r = 0; r < rows(); ++r) ReadRow(r, 0, cols(), out.data<float>() + r * cols());
  return out;
}

}  // namespace moerun
