// x86 bodies of kernels/small_gemm.h, written once over a vector trait V (kernels/simd_f32_x86.h:
// F32x8, F32x16). Include from small_gemm_avx2.cc / small_gemm_avx512.cc only (internal
// linkage; each file compiles it for its ISA after defining its V).
//
// NT: register tiles of MR query rows x NR cache rows, one accumulator vector per (i, j), walked
// over k in V::W chunks (tail chunk masked to zero), reduced by V::Reduce (fixed tree). Every
// C[i][j] gets the same sequence of operations whatever tile it falls in.
// NN: tiles of MR rows x 2 vectors of columns; acc = fma(broadcast A[i][p], B[p][j..], acc) over p,
// from acc = 0 or (accumulate) from the tile of C.
// Paged B: both walk B block by block and prefetch rows ahead as they go. NT issues one line of the
// next block's rows per k step of its tiles until all are issued. NN prefetches in the first row
// tile of each column strip only (the other row tiles find the lines in cache: with every tile
// prefetching, a 2048-token prefill ran 0.85 x as fast): at each block's start, the strip's lines
// of the rows one chunk (kNNChunk rows) further on, which the strip's pass over the next chunk
// reads; in the first chunk also those of the next block. In-process A/B of a V2-Lite decode at
// 2048 and 4096 positions (AMD Zen 5, 2 threads): the value loop 0.65-0.67 x the time without
// prefetch with the next block alone, and 0.84-0.99 x that again with the chunk ahead; the score and
// softmax loops 0.88-0.90 x; on the AVX2 rows 0.90 x and 0.75 x (docs/architecture.md "Decode at
// long contexts").
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/small_gemm.h"

namespace moerun::internal {
namespace {

inline void PrefetchLine(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }

// The lines holding floats [0, k) of `rows` rows ld floats apart from `row`, handed out one by one
// (Next issues the next line's prefetch, nothing once all are issued): the next block of a paged B
// (NT: a line per k step while the current block is multiplied; NN: a column strip of it at once).
class LinePrefetcher {
 public:
  LinePrefetcher() = default;
  LinePrefetcher(const float* row, int64_t ld, int64_t k, int64_t rows)
      : line_(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(row) & ~uintptr_t{63})),
        row_step_(ld * static_cast<int64_t>(sizeof(float))),
        lines_per_row_(
            static_cast<int>(((reinterpret_cast<uintptr_t>(row) & 63) + k * sizeof(float) + 63) / 64)),
        rows_left_(rows) {}
  bool Done() const { return rows_left_ == 0; }
  void Next() {
    if (rows_left_ == 0) return;
    PrefetchLine(line_ + 64 * line_in_row_);
    if (++line_in_row_ == lines_per_row_) {
      line_in_row_ = 0;
      line_ += row_step_;
      --rows_left_;
    }
  }

