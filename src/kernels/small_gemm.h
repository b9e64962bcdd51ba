// Small dense f32 products for attention over the latent cache (MLA scores and value sums):
//   GemmNT: C[i][j] = sum_k A[i][k] * B[j][k]   (query rows x cache rows, both k-contiguous)
//   GemmNN: C[i][j] = sum_p A[i][p] * B[p][j]   (probabilities x cache rows)
//   GemmNNAccumulate: C[i][j] += sum_p A[i][p] * B[p][j], as a continuation of GemmNN's chain
//   GemmNNPaged: GemmNN with B's rows in blocks listed by a block table (a paged KV cache)
//   GemmNTPaged: GemmNT over B's rows [j0, j1) of such a table
// Row-major with leading dimensions in elements. GemmNT and GemmNN write C (no accumulation).
//
// Arithmetic, fixed per ISA whatever m, n and the blocking (so attention is batch invariant):
//   NT: k is walked in vector-width chunks, lane l summing k = l, l + L, ... with one fma each
//       (the tail chunk is zero-padded), then the L lanes are added in a fixed tree (L = 16 on
//       AVX-512, 8 on AVX2; the portable path sums in k order).
//   NN: each C[i][j] is acc = fma(A[i][p], B[p][j], acc) for p = 0, 1, ... from acc = 0, on every
//       path: all ISAs give the same bits. GemmNNAccumulate starts each chain from acc = C[i][j]
//       instead, so splitting p into consecutive parts (GemmNN on the first, GemmNNAccumulate on
//       each next) gives exactly the bits of one GemmNN over all of p (attention over KV blocks).
//       GemmNNPaged gives the bits of GemmNN over the gathered rows; it keeps each tile of C in
//       registers across the blocks instead of storing and reloading it per block.
// Paged B on the vector paths: while a tile works on one block's rows, it also prefetches rows the
// table lists later (GemmNTPaged: the next block; GemmNNPaged: the same block of its next 128-row
// chunk), which the hardware prefetchers cannot guess (a KV cache's blocks lie a layer's worth of
// blocks apart). Prefetches change no bits.
// Thread safety: pure functions; concurrent calls must not share C.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string_view>

namespace moerun {

// Rows of a matrix, contiguous or paged. Contiguous (table == nullptr): row p at data + p * ld.
// Paged: row p at data + table[p / block_rows] * block_stride + (p % block_rows) * ld.
struct PagedRows {
  const float* data = nullptr;
  int64_t ld = 0;                  // floats between rows of a block, e.g. 576 (an MLA cache entry)
  const int32_t* table = nullptr;  // block ids in row order; null: contiguous
  int64_t block_rows = 0;          // rows per block, e.g. 16
  int64_t block_stride = 0;        // floats between blocks
  const float* Row(int64_t p) const {
    return table == nullptr ? data + p * ld
                            : data + table[p / block_rows] * block_stride + (p % block_rows) * ld;
  }
  // Rows p, p + 1, .. p + n - 1 are contiguous for n = RunFrom(p, k) (<= k - p).
  int64_t RunFrom(int64_t p, int64_t k) const {
    return table == nullptr ? k - p : std::min(block_rows - p % block_rows, k - p);
  }
};

void GemmNT(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
            float* c, int64_t ldc);
void GemmNN(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
            float* c, int64_t ldc);
void GemmNNAccumulate(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                      int64_t ldb, float* c, int64_t ldc);

// Which implementation runs: kAuto picks the best the CPU has; tests force each one.
enum class SmallGemmIsa { kAuto, kRef, kAvx2, kAvx512 };
bool SmallGemmIsaSupported(SmallGemmIsa isa);
// kAuto -> the best path the CPU has; any other value unchanged.
SmallGemmIsa ResolveSmallGemmIsa(SmallGemmIsa isa);
// The ISA a --kernel value names ("ref", "avx2", "avx512", "avx512vnni"), capped at what the CPU
// has; "" or a row name such as "avx2-q4_k": kAuto (the best). So `--kernel avx2` runs attention's
// GEMMs on AVX2 too, as an AVX2-only CPU would.
SmallGemmIsa SelectSmallGemmIsa(std::string_view forced = "");
void GemmNT(SmallGemmIsa isa, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
            int64_t ldb, float* c, int64_t ldc);
void GemmNN(SmallGemmIsa isa, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
            int64_t ldb, float* c, int64_t ldc);
void GemmNNAccumulate(SmallGemmIsa isa, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                      const float* b, int64_t ldb, float* c, int64_t ldc);
// B: rows 0 .. k - 1 of `b`, n elements used per row.
void GemmNNPaged(SmallGemmIsa isa, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                 const PagedRows& b, float* c, int64_t ldc);
// C[i][j] = sum_p A[i][p] * b.Row(j)[p] for j in [j0, j1), at c[i * ldc + j] (columns j0.. of C):
// GemmNT's bits for every element, whatever j0, j1 and the blocks.
void GemmNTPaged(SmallGemmIsa isa, int64_t m, int64_t j0, int64_t j1, int64_t k, const float* a, int64_t lda,
                 const PagedRows& b, float* c, int64_t ldc);

namespace internal {
// accumulate: start each element's chain from C (GemmNNAccumulate) instead of 0.
// GemmNTPaged's columns [j0, j1) (GemmNT: one contiguous run from 0).
void GemmNTAvx2(int64_t m, int64_t j0, int64_t j1, int64_t k, const float* a, int64_t lda, const PagedRows& b,
                float* c, int64_t ldc);
void GemmNNAvx2(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const PagedRows& b, float* c,
                int64_t ldc, bool accumulate);
void GemmNTAvx512(int64_t m, int64_t j0, int64_t j1, int64_t k, const float* a, int64_t lda,
                  const PagedRows& b, float* c, int64_t ldc);
void GemmNNAvx512(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const PagedRows& b, float* c,
                  int64_t ldc, bool accumulate);
}  // namespace internal

}  // namespace moerun
