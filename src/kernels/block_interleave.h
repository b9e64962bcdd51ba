// Interleaved 16-row layout of the GGUF block formats (Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)
// for the matmul kernels.
//
// A GGUF row is a run of blocks (docs/formats.md). At one token, a kernel that walks one row at a
// time spends most of its instructions on the per-block scales (a 2-byte value every 18 or 34
// bytes). The interleaved layout regroups the same bytes of 16 rows so one vector holds the same
// field of 16 rows. A block is seen as H f16 fields and W 4-byte words, each at a fixed offset of
// the GGUF block:
//   Q4_0 (18 bytes):  H = 1 (d at 0),          W = 4  (16 nibble bytes qs, from byte 2)
//   Q8_0 (34 bytes):  H = 1 (d at 0),          W = 8  (32 int8 qs, from byte 2)
//   Q5_0 (22 bytes):  H = 1 (d at 0),          W = 5  (word 0: qh, the 32 fifth bits; 1-4: qs)
//   Q5_1 (24 bytes):  H = 2 (d, m at 0, 2),    W = 5  (as Q5_0)
//   Q4_K (144 bytes): H = 2 (d, dmin at 0, 2), W = 35 (3 words of packed 6-bit scales/mins, 32 of qs)
//   Q5_K (176 bytes): H = 2 (d, dmin at 0, 2), W = 43 (3 scale words, 8 qh words, 32 qs words)
//   Q6_K (210 bytes): H = 1 (d at 208),        W = 52 (words 0-3: the 16 int8 scales, bytes 192..207;
//                     words 4-35: ql, bytes 0..127; words 36-51: qh, bytes 128..191)
// and block column kb of the 16 rows (16 x block_bytes bytes, the same as in GGUF) is
//   [field h = 0 .. H-1: rows 0..15 x f16][word w = 0 .. W-1: rows 0..15 x 4 bytes]
// so field h of row j is at 32 h + 2 j and word w at 32 H + 64 w + 4 j. Packing and unpacking
// move bytes (and Q5's qh bits) only: lossless and exact. One 64-byte load is one word of all 16 rows; an
// int8 dot with the 4 activation bytes of that word broadcast (vpdpbusd) gives each row's partial sum in its
// own 32-bit lane, with no horizontal sums. Which elements a word holds:
//   Q4_0 word g: elements 4g..4g+3 in its low nibbles and 16+4g.. in its high nibbles;
//   Q5_0 / Q5_1 word 1 + g: the same nibbles; word 0: each row's qh transposed (the GGUF qh has
//     bit e for element e): bit G of byte j is the fifth bit of element 4G + j, so group G's four
//     fifth bits (elements 4G..4G+3, G < 8) sit at bit G of the word's 4 bytes, where one shift
//     and one mask move them to bit 4 (TransposeQ5Qh; the only word that is not a plain copy);
//   Q4_K qs word 8t + g: for sub-blocks 2t and 2t+1, elements 4g..4g+3 in its low and high nibbles;
//   Q5_K the same qs words (from word 11), and qh word 3 + g: bit s of its byte e the fifth bit of
//     element 4g + e of sub-block s;
//   Q6_K (super-block halves h = 0, 1 of 128 elements, 32-element blocks i = 4h + g, p = 0..7):
//     ql word 16h + 8(g & 1) + p: the low 4 bits of elements 32i + 4p .. +3, in its low nibbles
//     for g < 2 and its high nibbles for g >= 2; qh word 8h + p: their high 2 bits, bits 2g, 2g+1
//     of each byte (so a block's 6-bit q of 4 consecutive elements is 2 loads, shifts and masks);
//     scale word s / 4, byte s % 4: the int8 scale of 16-element sub-block s (elements 16s..).
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace moerun {

inline constexpr int kInterleaveRows = 16;

// Whether `t` is stored interleaved when packed (every block format but the load-only ones).
inline bool IsInterleavedBlockType(DType t) { return IsBlockDType(t) && !IsLoadOnlyDType(t); }

// H: the f16 fields of a block (d; d and m for Q5_1; d and dmin for Q4_K and Q5_K).
constexpr int InterleavedHalfFields(DType t) {
  return t == DType::kQ5_1 || t == DType::kQ4_K || t == DType::kQ5_K ? 2 : 1;
}

// Byte offset in the GGUF block of f16 field f (< H).
constexpr size_t InterleavedFieldOffset(DType t, int f) {
  return t == DType::kQ6_K ? 208 : 2 * static_cast<size_t>(f);
}

// Byte offset in the GGUF block of word w (< W): Q6_K's scales first, then ql and qh; the others
// in block order after the f16 fields.
constexpr size_t InterleavedWordOffset(DType t, size_t w) {
  if (t == DType::kQ6_K) return w < 4 ? 192 + 4 * w : 4 * (w - 4);
  return 2 * static_cast<size_t>(InterleavedHalfFields(t)) + 4 * w;
}

// Bytes of one block column kb of the 16 rows: 16 x DTypeBlockBytes(t).
inline size_t InterleavedColumnBytes(DType t) { return kInterleaveRows * DTypeBlockBytes(t); }

// W: the 4-byte words of a block.
inline size_t InterleavedWords(DType t) { return (DTypeBlockBytes(t) - 2 * InterleavedHalfFields(t)) / 4; }

// Q5_0 / Q5_1's qh word (4 bytes, little-endian) from GGUF order (bit e: element e) to the packed
// order (bit G of byte j: element 4G + j), or back (kBack). Either is a bit permutation.
// Byte j of the packed word gathers GGUF bits j, 4 + j, .., 28 + j (halving the gaps 4 -> 1 in
// three steps); back, the steps run in reverse.
template <bool kBack = false>
inline void TransposeQ5Qh(const uint8_t* in, uint8_t* out) {
  uint32_t from = 0, to = 0;
  std::memcpy(&from, in, 4);
  for (int j = 0; j < 4; ++j) {
    if constexpr (kBack) {
      uint32_t x = (from >> (8 * j)) & 0xFFu;
      x = (x | x << 12) & 0x000F000Fu;
      x = (x | x << 6) & 0x03030303u;
      x = (x | x << 3) & 0x11111111u;
      to |= x << j;
    } else {
      uint32_t x = (from >> j) & 0x11111111u;
      x = (x | x >> 3) & 0x03030303u;
      x = (x | x >> 6) & 0x000F000Fu;
      x = (x | x >> 12) & 0xFFu;
      to |= x << (8 * j);
    }
  }
  std::memcpy(out, &to, 4);
}

inline bool HasTransposedQh(DType t, size_t word) {
  return word == 0 && (t == DType::kQ5_0 || t == DType::kQ5_1);
}

// Moves GGUF block `block` of row `row` (< 16) into its interleaved column (or back).
inline void InterleaveBlock(DType t, const uint8_t* block, int row, uint8_t* column) {
  const int h = InterleavedHalfFields(t);
  for (int f = 0; f < h; ++f) std::memcpy(column + 32 * f + 2 * row, block + InterleavedFieldOffset(t, f), 2);
  for (size_t w = 0, words = InterleavedWords(t); w < words; ++w) {
    uint8_t* to = column + 32 * h + (w * kInterleaveRows + row) * 4;
    const uint8_t* from = block + InterleavedWordOffset(t, w);
    if (HasTransposedQh(t, w)) {
      TransposeQ5Qh(from, to);
    } else {
      std::memcpy(to, from, 4);
    }
  }
}
inline void DeinterleaveBlock(DType t, const uint8_t* column, int row, uint8_t* block) {
  const int h = InterleavedHalfFields(t);
  for (int f = 0; f < h; ++f) std::memcpy(block + InterleavedFieldOffset(t, f), column + 32 * f + 2 * row, 2);
  for (size_t w = 0, words = InterleavedWords(t); w < words; ++w) {
    uint8_t* to = block + InterleavedWordOffset(t, w);
    const uint8_t* from = column + 32 * h + (w * kInterleaveRows + row) * 4;
    if (HasTransposedQh(t, w)) {
      TransposeQ5Qh</*kBack=*/true>(from, to);
    } else {
      std::memcpy(to, from, 4);
    }
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
