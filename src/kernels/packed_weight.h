// PackedWeight: a linear layer's weight W [N, K] (nn.Linear layout, y = x W^T) reordered once, at
// load time, for the matmul kernels: bytes + a WeightFormat (kernels/weight_format.h), nothing
// per-dtype in callers.
//
// Output rows are grouped in blocks of 16 (N padded with zero rows to a multiple of 16). A block
// holds, by the format's layout:
//   kLanes16 f32:  for each k in [0, K): 16 lanes W[n][k]                 (K * 64 bytes)
//            f16:  for each k in [0, K): 16 lanes W[n][k] as f16          (K * 32 bytes)
//            bf16: for each k pair p < ceil(K/2): 16 lanes x (W[n][2p], W[n][2p+1]) (K padded
//                  with a zero column if odd)                              (ceil(K/2) * 64 bytes)
//   kInterleaved16  q8_0/q4_0/q4_k/q6_k: the GGUF bytes of the 16 rows (K / block_size ggml
//            blocks each; padding rows are all-zero blocks: value 0) regrouped per block column:
//            the 16 rows' f16 scales, then the rest in 4-byte words of the 16 rows
//            (kernels/block_interleave.h). Lossless: RawRow gives back a row's GGUF bytes.
// One zmm load of a kLanes16 block holds 16 output columns for one k (a k pair for bf16).
//
// A gate/up pair is packed interleaved: block 2j holds gate rows [16j, 16j+16) and block 2j+1 the
// up rows [16j, 16j+16), so one kernel task sees matching gate and up columns and can apply
// SwiGLU in registers. `out_features` is then I (not 2I) and `interleaved_gate_up` is true.
//
// Thread safety: immutable after packing; shared read-only by all threads.
#pragma once

#include <cstdint>
#include <vector>

#include "core/huge_page_arena.h"
#include "core/status.h"
#include "core/stored_weight.h"
#include "core/tensor.h"
#include "kernels/weight_format.h"

namespace moerun {

class PackedWeight {
 public:
  PackedWeight() = default;

  // Packs W [N, K] (any float or block dtype, load-only ones included) into `format`; with a column range,
  // packs only W[:, col_begin:col_end) (a tensor-parallel slice of the input dimension). A block-dtype source
  // in the same format with a block-aligned range is copied byte for byte; anything else goes through f32
  // rows one at a time (dequantised, then quantised with core/block_quant.h). Fails, naming the bound, when K
  // is not a multiple of the format's K alignment. A block-scaled FP8 weight (core/stored_weight.h) is
  // dequantised one row (its column range) at a time straight into the packed bytes: the extra memory is one
  // f32 row.
  static StatusOr<PackedWeight> Pack(const StoredWeight& w, WeightFormat format, int64_t col_begin = 0,
                                     int64_t col_end = -1);
  static StatusOr<PackedWeight> Pack(const Tensor& w, WeightFormat format, int64_t col_begin = 0,
                                     int64_t col_end = -1) {
    return Pack(StoredWeight(w), format, col_begin, col_end);
  }
  // Packs gate [I, K] and up [I, K] interleaved (see above). Shapes must match.
  static StatusOr<PackedWeight> PackGateUp(const StoredWeight& gate, const StoredWeight& up,
                                           WeightFormat format);
  static StatusOr<PackedWeight> PackGateUp(const Tensor& gate, const Tensor& up, WeightFormat format) {
    return PackGateUp(StoredWeight(gate), StoredWeight(up), format);
  }

  WeightFormat format() const { return format_; }
  int64_t out_features() const { return n_; }     // N, or I for a gate/up pair
  int64_t in_features() const { return k_; }      // K
  int64_t n_blocks() const { return n_blocks_; }  // 16-row blocks stored (2x for gate/up)
  bool interleaved_gate_up() const { return gate_up_; }
  size_t block_bytes() const { return block_bytes_; }
  // Block formats: bytes of one output row (K / block_size ggml blocks).
  size_t row_bytes() const { return row_bytes_; }
  // Block formats: the GGUF bytes of output row n (row_bytes() of them) into `row`.
  void RawRow(int64_t n, uint8_t* row) const;
  const uint8_t* block(int64_t b) const { return bytes_.get() + static_cast<size_t>(b) * block_bytes_; }
  const float* f32_block(int64_t b) const { return reinterpret_cast<const float*>(block(b)); }
  const uint16_t* u16_block(int64_t b) const { return reinterpret_cast<const uint16_t*>(block(b)); }
  // Bytes of packed weights (what one full pass streams).
  size_t bytes() const { return static_cast<size_t>(n_blocks_) * block_bytes_; }

  // W[n][k] as stored (dequantised), in double: the reference the kernel tests compare against.
  // For gate/up, n in [0, 2I): gate rows then up rows.
  double At(int64_t n, int64_t k) const;
  // The whole row n, dequantised (faster than K calls of At).
  std::vector<double> Row(int64_t n) const;

 private:
  Status Allocate(WeightFormat format, int64_t n_blocks, int64_t k);
  // Writes f32 row `row` [K] into lane `lane` of block `block`.
  void PutRow(const float* row, int64_t block, int lane);
  // Copies one stored row of the same block format into (block, lane), by the layout.
  void PutRawRow(const uint8_t* row, int64_t block, int lane);
  // Packs rows of `src` (columns [c0, c1)) into lanes; which = 0/1 for interleaved gate/up.
  Status PackRows(const StoredWeight& src, int64_t c0, int64_t c1, int which, int stride);
  // (block, lane) holding output row n.
  void Locate(int64_t n, int64_t* block, int* lane) const;

  WeightFormat format_ = WeightFormat::kF32;
  int64_t n_ = 0, k_ = 0, n_blocks_ = 0;
  bool gate_up_ = false;
  size_t block_bytes_ = 0, row_bytes_ = 0;
  StreamedBytes bytes_;  // huge-page backed when large (core/huge_page_arena.h)
};

}  // namespace moerun
