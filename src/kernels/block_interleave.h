// Interleaved 16-row layout of GGUF block formats (Q8_0, Q4_0, Q4_K) for the matmul kernels.
//
// A GGUF row is a run of blocks (docs/formats.md). At one token, a kernel that walks one row at a
// time spends most of its instructions on the per-block scales (a 2-byte value every 18 or 34
// bytes). The interleaved layout regroups the same bytes of 16 rows so one vector holds the same
// field of 16 rows. A block is seen as H leading f16 fields, then W 4-byte words:
//   Q4_0 (18 bytes):  H = 1 (d),          W = 4  (16 nibble bytes qs)
//   Q8_0 (34 bytes):  H = 1 (d),          W = 8  (32 int8 qs)
//   Q4_K (144 bytes): H = 2 (d, dmin),    W = 35 (3 words of packed 6-bit scales/mins, 32 of qs)
// and block column kb of the 16 rows (16 x block_bytes bytes, the same as in GGUF) is
//   [field h = 0 .. H-1: rows 0..15 x f16][word w = 0 .. W-1: rows 0..15 x 4 bytes]
// so field h of row j is at 32 h + 2 j and word w at 32 H + 64 w + 4 j. Packing and unpacking
// move bytes only: lossless and exact. One 64-byte load is one word of all 16 rows; an int8 dot
// with the 4 activation bytes of that word broadcast (vpdpbusd) gives each row's partial sum in
// its own 32-bit lane, with no horizontal sums. (Q4_0 word g holds elements 4g..4g+3 in its low
// nibbles and 16+4g.. in its high nibbles; Q4_K qs word 8t + g holds, for sub-blocks 2t and 2t+1,
// elements 4g..4g+3 in its low and high nibbles.)
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace moerun {

inline constexpr int kInterleaveRows = 16;

// Whether `t` is stored interleaved when packed (Q8_0, Q4_0, Q4_K).
constexpr bool IsInterleavedBlockType(DType t) {
  return t == DType::kQ8_0 || t == DType::kQ4_0 || t == DType::kQ4_K;
}

// H: the leading f16 fields of a block (d; d and dmin for Q4_K).
constexpr int InterleavedHalfFields(DType t) { return t == DType::kQ4_K ? 2 : 1; }

// Bytes of one block column kb of the 16 rows: 16 x DTypeBlockBytes(t).
inline size_t InterleavedColumnBytes(DType t) { return kInterleaveRows * DTypeBlockBytes(t); }

// Moves GGUF block `block` of row `row` (< 16) into its interleaved column (or back).
inline void InterleaveBlock(DType t, const uint8_t* block, int row, uint8_t* column) {
  const int h = InterleavedHalfFields(t);
  for (int f = 0; f < h; ++f) std::memcpy(column + 32 * f + 2 * row, block + 2 * f, 2);
  const size_t words = (DTypeBlockBytes(t) - 2 * h) / 4;
  for (size_t w = 0; w < words; ++w) {
    std::memcpy(column + 32 * h + (w * kInterleaveRows + row) * 4, block + 2 * h + 4 * w, 4);
  }
}
inline void DeinterleaveBlock(DType t, const uint8_t* column, int row, uint8_t* block) {
  const int h = InterleavedHalfFields(t);
  for (int f = 0; f < h; ++f) std::memcpy(block + 2 * f, column + 32 * f + 2 * row, 2);
  const size_t words = (DTypeBlockBytes(t) - 2 * h) / 4;
  for (size_t w = 0; w < words; ++w) {
    std::memcpy(block + 2 * h + 4 * w, column + 32 * h + (w * kInterleaveRows + row) * 4, 4);
  }
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
