// AVX2 (+FMA) kernel of AccumulateFixed, for CPUs without AVX-512. Compiled with -mavx2 -mfma;
// called only when FixedPathSupported(FixedPath::kAvx2).
//
// The same exact split as the AVX-512 kernel (core/fixed_point_avx512.cc), in double precision
// because AVX2 has no float -> int64 conversion: for v = fl(w * y) with |v| < 2^16,
//   a = trunc(v * 2^32), b = trunc((v - a * 2^-32) * 2^80), ToFixed(v) = a * 2^48 + b,
// every step exact in double (v has 24 significant bits). The integers |a|, |b| < 2^48 are read
// out of doubles by adding 1.5 * 2^52 (exact for integers below 2^51) and taking the bits; the
// per-lane uint64 sums carry n * bits(1.5 * 2^52), subtracted (mod 2^64) at the flush.
// Other terms send their 8 columns of the batch to the scalar path.
#include <immintrin.h>

#include <algorithm>
#include <bit>

#include "core/fixed_point.h"

namespace moerun::internal {

void AccumulateFixedAvx2(Fixed128* dst, int64_t n, const FixedTermRow* rows, int64_t n_rows,
                         FixedLimbs limbs) {
  constexpr int64_t kBatch = int64_t{1} << 14;
  constexpr int64_t kPrefetchFloats = 256;
  constexpr double kMagic = 0x1.8p52;
  const uint64_t magic_bits = std::bit_cast<uint64_t>(kMagic);
  const __m256d two32 = _mm256_set1_pd(0x1p32), two_m32 = _mm256_set1_pd(0x1p-32);
  const __m256d two80 = _mm256_set1_pd(0x1p80), magic = _mm256_set1_pd(kMagic);
  const __m256 limit = _mm256_set1_ps(0x1p16f);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    for (int64_t r0 = 0; r0 < n_rows; r0 += kBatch) {
      const int64_t r1 = std::min(n_rows, r0 + kBatch);
      __m256i hi0 = _mm256_setzero_si256(), hi1 = _mm256_setzero_si256();
      __m256i lo0 = _mm256_setzero_si256(), lo1 = _mm256_setzero_si256();
      __m256 ok = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
      for (int64_t r = r0; r < r1; ++r) {
        const uintptr_t ahead = reinterpret_cast<uintptr_t>(rows[r].y + c) + kPrefetchFloats * sizeof(float);
        _mm_prefetch(reinterpret_cast<const char*>(ahead), _MM_HINT_T0);
        const __m256 v = _mm256_mul_ps(_mm256_set1_ps(rows[r].weight), _mm256_loadu_ps(rows[r].y + c));
        ok = _mm256_and_ps(ok, _mm256_cmp_ps(_mm256_and_ps(v, abs_mask), limit, _CMP_LT_OQ));
        for (int half = 0; half < 2; ++half) {
          const __m256d d =
              _mm256_cvtps_pd(half == 0 ? _mm256_castps256_ps128(v) : _mm256_extractf128_ps(v, 1));
          const __m256d a = _mm256_round_pd(_mm256_mul_pd(d, two32), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
          const __m256d b = _mm256_round_pd(_mm256_mul_pd(_mm256_fnmadd_pd(a, two_m32, d), two80),
                                            _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
          const __m256i ai = _mm256_castpd_si256(_mm256_add_pd(a, magic));
          const __m256i bi = _mm256_castpd_si256(_mm256_add_pd(b, magic));
          if (half == 0) {
            hi0 = _mm256_add_epi64(hi0, ai);
            lo0 = _mm256_add_epi64(lo0, bi);
          } else {
            hi1 = _mm256_add_epi64(hi1, ai);
            lo1 = _mm256_add_epi64(lo1, bi);
          }
        }
      }
      if (_mm256_movemask_ps(ok) != 0xff) {
        AccumulateFixedScalar(dst, c, c + 8, rows + r0, r1 - r0);
        continue;
      }
      alignas(32) uint64_t hi[8], lo[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(hi), hi0);
      _mm256_store_si256(reinterpret_cast<__m256i*>(hi + 4), hi1);
      _mm256_store_si256(reinterpret_cast<__m256i*>(lo), lo0);
      _mm256_store_si256(reinterpret_cast<__m256i*>(lo + 4), lo1);
      const uint64_t bias = static_cast<uint64_t>(r1 - r0) * magic_bits;  // mod 2^64
      if (limbs.hi != nullptr) {  // into the caller's limbs: normalised at its flush
        const __m256i b = _mm256_set1_epi64x(static_cast<int64_t>(bias));
        const __m256i sums[4] = {hi0, hi1, lo0, lo1};
        int64_t* dsts[4] = {limbs.hi + c, limbs.hi + c + 4, limbs.lo + c, limbs.lo + c + 4};
        for (int i = 0; i < 4; ++i) {
          auto* p = reinterpret_cast<__m256i*>(dsts[i]);
          _mm256_storeu_si256(p, _mm256_add_epi64(_mm256_loadu_si256(p), _mm256_sub_epi64(sums[i], b)));
        }
        continue;
      }
      for (int i = 0; i < 8; ++i) {
        const auto h = static_cast<int64_t>(hi[i] - bias), l = static_cast<int64_t>(lo[i] - bias);
        dst[c + i] += FromLimbs(h, l);
      }
    }
  }
  if (c < n) AccumulateFixedScalar(dst, c, n, rows, n_rows);
}

}  // namespace moerun::internal
