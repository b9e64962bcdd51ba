// Tensor: a dense, row-major (C order) n-dimensional array of one DType (for block dtypes such as
// Q4_K, each row along the last dim is a run of blocks; see core/dtype.h).
//
// A Tensor either owns its bytes (64-byte aligned heap storage, freed with the last copy) or
// views memory owned elsewhere (an mmapped file, another tensor); a view never outlives its
// owner's lifetime by contract, and `keepalive` may pin that owner. Copies are shallow: they share
// the bytes. Shapes are int64 dims, all >= 0; rank 0 is a scalar with one element.
//
// Thread safety: concurrent reads are safe; writers must not race with readers of the same bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"

namespace moerun {

using Shape = std::vector<int64_t>;

std::string ShapeToString(const Shape& shape);  // "[64, 2048]"

inline constexpr size_t kTensorAlignment = 64;

class Tensor {
 public:
  Tensor() = default;

  // Allocates zero-filled, 64-byte aligned storage. Fails (OutOfRange) if the size overflows.
  static StatusOr<Tensor> Zeros(DType dtype, Shape shape);
  // Views `data` (not owned). `keepalive`, if set, is held to keep the owner alive.
  static Tensor View(DType dtype, Shape shape, void* data, std::shared_ptr<const void> keepalive = {});

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[static_cast<size_t>(i)]; }
  int64_t numel() const;
  // For block dtypes the last dim is the row length in elements (a multiple of the block size).
  size_t nbytes() const;
  bool empty() const { return data_ == nullptr && numel() == 0; }

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  template <typename T>
  T* data() {
    return static_cast<T*>(data_);
  }
  template <typename T>
  const T* data() const {
    return static_cast<const T*>(data_);
  }
  template <typename T>
  std::span<T> span() {
    return {data<T>(), static_cast<size_t>(numel())};
  }
  template <typename T>
  std::span<const T> span() const {
    return {data<T>(), static_cast<size_t>(numel())};
  }

  // A view of rows [begin, end) along dim 0. REQUIRES: rank >= 1, 0 <= begin <= end <= dim(0).
  Tensor Rows(int64_t begin, int64_t end) const;
  // The leading dims merged: [d0, ..., dk, last] viewed as [d0 * ... * dk, last] (same bytes).
  // REQUIRES: rank >= 2.
  Tensor Flatten2D() const;

  // Returns a new owning f32 tensor with the same shape (from f32, bf16, f16 or a block type; not
  // F8_E4M3, whose values need their scales: core/stored_weight.h).
  StatusOr<Tensor> ToF32() const;

 private:
  DType dtype_ = DType::kF32;
  Shape shape_;
  void* data_ = nullptr;
  std::shared_ptr<const void> owner_;  // keeps the bytes alive (owning buffer or external owner)
};

// 64-byte aligned buffer of T for scratch space in kernels. Not zero-initialised.
template <typename T>
struct AlignedDeleter {
  void operator()(T* p) const { ::operator delete[](p, std::align_val_t(kTensorAlignment)); }
};
template <typename T>
using AlignedArray = std::unique_ptr<T[], AlignedDeleter<T>>;
template <typename T>
AlignedArray<T> MakeAlignedArray(size_t n) {
  return AlignedArray<T>(static_cast<T*>(
      ::operator new[](n * sizeof(T) + (n == 0 ? 1 : 0), std::align_val_t(kTensorAlignment))));
}

}  // namespace moerun
