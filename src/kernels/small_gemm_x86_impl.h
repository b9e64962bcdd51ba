// x86 bodies of kernels/small_gemm.h, written once over a vector type V (Avx2Vec: 8 lanes,
// Avx512Vec: 16 lanes). Include from small_gemm_avx2.cc / small_gemm_avx512.cc only (internal
// linkage; each file compiles it for its ISA after defining its V).
//
// NT: register tiles of MR query rows x NR cache rows, one accumulator vector per (i, j), walked
// over k in V::kLanes chunks (tail chunk masked to zero), reduced by V::Sum (fixed tree). Every
// C[i][j] gets the same sequence of operations whatever tile it falls in.
// NN: tiles of MR rows x 2 vectors of columns; acc = fma(broadcast A[i][p], B[p][j..], acc) over p.
#pragma once

#include <algorithm>
#include <cstdint>

namespace moerun::internal {
namespace {

template <typename V, int MR, int NR>
void TileNT(int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc) {
  typename V::T acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = V::Zero();
  int64_t p = 0;
  for (; p + V::kLanes <= k; p += V::kLanes) {
    typename V::T bv[NR];
    for (int j = 0; j < NR; ++j) bv[j] = V::Load(b + j * ldb + p);
    for (int i = 0; i < MR; ++i) {
      const typename V::T av = V::Load(a + i * lda + p);
      for (int j = 0; j < NR; ++j) acc[i][j] = V::Fma(av, bv[j], acc[i][j]);
    }
  }
  if (p < k) {
    const int left = static_cast<int>(k - p);
    typename V::T bv[NR];
    for (int j = 0; j < NR; ++j) bv[j] = V::LoadPartial(b + j * ldb + p, left);
    for (int i = 0; i < MR; ++i) {
      const typename V::T av = V::LoadPartial(a + i * lda + p, left);
      for (int j = 0; j < NR; ++j) acc[i][j] = V::Fma(av, bv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) c[i * ldc + j] = V::Sum(acc[i][j]);
}

template <typename V, int MR>
void RowsNT(int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
            int64_t ldc) {
  constexpr int kNR = V::kTileNT;
  int64_t j = 0;
  for (; j + kNR <= n; j += kNR) TileNT<V, MR, kNR>(k, a, lda, b + j * ldb, ldb, c + j, ldc);
  for (; j < n; ++j) TileNT<V, MR, 1>(k, a, lda, b + j * ldb, ldb, c + j, ldc);
}

template <typename V>
void GemmNTImpl(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                float* c, int64_t ldc) {
  int64_t i = 0;
  for (; i + V::kTileNT <= m; i += V::kTileNT)
    RowsNT<V, V::kTileNT>(n, k, a + i * lda, lda, b, ldb, c + i * ldc, ldc);
  for (; i < m; ++i) RowsNT<V, 1>(n, k, a + i * lda, lda, b, ldb, c + i * ldc, ldc);
}

// C[i][j0 .. j0 + width) for MR rows; width <= 2 * kLanes (partial vectors masked).
template <typename V, int MR>
void TileNN(int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
            int width) {
  typename V::T acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = V::Zero();
  const int w0 = std::min(width, V::kLanes), w1 = width - w0;
  for (int64_t p = 0; p < k; ++p) {
    const float* bp = b + p * ldb;
    const typename V::T b0 = w0 == V::kLanes ? V::Load(bp) : V::LoadPartial(bp, w0);
    const typename V::T b1 = w1 == V::kLanes ? V::Load(bp + V::kLanes) : V::LoadPartial(bp + V::kLanes, w1);
    for (int i = 0; i < MR; ++i) {
      const typename V::T av = V::Broadcast(a[i * lda + p]);
      acc[i][0] = V::Fma(av, b0, acc[i][0]);
      if (w1 > 0) acc[i][1] = V::Fma(av, b1, acc[i][1]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    V::StorePartial(c + i * ldc, acc[i][0], w0);
    if (w1 > 0) V::StorePartial(c + i * ldc + V::kLanes, acc[i][1], w1);
  }
}

template <typename V>
void GemmNNImpl(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                float* c, int64_t ldc) {
  constexpr int kMR = 4;
  for (int64_t j = 0; j < n; j += 2 * V::kLanes) {
    const int width = static_cast<int>(std::min<int64_t>(2 * V::kLanes, n - j));
    int64_t i = 0;
    for (; i + kMR <= m; i += kMR)
      TileNN<V, kMR>(k, a + i * lda, lda, b + j, ldb, c + i * ldc + j, ldc, width);
    for (; i < m; ++i) TileNN<V, 1>(k, a + i * lda, lda, b + j, ldb, c + i * ldc + j, ldc, width);
  }
}

}  // namespace
}  // namespace moerun::internal
