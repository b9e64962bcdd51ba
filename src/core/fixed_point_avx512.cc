// AVX-512 (F, DQ) kernel of AccumulateFixed. Compiled with -mavx512f -mavx512dq -mavx512vl; called
// only when FixedPathSupported(FixedPath::kAvx512).
//
// Each term v = fl(w * y) with |v| < 2^16 is split exactly into two integers:
//   a = trunc(v * 2^32)                   |a| < 2^48, a unit of 2^48 in the 2^-80 fixed point
//   b = trunc((v - a * 2^-32) * 2^80)     |b| < 2^48, same sign as a (or zero)
// so ToFixed(v) = a * 2^48 + b exactly (both parts truncate toward zero with the sign of v, and
// a * 2^48 is an integer). v - a * 2^-32 is exact (the low bits of v's mantissa; a fused
// multiply-add leaves it unrounded), and so is every scaling by a power of two: v * 2^32 >= 2^-94
// for normal v; subnormal v (and any subnormal remainder) are below 2^-126 and truncate to 0 in the
// fixed point whether or not the CPU flushes them. The per-lane sums of a and b stay in int64 for
// up to 2^14 terms (|sum| < 2^62) and are normalised into the 128-bit accumulator once per batch.
// Terms outside the fast range (|v| >= 2^16, inf, NaN) send their 16 columns of the batch to the
// scalar path, which computes the same integers.
// GCC 12's own intrinsics headers trip -Wmaybe-uninitialized (_mm512_undefined_ps) when inlined.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>

#include "core/fixed_point.h"

namespace moerun::internal {

void AccumulateFixedAvx512(Fixed128* dst, int64_t n, const FixedTermRow* rows, int64_t n_rows,
                           FixedLimbs limbs) {
  constexpr int64_t kBatch = int64_t{1} << 14;
  constexpr int64_t kPrefetchFloats = 256;  // 1 KiB ahead in every term row
  const __m512 two32 = _mm512_set1_ps(0x1p32f), two_m32 = _mm512_set1_ps(0x1p-32f);
  const __m512 two80 = _mm512_set1_ps(0x1p80f), limit = _mm512_set1_ps(0x1p16f);
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    for (int64_t r0 = 0; r0 < n_rows; r0 += kBatch) {
      const int64_t r1 = std::min(n_rows, r0 + kBatch);
      __m512i hi0 = _mm512_setzero_si512(), hi1 = _mm512_setzero_si512();
      __m512i lo0 = _mm512_setzero_si512(), lo1 = _mm512_setzero_si512();
      __mmask16 ok = 0xffff;
      for (int64_t r = r0; r < r1; ++r) {
        // Each term row is its own stream, more than the hardware prefetchers follow at once.
        // (An integer address: it may lie past the row's end, which a prefetch tolerates.)
        const uintptr_t ahead = reinterpret_cast<uintptr_t>(rows[r].y + c) + kPrefetchFloats * sizeof(float);
        _mm_prefetch(reinterpret_cast<const char*>(ahead), _MM_HINT_T0);
        const __m512 v = _mm512_mul_ps(_mm512_set1_ps(rows[r].weight), _mm512_loadu_ps(rows[r].y + c));
        ok = static_cast<__mmask16>(ok & _mm512_cmp_ps_mask(_mm512_abs_ps(v), limit, _CMP_LT_OQ));
        const __m512 a =
            _mm512_roundscale_ps(_mm512_mul_ps(v, two32), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        const __m512 b = _mm512_mul_ps(_mm512_fnmadd_ps(a, two_m32, v), two80);
        hi0 = _mm512_add_epi64(hi0, _mm512_cvttps_epi64(_mm512_castps512_ps256(a)));
        hi1 = _mm512_add_epi64(hi1, _mm512_cvttps_epi64(_mm512_extractf32x8_ps(a, 1)));
        lo0 = _mm512_add_epi64(lo0, _mm512_cvttps_epi64(_mm512_castps512_ps256(b)));
        lo1 = _mm512_add_epi64(lo1, _mm512_cvttps_epi64(_mm512_extractf32x8_ps(b, 1)));
      }
      if (ok != 0xffff) {
        AccumulateFixedScalar(dst, c, c + 16, rows + r0, r1 - r0);
        continue;
      }
      if (limbs.hi != nullptr) {  // into the caller's limbs: normalised at its flush
        _mm512_storeu_si512(limbs.hi + c, _mm512_add_epi64(_mm512_loadu_si512(limbs.hi + c), hi0));
        _mm512_storeu_si512(limbs.hi + c + 8, _mm512_add_epi64(_mm512_loadu_si512(limbs.hi + c + 8), hi1));
        _mm512_storeu_si512(limbs.lo + c, _mm512_add_epi64(_mm512_loadu_si512(limbs.lo + c), lo0));
        _mm512_storeu_si512(limbs.lo + c + 8, _mm512_add_epi64(_mm512_loadu_si512(limbs.lo + c + 8), lo1));
        continue;
      }
      alignas(64) int64_t hi[16], lo[16];
      _mm512_store_si512(hi, hi0);
      _mm512_store_si512(hi + 8, hi1);
      _mm512_store_si512(lo, lo0);
      _mm512_store_si512(lo + 8, lo1);
      for (int i = 0; i < 16; ++i) dst[c + i] += FromLimbs(hi[i], lo[i]);
    }
  }
  if (c < n) AccumulateFixedScalar(dst, c, n, rows, n_rows);
}

}  // namespace moerun::internal
