// x86 SIMD body of the quantised dot tiles (kernels/quant_dot.h), shared by quant_dot_avx2.cc
// (MOERUN_QUANT_DOT_VNNI 0: vpmaddubsw + vpmaddwd on ymm) and quant_dot_avx512.cc
// (MOERUN_QUANT_DOT_VNNI 1: vpdpbusd on zmm). Include from exactly those two files: everything here
// has internal linkage, so each gets its own copy compiled for its ISA.
//
// Every block format (Q8_0 / Q4_0 / Q5_0 / Q5_1 / Q4_K / Q5_K / Q6_K) is packed interleaved
// (kernels/block_interleave.h) and runs the kernels of quant_dot_interleaved_x86.h: one 32-bit lane per
// weight row and the f32 operations of the scalar reference, so they give the reference's bits on every ISA.
#pragma once

// g++ 12 flags the _mm512_undefined_* temporaries inside its own intrinsic headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/quant_dot.h"
#include "kernels/quant_dot_interleaved_x86.h"
#include "kernels/quant_dot_x86_common.h"

namespace moerun {
namespace {

// ---- Activation quantisation (the scalar QuantizeActivationRow's operations, 8 lanes at a time) ----

inline void QuantizeActivationRowX86(const float* x, int64_t k, int8_t* q, float* d, int32_t* sum) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256i lim = _mm256_set1_epi32(127), neg = _mm256_set1_epi32(-127);
  for (int64_t b = 0; b * 32 < k; ++b) {
    const int64_t e0 = b * 32;
    alignas(32) float pad[32];
    const float* src = x + e0;
    if (k - e0 < 32) {  // the last, short block: zero padding
      std::fill(pad, pad + 32, 0.0f);
      std::copy(x + e0, x + k, pad);
      src = pad;
    }
    __m256 v[4];
    for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(src + 8 * i);
    __m256 mx = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v[0], abs_mask), _mm256_and_ps(v[1], abs_mask)),
                              _mm256_max_ps(_mm256_and_ps(v[2], abs_mask), _mm256_and_ps(v[3], abs_mask)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    d[b] = amax / 127.0f;
    __m256i r[4];
    for (int i = 0; i < 4; ++i) {
      const __m256 t = _mm256_round_ps(_mm256_mul_ps(v[i], _mm256_set1_ps(id)),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      r[i] = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(t), lim), neg);
    }
    const __m256i s32 = _mm256_add_epi32(_mm256_add_epi32(r[0], r[1]), _mm256_add_epi32(r[2], r[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    sum[b] = _mm_cvtsi128_si32(s4);
    // packs work per 128-bit lane: [r0 lo, r1 lo, r0 hi, r1 hi] -> bytes, then restore the order.
    const __m256i p16a = _mm256_packs_epi32(r[0], r[1]), p16b = _mm256_packs_epi32(r[2], r[3]);
    const __m256i p8 = _mm256_packs_epi16(p16a, p16b);
    const __m256i ordered = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + e0), ordered);
  }
}

template <bool kSwPrefetch>
void QuantDotTileX86(DType format, const uint8_t* w, size_t /*w_row_bytes*/, int n_rows,
                     const Q8Activations& a, int64_t m0, int64_t m1, int64_t kb0, int64_t kb1, float* out) {
  switch (format) {
    case DType::kQ8_0:
      return TileInterleaved<DType::kQ8_0, kSwPrefetch>(w, n_rows, a, m0, m1, kb0, kb1, out);
    case DType::kQ4_0:
      return TileInterleaved<DType::kQ4_0, kSwPrefetch>(w, n_rows, a, m0, m1, kb0, kb1, out);
    case DType::kQ5_0:
      return TileInterleaved<DType::kQ5_0, kSwPrefetch>(w, n_rows, a, m0, m1, kb0, kb1, out);
    case DType::kQ5_1:
      return TileInterleaved<DType::kQ5_1, kSwPrefetch>(w, n_rows, a, m0, m1, kb0, kb1, out);
    case DType::kQ4_K:
      return TileInterleaved<DType::kQ4_K, kSwPrefetch>(w, n_rows, a, m0, m1, kb0, kb1, out);
    case DType::kQ5_K:
      return TileInterleaved<DType::kQ5_K, kSwPrefetch>(w, n_rows, a, m0, m1, kb0, kb1, out);
    case DType::kQ6_K:
      return TileInterleaved<DType::kQ6_K, kSwPrefetch>(w, n_rows, a, m0, m1, kb0, kb1, out);
    default:
      return;
  }
}

template <DType kT, bool kSwPrefetch>
void StreamsOf(const QuantDotStream* streams, int n, int64_t kb0, int64_t kb1) {
  switch (n) {
    case 4:
      return StreamColumns<kT, kSwPrefetch, 4>(streams, kb0, kb1);
    case 3:
      return StreamColumns<kT, kSwPrefetch, 3>(streams, kb0, kb1);
    case 2:
      return StreamColumns<kT, kSwPrefetch, 2>(streams, kb0, kb1);
    default:
      return StreamColumns<kT, kSwPrefetch, 1>(streams, kb0, kb1);
  }
}

template <bool kSwPrefetch>
void QuantDotStreamsX86(DType format, const QuantDotStream* streams, int n, int64_t kb0, int64_t kb1) {
  switch (format) {
    case DType::kQ8_0:
      return StreamsOf<DType::kQ8_0, kSwPrefetch>(streams, n, kb0, kb1);
    case DType::kQ4_0:
      return StreamsOf<DType::kQ4_0, kSwPrefetch>(streams, n, kb0, kb1);
    case DType::kQ5_0:
      return StreamsOf<DType::kQ5_0, kSwPrefetch>(streams, n, kb0, kb1);
    case DType::kQ5_1:
      return StreamsOf<DType::kQ5_1, kSwPrefetch>(streams, n, kb0, kb1);
    default:  // the K formats: one stream at a time (see kernel_table.cc's StreamsOf)
      for (int i = 0; i < n; ++i) {
        const QuantDotStream& s = streams[i];
        QuantDotTileX86<kSwPrefetch>(format, s.w, 0, s.n_rows, *s.a, s.m, s.m + 1, kb0, kb1, s.out);
      }
  }
}

}  // namespace
}  // namespace moerun

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
