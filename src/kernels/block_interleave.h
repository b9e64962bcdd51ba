// Interleaved 16-row layout of the simple GGUF block formats (Q8_0, Q4_0) for the matmul kernels.
//
// A GGUF row is a run of blocks, each [f16 scale d][quant bytes qs] (docs/formats.md). At one
// token, a kernel that walks one row at a time spends most of its instructions on the scales (a
// 2-byte value every 18 or 34 bytes). The interleaved layout regroups the same bytes of 16 rows so
// one vector holds the same part of 16 rows: for each 32-element block column kb of the 16 rows,
//
//   [d of rows 0..15: 16 x f16, 32 bytes]
//   [quant group g = 0 .. G-1: rows 0..15 x 4 bytes qs[4g .. 4g+3] of block kb, 64 bytes each]
//
// with G = 4 (Q4_0: 16 nibble bytes; the low nibbles of group g are elements 4g..4g+3 and the high
// nibbles elements 16+4g..16+4g+3) or G = 8 (Q8_0: 32 int8, group g = elements 4g..4g+3). So a
// column kb takes 16 x block_bytes (288 or 544) bytes, exactly what the 16 rows take in GGUF, and
// the bytes are the GGUF bytes, moved: packing and unpacking are lossless and exact. One 64-byte
// load is one quant group of all 16 rows; an int8 dot with the 4 activation bytes of that group
// broadcast (vpdpbusd) gives each row's partial sum in its own 32-bit lane, with no horizontal sums.
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace moerun {

inline constexpr int kInterleaveRows = 16;

// Whether `t` is stored interleaved when packed (Q8_0 and Q4_0).
constexpr bool IsInterleavedBlockType(DType t) { return t == DType::kQ8_0 || t == DType::kQ4_0; }

// Bytes of one block column kb of the 16 rows: 16 x DTypeBlockBytes(t).
inline size_t InterleavedColumnBytes(DType t) { return kInterleaveRows * DTypeBlockBytes(t); }

// Moves GGUF block `block` (block_bytes bytes) of row `row` (< 16) into its interleaved column.
inline void InterleaveBlock(DType t, const uint8_t* block, int row, uint8_t* column) {
  std::memcpy(column + 2 * row, block, 2);
  const size_t qbytes = DTypeBlockBytes(t) - 2;
  for (size_t g = 0; g < qbytes / 4; ++g)
    std::memcpy(column + 32 + (g * kInterleaveRows + row) * 4, block + 2 + 4 * g, 4);
}

// The inverse: GGUF block of row `row` from its interleaved column.
inline void DeinterleaveBlock(DType t, const uint8_t* column, int row, uint8_t* block) {
  std::memcpy(block, column + 2 * row, 2);
  const size_t qbytes = DTypeBlockBytes(t) - 2;
  for (size_t g = 0; g < qbytes / 4; ++g)
    std::memcpy(block + 2 + 4 * g, column + 32 + (g * kInterleaveRows + row) * 4, 4);
}

// Interleaves 16 GGUF rows of `n_blocks` blocks each (row j at rows + j * row_bytes) into `out`
// (n_blocks x InterleavedColumnBytes(t) bytes).
inline void InterleaveRows(DType t, const uint8_t* rows, size_t row_bytes, int64_t n_blocks, uint8_t* out) {
  const size_t bb = DTypeBlockBytes(t), cb = InterleavedColumnBytes(t);
  for (int j = 0; j < kInterleaveRows; ++j) {
    for (int64_t kb = 0; kb < n_blocks; ++kb) {
      InterleaveBlock(t, rows + j * row_bytes + static_cast<size_t>(kb) * bb, j,
                      out + static_cast<size_t>(kb) * cb);
    }
  }
}

}  // namespace moerun
