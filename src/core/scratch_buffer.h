// ScratchBuffer<T>: a grow-only, 64-byte aligned buffer reused across calls, so hot loops do not
// pay for fresh pages (and their first-touch faults) on every call.
// Thread safety: none; the owner serialises use.
#pragma once

#include <cstddef>

#include "core/tensor.h"

namespace moerun {

template <typename T>
class ScratchBuffer {
 public:
  // A buffer of at least n elements; contents are unspecified. Invalidates earlier pointers
  // only when it grows.
  T* Get(size_t n) {
    if (n > capacity_) {
      data_ = MakeAlignedArray<T>(n);
      capacity_ = n;
    }
    return data_.get();
  }

 private:
  AlignedArray<T> data_;
  size_t capacity_ = 0;
};

}  // namespace moerun