 private:
  const char* line_ = nullptr;  // the current row's first line
  int64_t row_step_ = 0;        // bytes between rows
  int lines_per_row_ = 0, line_in_row_ = 0;
  int64_t rows_left_ = 0;
};

// pf: the next block's prefetcher (one line per k step), or null.
template <typename V, int MR, int NR>
void TileNT(int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
            LinePrefetcher* pf) {
  typename V::Vec acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = V::Zero();
  int64_t p = 0;
  for (; p + V::W <= k; p += V::W) {
    if (pf != nullptr) pf->Next();
    typename V::Vec bv[NR];
    for (int j = 0; j < NR; ++j) bv[j] = V::Load(b + j * ldb + p);
    for (int i = 0; i < MR; ++i) {
      const typename V::Vec av = V::Load(a + i * lda + p);
      for (int j = 0; j < NR; ++j) acc[i][j] = V::Fma(av, bv[j], acc[i][j]);
    }
  }
  if (p < k) {
    const int left = static_cast<int>(k - p);
    typename V::Vec bv[NR];
    for (int j = 0; j < NR; ++j) bv[j] = V::LoadPartial(b + j * ldb + p, left);
    for (int i = 0; i < MR; ++i) {
      const typename V::Vec av = V::LoadPartial(a + i * lda + p, left);
      for (int j = 0; j < NR; ++j) acc[i][j] = V::Fma(av, bv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) c[i * ldc + j] = V::Reduce(acc[i][j]);
}

template <typename V, int MR, int kNR>
void RowsNT(int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
            int64_t ldc, LinePrefetcher* pf) {
  int64_t j = 0;
  for (; j + kNR <= n; j += kNR) TileNT<V, MR, kNR>(k, a, lda, b + j * ldb, ldb, c + j, ldc, pf);
  for (; j < n; ++j) TileNT<V, MR, 1>(k, a, lda, b + j * ldb, ldb, c + j, ldc, pf);
}

// kTile: rows and columns of the NT register tile (kTile^2 accumulators must fit the registers).
// Columns [j0, j1) of C, one contiguous run of B's rows after another.
template <typename V, int kTile>
void GemmNTImpl(int64_t m, int64_t j0, int64_t j1, int64_t k, const float* a, int64_t lda, const PagedRows& b,
                float* c, int64_t ldc) {
  for (int64_t j = j0; j < j1;) {
    const int64_t run = b.RunFrom(j, j1);
    const float* bj = b.Row(j);
    LinePrefetcher next;
    if (j + run < j1) next = LinePrefetcher(b.Row(j + run), b.ld, k, b.RunFrom(j + run, j1));
    auto pf = [&] { return next.Done() ? nullptr : &next; };  // none once every line is issued
    int64_t i = 0;
    for (; i + kTile <= m; i += kTile)
      RowsNT<V, kTile, kTile>(run, k, a + i * lda, lda, bj, b.ld, c + i * ldc + j, ldc, pf());
    for (; i < m; ++i) RowsNT<V, 1, kTile>(run, k, a + i * lda, lda, bj, b.ld, c + i * ldc + j, ldc, pf());
    j += run;
  }
}

// Rows of B per pass over C's tiles: every tile walks kNNChunk rows of B, then the next chunk
// continues each element's chain from its stored value (an exact f32 store and reload), so each
// chunk of B (128 rows of 2 KB: 256 KB) stays in L2 while all the tiles read their column strips of
// it, instead of every tile walking all of B from memory.
constexpr int64_t kNNChunk = 128;

// Prefetches the lines of `width` floats from column j0 of B's rows p .. p + b.RunFrom(p, end) - 1.
inline void PrefetchStrip(const PagedRows& b, int64_t p, int64_t end, int64_t j0, int width) {
  LinePrefetcher lines(b.Row(p) + j0, b.ld, width, b.RunFrom(p, end));
  while (!lines.Done()) lines.Next();
}

// C[i][j0 .. j0 + width) for MR rows over rows [p_begin, p_end) of B; width <= 2 * kLanes. kFull:
// width == 2 * kLanes (plain loads and stores: AVX2 masked stores are slow on AMD cores); otherwise
// partial vectors are masked. The tile stays in registers over those rows of B, walked run by run
// (b.RunFrom) when paged. prefetch_end > 0: at each run's start, also prefetch the strip's lines of
// the rows kNNChunk further on (below prefetch_end), and in the first chunk (p_begin == 0) those of
// the next run. A 16-row block's strip (AVX-512: 32 lines) is multiplied in an estimated 30 ns (16
// steps of about 8 cycles): the next block is too close to hide a miss to memory, the next chunk's
// block far enough (docs/architecture.md).
template <typename V, int MR, bool kFull>
void TileNN(int64_t p_begin, int64_t p_end, const float* a, int64_t lda, const PagedRows& b, int64_t j0,
            float* c, int64_t ldc, int width, bool accumulate, int64_t prefetch_end) {
  typename V::Vec acc[MR][2];
  const int w0 = kFull ? V::W : std::min(width, V::W), w1 = kFull ? V::W : width - w0;
  auto load = [&](const float* p, int w) { return kFull ? V::Load(p) : V::LoadPartial(p, w); };
  for (int i = 0; i < MR; ++i) {
    if (accumulate) {
      acc[i][0] = load(c + i * ldc, w0);
      acc[i][1] = w1 > 0 ? load(c + i * ldc + V::W, w1) : V::Zero();
    } else {
      acc[i][0] = acc[i][1] = V::Zero();
    }
  }
  for (int64_t p0 = p_begin; p0 < p_end;) {
    const int64_t run = b.RunFrom(p0, p_end);
    const float* bp = b.Row(p0) + j0;
    if (prefetch_end > 0) {  // all at once, while this run is multiplied
      if (p_begin == 0 && p0 + run < p_end) PrefetchStrip(b, p0 + run, p_end, j0, width);
      if (p0 + kNNChunk < prefetch_end) PrefetchStrip(b, p0 + kNNChunk, prefetch_end, j0, width);
    }
    for (int64_t p = p0; p < p0 + run; ++p, bp += b.ld) {
      const typename V::Vec b0 = load(bp, w0);
      const typename V::Vec b1 = w1 > 0 ? load(bp + V::W, w1) : V::Zero();
      for (int i = 0; i < MR; ++i) {
        const typename V::Vec av = V::Set1(a[i * lda + p]);
        acc[i][0] = V::Fma(av, b0, acc[i][0]);
        if (w1 > 0) acc[i][1] = V::Fma(av, b1, acc[i][1]);
      }
    }
    p0 += run;
  }
  for (int i = 0; i < MR; ++i) {
    if (kFull) {
      V::Store(c + i * ldc, acc[i][0]);
      V::Store(c + i * ldc + V::W, acc[i][1]);
    } else {
      V::StorePartial(c + i * ldc, acc[i][0], w0);
      if (w1 > 0) V::StorePartial(c + i * ldc + V::W, acc[i][1], w1);
    }
  }
}

// Tiles of kMR rows x 2 vectors (then of 4 rows, then single rows), chunk by chunk of B's rows: every
// element's fma chain runs over p in order whatever the tile and the chunks, so both are free (kMR * 2
// accumulators must fit the registers).
template <typename V, int kMR>
void GemmNNImpl(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const PagedRows& b, float* c,
                int64_t ldc, bool accumulate) {
  for (int64_t p0 = 0; p0 < k || p0 == 0; p0 += kNNChunk) {
    const int64_t p1 = std::min(k, p0 + kNNChunk);
    const bool from_c = accumulate || p0 > 0;
    for (int64_t j = 0; j < n; j += 2 * V::W) {
      const int width = static_cast<int>(std::min<int64_t>(2 * V::W, n - j));
      auto rows = [&]<bool kFull>() {
        // Paged B: the strip's first row tile prefetches; a contiguous B is one run the hardware
        // prefetchers follow.
        auto pf = [&](int64_t row) { return row == 0 && b.table != nullptr ? k : int64_t{0}; };
        int64_t i = 0;
        for (; i + kMR <= m; i += kMR)
          TileNN<V, kMR, kFull>(p0, p1, a + i * lda, lda, b, j, c + i * ldc + j, ldc, width, from_c, pf(i));
        for (; i + 4 <= m; i += 4)
          TileNN<V, 4, kFull>(p0, p1, a + i * lda, lda, b, j, c + i * ldc + j, ldc, width, from_c, pf(i));
        for (; i < m; ++i)
          TileNN<V, 1, kFull>(p0, p1, a + i * lda, lda, b, j, c + i * ldc + j, ldc, width, from_c, pf(i));
      };
      if (width == 2 * V::W) {
        rows.template operator()<true>();
      } else {
        rows.template operator()<false>();
      }
    }
  }
}

}  // namespace
}  // namespace moerun::internal
