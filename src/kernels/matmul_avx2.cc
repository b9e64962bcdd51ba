// AVX2 + FMA + F16C matmul task body for the kLanes16 formats (compiled with -mavx2 -mfma -mf16c;
// called only when GetCpuFeatures().HasAvx2Kernels()). A 16-row block is two ymm halves; register
// tiles are MR activation rows x NB blocks (1 x 4 or 2 x 2: 8 ymm accumulators, which leaves room
// for the weights and broadcasts in 16 registers), the full K reduced per tile in k order
// (thread-count and batch invariant).
#include <immintrin.h>

#include <algorithm>

#include "kernels/matmul_impl.h"
#include "kernels/silu_x86.h"

namespace moerun::internal {
namespace {

// Stores 16 lanes (lo, hi) into row m, columns [col, col + 16) clipped to n columns.
inline void Store16(const MatmulJob& job, int64_t m, int64_t col, __m256 lo, __m256 hi, int64_t n) {
  const int64_t left = n - col;
  if (left <= 0) return;
  float* y = job.YAt(m, col);
  if (left >= 16) {
    _mm256_storeu_ps(y, lo);
    _mm256_storeu_ps(y + 8, hi);
    return;
  }
  alignas(32) float tmp[16];
  _mm256_store_ps(tmp, lo);
  _mm256_store_ps(tmp + 8, hi);
  std::copy(tmp, tmp + left, y);
}

template <int MR, int NB>
void Tile(const MatmulJob& job, int64_t m, int64_t b) {
  const PackedWeight& w = *job.w;
  __m256 acc[MR][NB][2];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NB; ++j) acc[i][j][0] = acc[i][j][1] = _mm256_setzero_ps();
  const float* x[MR];
  for (int i = 0; i < MR; ++i) x[i] = job.x.f32 + (m + i) * job.x.ld;
  const int64_t k_len = job.KEnd();
  if (w.format() == WeightFormat::kBF16) {
    const uint16_t* blk[NB];
    for (int j = 0; j < NB; ++j) blk[j] = w.u16_block(b + j);
    const __m256i hi_mask = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
    for (int64_t p = job.k_begin / 2; 2 * p < k_len; ++p) {
      const bool has_odd = 2 * p + 1 < k_len;
      __m256 xe[MR], xo[MR];
      for (int i = 0; i < MR; ++i) {
        xe[i] = _mm256_set1_ps(x[i][2 * p]);
        xo[i] = _mm256_set1_ps(has_odd ? x[i][2 * p + 1] : 0.0f);
      }
      PrefetchBf16Panels<MR, NB>(blk, p);
      for (int j = 0; j < NB; ++j) {
        for (int h = 0; h < 2; ++h) {
          const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(blk[j] + p * 32 + h * 16));
          const __m256 even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
          const __m256 odd = _mm256_castsi256_ps(_mm256_and_si256(v, hi_mask));
          for (int i = 0; i < MR; ++i) {
            acc[i][j][h] = _mm256_fmadd_ps(even, xe[i], acc[i][j][h]);
            acc[i][j][h] = _mm256_fmadd_ps(odd, xo[i], acc[i][j][h]);
          }
        }
      }
    }
  } else {
    const bool f16 = w.format() == WeightFormat::kF16;
    for (int64_t k = job.k_begin; k < k_len; ++k) {
      __m256 xk[MR];
      for (int i = 0; i < MR; ++i) xk[i] = _mm256_set1_ps(x[i][k]);
      for (int j = 0; j < NB; ++j) {
        __m256 v[2];
        if (f16) {
          const uint16_t* src = w.u16_block(b + j) + k * 16;
          v[0] = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(src)));
          v[1] = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(src + 8)));
        } else {
          const float* src = w.f32_block(b + j) + k * 16;
          v[0] = _mm256_load_ps(src);
          v[1] = _mm256_load_ps(src + 8);
        }
        for (int h = 0; h < 2; ++h)
          for (int i = 0; i < MR; ++i) acc[i][j][h] = _mm256_fmadd_ps(v[h], xk[i], acc[i][j][h]);
      }
    }
  }
  const int64_t n = w.out_features();
  for (int i = 0; i < MR; ++i) {
    if (job.epilogue == Epilogue::kStore) {
      for (int j = 0; j < NB; ++j) Store16(job, m + i, (b + j) * 16, acc[i][j][0], acc[i][j][1], n);
    } else {
      for (int j = 0; j + 1 < NB; j += 2) {
        Store16(job, m + i, ((b + j) / 2) * 16, _mm256_mul_ps(SiluV<F32x8>(acc[i][j][0]), acc[i][j + 1][0]),
                _mm256_mul_ps(SiluV<F32x8>(acc[i][j][1]), acc[i][j + 1][1]), n);
      }
    }
  }
}

// Blocks [b, b + nb) for rows [m, m + mr): nb even for SwiGLU (gate and up blocks side by side).
template <int MR>
void Blocks(const MatmulJob& job, int64_t m, int64_t b0, int64_t b1) {
  constexpr int kNb = MR == 1 ? 4 : 2;
  int64_t b = b0;
  for (; b + kNb <= b1; b += kNb) Tile<MR, kNb>(job, m, b);
  if (b1 - b >= 2) {
    Tile<MR, 2>(job, m, b);
    b += 2;
  }
  if (b < b1) Tile<MR, 1>(job, m, b);
}

}  // namespace

void MatmulTaskAvx2(const MatmulJob& job, int64_t m0, int64_t m1, int64_t b0, int64_t b1) {
  int64_t m = m0;
  for (; m + 2 <= m1; m += 2) Blocks<2>(job, m, b0, b1);
  if (m < m1) Blocks<1>(job, m, b0, b1);
}

}  // namespace moerun::internal
