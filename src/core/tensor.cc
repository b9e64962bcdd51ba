#include "core/tensor.h"

#include <cassert>
#include <cstring>
#include <new>

#include "core/checked_math.h"

namespace moerun {

std::string ShapeToString(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

size_t Tensor::nbytes() const {
  if (!IsBlockDType(dtype_)) return static_cast<size_t>(numel()) * DTypeSize(dtype_);
  if (shape_.empty()) return 0;
  const int64_t cols = shape_.back();
  return cols == 0 ? 0 : static_cast<size_t>(numel() / cols) * DTypeRowBytes(dtype_, cols);
}

StatusOr<Tensor> Tensor::Zeros(DType dtype, Shape shape) {
  ASSIGN_OR_RETURN(uint64_t n, CheckedProduct(shape, "tensor " + ShapeToString(shape)));
  if (IsBlockDType(dtype) && (shape.empty() || shape.back() % DTypeBlockSize(dtype) != 0)) {
    return InvalidArgument("{} tensor {}: rows must be a multiple of {} elements", DTypeName(dtype),
                           ShapeToString(shape), DTypeBlockSize(dtype));
  }
  const uint64_t per_block = DTypeBlockBytes(dtype), block = static_cast<uint64_t>(DTypeBlockSize(dtype));
  ASSIGN_OR_RETURN(uint64_t bytes, CheckedMul(n / block, per_block, "tensor bytes"));
  if (bytes > (uint64_t{1} << 46)) return OutOfRange("tensor of {} bytes exceeds 64 TiB", bytes);
  const size_t alloc = bytes == 0 ? kTensorAlignment : static_cast<size_t>(bytes);
  void* p = ::operator new[](alloc, std::align_val_t(kTensorAlignment), std::nothrow);
  if (p == nullptr) return OutOfRange("cannot allocate {} bytes for tensor {}", bytes, ShapeToString(shape));
  std::memset(p, 0, alloc);
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.data_ = p;
  t.owner_ = std::shared_ptr<const void>(p, [](const void* q) {
    ::operator delete[](const_cast<void*>(q), std::align_val_t(kTensorAlignment));
  });
  return t;
}

Tensor Tensor::View(DType dtype, Shape shape, void* data, std::shared_ptr<const void> keepalive) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.data_ = data;
  t.owner_ = std::move(keepalive);
  return t;
}

Tensor Tensor::Rows(int64_t begin, int64_t end) const {
  assert(rank() >= 1 && 0 <= begin && begin <= end && end <= dim(0));
  Shape s = shape_;
  s[0] = end - begin;
  const size_t row_bytes = dim(0) == 0 ? 0 : nbytes() / static_cast<size_t>(dim(0));
  Tensor t = *this;
  t.shape_ = std::move(s);
  t.data_ = static_cast<char*>(data_) + static_cast<size_t>(begin) * row_bytes;
  return t;
}

Tensor Tensor::Flatten2D() const {
  assert(rank() >= 2);
  int64_t rows = 1;
  for (int i = 0; i + 1 < rank(); ++i) rows *= dim(i);
  Tensor t = *this;
  t.shape_ = {rows, shape_.back()};
  return t;
}

StatusOr<Tensor> Tensor::ToF32() const {
  if (dtype_ == DType::kF8_E4M3) {
    return InvalidArgument(
        "cannot convert an F8_E4M3 tensor {} to F32 without its block scales (StoredWeight)",
        ShapeToString(shape_));
  }
  if (dtype_ != DType::kF32 && dtype_ != DType::kBF16 && dtype_ != DType::kF16 && !IsBlockDType(dtype_)) {
    return InvalidArgument("cannot convert {} tensor to F32", DTypeName(dtype_));
  }
  ASSIGN_OR_RETURN(Tensor out, Zeros(DType::kF32, shape_));
  ConvertToF32(dtype_, data_, out.data<float>(), static_cast<size_t>(numel()));
  return out;
}

}  // namespace moerun
