// PackedWeight: a linear layer's weight reordered once, at load time, for the matmul kernels.
//
// Source layout is nn.Linear's W [N, K] (y = x W^T). Packed layout: output rows in blocks of 16
// (N padded with zero rows to a multiple of 16); within a block,
//   bf16: for each k pair p in [0, K2 = ceil(K/2)): 16 lanes x (W[n][2p], W[n][2p+1]) = 32 bf16
//         = 64 bytes, i.e. block b occupies K2 * 32 uint16 (K padded with a zero column if odd);
//   f32:  for each k in [0, K): 16 lanes W[n][k] = 64 bytes, block b occupies K * 16 floats.
// One zmm load thus holds 16 output columns for one k pair (bf16) or one k (f32); the bf16 pairs
// feed vdpbf16ps directly and split into two f32 vectors with one shift / one mask.
//
// A gate/up pair is packed interleaved: block 2j holds gate rows [16j, 16j+16) and block 2j+1 the
// up rows [16j, 16j+16), so one kernel task sees matching gate and up columns and can apply
// SwiGLU in registers. `out_features` is then I (not 2I) and `interleaved_gate_up` is true.
//
// Thread safety: immutable after packing; shared read-only by all threads.
#pragma once

#include <cstdint>

#include "core/status.h"
#include "core/tensor.h"

namespace moerun {

class PackedWeight {
 public:
  PackedWeight() = default;

  // Packs W [N, K] (f32, bf16 or f16) into `dtype` (kF32 or kBF16); with a column range, packs
  // only W[:, col_begin:col_end) (a tensor-parallel slice of the input dimension).
  static StatusOr<PackedWeight> Pack(const Tensor& w, DType dtype, int64_t col_begin = 0,
                                     int64_t col_end = -1);
  // Packs gate [I, K] and up [I, K] interleaved (see above). Shapes must match.
  static StatusOr<PackedWeight> PackGateUp(const Tensor& gate, const Tensor& up, DType dtype);

  DType dtype() const { return dtype_; }
  int64_t out_features() const { return n_; }  // N, or I for a gate/up pair
  int64_t in_features() const { return k_; }   // K
  int64_t k_pairs() const { return (k_ + 1) / 2; }
  int64_t n_blocks() const { return n_blocks_; }  // 16-row blocks stored (2x for gate/up)
  bool interleaved_gate_up() const { return gate_up_; }
  // Elements (uint16 or float) per block.
  int64_t block_elems() const { return dtype_ == DType::kBF16 ? k_pairs() * 32 : k_ * 16; }
  const uint16_t* bf16_block(int64_t b) const { return bf16_.get() + b * block_elems(); }
  const float* f32_block(int64_t b) const { return f32_.get() + b * block_elems(); }
  // Bytes of packed weights (what one full pass streams).
  size_t bytes() const;

  // Reads back W[n][k] (for tests); for gate/up, n in [0, 2I): gate rows then up rows.
  float At(int64_t n, int64_t k) const;

 private:
  Status Allocate(DType dtype, int64_t n_blocks, int64_t k);
  // Writes source row `row` of `src` (converted to f32 first) into lane `lane` of block `block`.
  void PutRow(const float* row, int64_t block, int lane);
  float At16(int64_t block, int lane, int64_t k) const;

  DType dtype_ = DType::kF32;
  int64_t n_ = 0, k_ = 0, n_blocks_ = 0;
  bool gate_up_ = false;
  AlignedArray<uint16_t> bf16_;
  AlignedArray<float> f32_;
};

}  // namespace moerun
