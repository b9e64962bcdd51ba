// AVX-512 matmul task bodies for the kLanes16 formats (compiled with -mavx512f/bw/vl/dq/bf16 and
// F16C; called only when GetCpuFeatures().HasAvx512Bf16Kernels()). Register tiles: MR rows x NB 16-column
// blocks of accumulators, the full K reduced per tile in k order (so results are thread-count invariant). GCC
// 12's own intrinsics headers trip -Wmaybe-uninitialized (_mm512_undefined_ps) when inlined.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "kernels/matmul_impl.h"
#include "kernels/silu_x86.h"

namespace moerun::internal {
namespace {

// Stores 16 lanes into row m, columns [col, col + 16) clipped to n columns.
inline void StoreLanes(const MatmulJob& job, int64_t m, int64_t col, __m512 v, int64_t n) {
  const int64_t left = n - col;
  if (left <= 0) return;
  const __mmask16 mask =
      left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
  _mm512_mask_storeu_ps(job.YAt(m, col), mask, v);
}

template <int MR, int NB>
inline void Finish(const MatmulJob& job, __m512 (&acc)[MR][NB], int64_t m, int64_t b) {
  const int64_t n = job.w->out_features();
  for (int i = 0; i < MR; ++i) {
    if (job.epilogue == Epilogue::kStore) {
      for (int j = 0; j < NB; ++j) StoreLanes(job, m + i, (b + j) * 16, acc[i][j], n);
    } else {
      for (int j = 0; j + 1 < NB; j += 2) {
        StoreLanes(job, m + i, ((b + j) / 2) * 16, _mm512_mul_ps(SiluV<F32x16>(acc[i][j]), acc[i][j + 1]), n);
      }
    }
  }
}

// f32 activations; weights bf16 (widened), f16 (vcvtph2ps) or f32.
template <int MR, int NB>
void TileF32(const MatmulJob& job, int64_t m, int64_t b) {
  const PackedWeight& w = *job.w;
  __m512 acc[MR][NB];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_setzero_ps();
  const float* x[MR];
  for (int i = 0; i < MR; ++i) x[i] = job.x.f32 + (m + i) * job.x.ld;
  const int64_t k_len = job.KEnd();
  if (w.format() == WeightFormat::kBF16) {
    const uint16_t* blk[NB];
    for (int j = 0; j < NB; ++j) blk[j] = w.u16_block(b + j);
    const __m512i hi_mask = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
    const int64_t full_pairs = k_len / 2;
    for (int64_t p = job.k_begin / 2; p < full_pairs; ++p) {
      __m512 xe[MR], xo[MR];
      for (int i = 0; i < MR; ++i) {
        xe[i] = _mm512_set1_ps(x[i][2 * p]);
        xo[i] = _mm512_set1_ps(x[i][2 * p + 1]);
      }
      PrefetchBf16Panels<MR, NB>(blk, p);
      for (int j = 0; j < NB; ++j) {
        const __m512i v = _mm512_load_si512(blk[j] + p * 32);
        const __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
        const __m512 odd = _mm512_castsi512_ps(_mm512_and_si512(v, hi_mask));
        for (int i = 0; i < MR; ++i) {
          acc[i][j] = _mm512_fmadd_ps(even, xe[i], acc[i][j]);
          acc[i][j] = _mm512_fmadd_ps(odd, xo[i], acc[i][j]);
        }
      }
    }
    if (k_len % 2 != 0) {
      const int64_t p = full_pairs;
      for (int j = 0; j < NB; ++j) {
        const __m512i v = _mm512_load_si512(blk[j] + p * 32);
        const __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
        for (int i = 0; i < MR; ++i)
          acc[i][j] = _mm512_fmadd_ps(even, _mm512_set1_ps(x[i][2 * p]), acc[i][j]);
      }
    }
  } else if (w.format() == WeightFormat::kF16) {
    const uint16_t* blk[NB];
    for (int j = 0; j < NB; ++j) blk[j] = w.u16_block(b + j);
    for (int64_t k = job.k_begin; k < k_len; ++k) {
      __m512 xk[MR];
      for (int i = 0; i < MR; ++i) xk[i] = _mm512_set1_ps(x[i][k]);
      for (int j = 0; j < NB; ++j) {
        const __m512 v =
            _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(blk[j] + k * 16)));
        for (int i = 0; i < MR; ++i) acc[i][j] = _mm512_fmadd_ps(v, xk[i], acc[i][j]);
      }
    }
  } else {
    const float* blk[NB];
    for (int j = 0; j < NB; ++j) blk[j] = w.f32_block(b + j);
    for (int64_t k = job.k_begin; k < k_len; ++k) {
      __m512 xk[MR];
      for (int i = 0; i < MR; ++i) xk[i] = _mm512_set1_ps(x[i][k]);
      for (int j = 0; j < NB; ++j) {
        const __m512 v = _mm512_load_ps(blk[j] + k * 16);
        for (int i = 0; i < MR; ++i) acc[i][j] = _mm512_fmadd_ps(v, xk[i], acc[i][j]);
      }
    }
  }
  Finish<MR, NB>(job, acc, m, b);
}

