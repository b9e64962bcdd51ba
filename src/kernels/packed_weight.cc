#include "kernels/packed_weight.h"

#include <cstring>
#include <vector>

#include "core/checked_math.h"

namespace moerun {
namespace {

Status CheckSource(const Tensor& w, const char* what) {
  if (w.rank() != 2)
    return InvalidArgument("{} weight must be 2-D [out, in], got {}", what, ShapeToString(w.shape()));
  if (w.dtype() != DType::kF32 && w.dtype() != DType::kBF16 && w.dtype() != DType::kF16) {
    return InvalidArgument("{} weight has dtype {}, expected F32, BF16 or F16", what, DTypeName(w.dtype()));
  }
  return Status::Ok();
}

}  // namespace

Status PackedWeight::Allocate(DType dtype, int64_t n_blocks, int64_t k) {
  if (dtype != DType::kF32 && dtype != DType::kBF16) {
    return InvalidArgument("packed weights must be F32 or BF16, not {}", DTypeName(dtype));
  }
  dtype_ = dtype;
  n_blocks_ = n_blocks;
  k_ = k;
  const int64_t dims[] = {n_blocks, block_elems()};
  ASSIGN_OR_RETURN(uint64_t elems, CheckedProduct(dims, "packed weight"));
  if (dtype == DType::kBF16) {
    bf16_ = MakeAlignedArray<uint16_t>(elems);
    std::memset(bf16_.get(), 0, elems * sizeof(uint16_t));
  } else {
    f32_ = MakeAlignedArray<float>(elems);
    std::memset(f32_.get(), 0, elems * sizeof(float));
  }
  return Status::Ok();
}

void PackedWeight::PutRow(const float* row, int64_t block, int lane) {
  if (dtype_ == DType::kBF16) {
    uint16_t* dst = bf16_.get() + block * block_elems();
    for (int64_t k = 0; k < k_; ++k) dst[(k / 2) * 32 + lane * 2 + (k % 2)] = F32ToBf16(row[k]);
  } else {
    float* dst = f32_.get() + block * block_elems();
    for (int64_t k = 0; k < k_; ++k) dst[k * 16 + lane] = row[k];
  }
}

StatusOr<PackedWeight> PackedWeight::Pack(const Tensor& w, DType dtype, int64_t col_begin, int64_t col_end) {
  RETURN_IF_ERROR(CheckSource(w, "linear"));
  if (col_end < 0) col_end = w.dim(1);
  if (col_begin < 0 || col_begin > col_end || col_end > w.dim(1)) {
    return InvalidArgument("column range [{}, {}) outside the {} input columns", col_begin, col_end,
                           w.dim(1));
  }
  PackedWeight p;
  p.n_ = w.dim(0);
  RETURN_IF_ERROR(p.Allocate(dtype, (w.dim(0) + 15) / 16, col_end - col_begin));
  std::vector<float> row(static_cast<size_t>(p.k_));
  const size_t esize = DTypeSize(w.dtype());
  const size_t row_bytes = static_cast<size_t>(w.dim(1)) * esize;
  for (int64_t n = 0; n < p.n_; ++n) {
    ConvertToF32(w.dtype(), w.data<char>() + n * row_bytes + static_cast<size_t>(col_begin) * esize,
                 row.data(), row.size());
    p.PutRow(row.data(), n / 16, static_cast<int>(n % 16));
  }
  return p;
}

StatusOr<PackedWeight> PackedWeight::PackGateUp(const Tensor& gate, const Tensor& up, DType dtype) {
  RETURN_IF_ERROR(CheckSource(gate, "gate"));
  RETURN_IF_ERROR(CheckSource(up, "up"));
  if (gate.shape() != up.shape()) {
    return InvalidArgument("gate {} and up {} shapes differ", ShapeToString(gate.shape()),
                           ShapeToString(up.shape()));
  }
  PackedWeight p;
  p.n_ = gate.dim(0);
  p.gate_up_ = true;
  RETURN_IF_ERROR(p.Allocate(dtype, 2 * ((gate.dim(0) + 15) / 16), gate.dim(1)));
  std::vector<float> row(static_cast<size_t>(p.k_));
  for (int which = 0; which < 2; ++which) {
    const Tensor& src = which == 0 ? gate : up;
    const size_t row_bytes = static_cast<size_t>(p.k_) * DTypeSize(src.dtype());
    for (int64_t n = 0; n < p.n_; ++n) {
      ConvertToF32(src.dtype(), src.data<char>() + n * row_bytes, row.data(), row.size());
      p.PutRow(row.data(), 2 * (n / 16) + which, static_cast<int>(n % 16));
    }
  }
  return p;
}

size_t PackedWeight::bytes() const {
  return static_cast<size_t>(n_blocks_ * block_elems()) * DTypeSize(dtype_);
}

float PackedWeight::At16(int64_t block, int lane, int64_t k) const {
  if (dtype_ == DType::kBF16) return Bf16ToF32(bf16_block(block)[(k / 2) * 32 + lane * 2 + (k % 2)]);
  return f32_block(block)[k * 16 + lane];
}

float PackedWeight::At(int64_t n, int64_t k) const {
  if (gate_up_) {
    const int which = n >= n_ ? 1 : 0;
    const int64_t r = n - which * n_;
    return At16(2 * (r / 16) + which, static_cast<int>(r % 16), k);
  }
  return At16(n / 16, static_cast<int>(n % 16), k);
}

}  // namespace moerun