// bf16 activations (pairs) x bf16 weight pairs with vdpbf16ps, f32 accumulation.
template <int MR, int NB>
void TileBf16Dot(const MatmulJob& job, int64_t m, int64_t b) {
  const PackedWeight& w = *job.w;
  __m512 acc[MR][NB];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_setzero_ps();
  const uint16_t* x[MR];
  for (int i = 0; i < MR; ++i) x[i] = job.x.bf16 + (m + i) * job.x.ld;
  const uint16_t* blk[NB];
  for (int j = 0; j < NB; ++j) blk[j] = w.u16_block(b + j);
  const int64_t pairs = (job.KEnd() + 1) / 2;
  for (int64_t p = job.k_begin / 2; p < pairs; ++p) {
    // Deterministic mode runs this row at 1-2 rows too (kernel_table.h): memory bound there, so
    // it prefetches like TileF32's bf16 decode.
    PrefetchBf16Panels<MR, NB>(blk, p);
    __m512i v[NB];
    for (int j = 0; j < NB; ++j) v[j] = _mm512_load_si512(blk[j] + p * 32);
    for (int i = 0; i < MR; ++i) {
      int32_t pair;
      std::memcpy(&pair, x[i] + 2 * p, sizeof pair);
      const __m512bh a = reinterpret_cast<__m512bh>(_mm512_set1_epi32(pair));
      for (int j = 0; j < NB; ++j)
        acc[i][j] = _mm512_dpbf16_ps(acc[i][j], a, reinterpret_cast<__m512bh>(v[j]));
    }
  }
  Finish<MR, NB>(job, acc, m, b);
}

using TileFn = void (*)(const MatmulJob&, int64_t, int64_t);

template <template <int, int> class Tile, int MaxMr>
struct TileTable;

template <int MR, int NB>
struct F32Tile {
  static void Run(const MatmulJob& job, int64_t m, int64_t b) { TileF32<MR, NB>(job, m, b); }
};
template <int MR, int NB>
struct DotTile {
  static void Run(const MatmulJob& job, int64_t m, int64_t b) { TileBf16Dot<MR, NB>(job, m, b); }
};

// table[mr - 1][nb - 1] for mr in [1, MaxMr], nb in [1, 4].
template <template <int, int> class Tile, int... Mr>
constexpr auto MakeTable(std::integer_sequence<int, Mr...>) {
  return std::array<std::array<TileFn, 4>, sizeof...(Mr)>{
      {{Tile<Mr + 1, 1>::Run, Tile<Mr + 1, 2>::Run, Tile<Mr + 1, 3>::Run, Tile<Mr + 1, 4>::Run}...}};
}

constexpr int kF32Mr = 4;
constexpr int kDotMr = 6;
constexpr auto kF32Tiles = MakeTable<F32Tile>(std::make_integer_sequence<int, kF32Mr>{});
constexpr auto kDotTiles = MakeTable<DotTile>(std::make_integer_sequence<int, kDotMr>{});

template <size_t MaxMr>
void RunTiles(const std::array<std::array<TileFn, 4>, MaxMr>& table, const MatmulJob& job, int64_t m0,
              int64_t m1, int64_t b0, int64_t b1) {
  const int nb = static_cast<int>(b1 - b0);  // <= kMatmulGroupBlocks = 4
  for (int64_t m = m0; m < m1; m += static_cast<int64_t>(MaxMr)) {
    const int mr = static_cast<int>(std::min<int64_t>(static_cast<int64_t>(MaxMr), m1 - m));
    table[static_cast<size_t>(mr - 1)][static_cast<size_t>(nb - 1)](job, m, b0);
  }
}

}  // namespace

void MatmulTaskAvx512F32(const MatmulJob& job, int64_t m0, int64_t m1, int64_t b0, int64_t b1) {
  RunTiles(kF32Tiles, job, m0, m1, b0, b1);
}

void MatmulTaskAvx512Bf16Dot(const MatmulJob& job, int64_t m0, int64_t m1, int64_t b0, int64_t b1) {
  RunTiles(kDotTiles, job, m0, m1, b0, b1);
}

}  // namespace moerun::internal
