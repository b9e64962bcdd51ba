// x86 SIMD body of the quantised dot tiles (kernels/quant_dot.h), shared by quant_dot_avx2.cc
// (MOERUN_QUANT_DOT_VNNI 0: vpmaddubsw + vpmaddwd) and quant_dot_avx512.cc (MOERUN_QUANT_DOT_VNNI 1:
// vpdpbusd / vpdpwssd on 256-bit registers, AVX-512 VL). Include from exactly those two files:
// everything here has internal linkage, so each gets its own copy compiled for its ISA.
//
// Q8_0 / Q4_0 / Q4_K are packed interleaved (kernels/block_interleave.h) and run the kernels of
// quant_dot_interleaved_x86.h: one 32-bit lane per weight row and the f32 operations of the scalar
// reference, so they give the reference's bits on every ISA.
//
// Q6_K (kRows layout: one weight row at a time, so a tile is read as one sequential stream; R
// activation rows share every unpacked weight block), AVX2 scheme:
//   * per 32-element block and activation row, the int8 dot is an 8 x int32 vector of partial sums
//     (lane l = elements 4l..4l+3), exact;
//   * consecutive blocks are folded by an exact hadd tree into one vector
//     [b0 lo, b1 lo, b2 lo, b3 lo | b0 hi, b1 hi, b2 hi, b3 hi] (lo/hi = elements 0-15 / 16-31);
//   * that vector is converted once and fma'd into an 8-lane f32 accumulator with the scale vector
//     [s0, s1, s2, s3, s0, s1, s2, s3] (s = weight scale * activation scale of each block);
//   * the accumulator is reduced horizontally once per output, in a fixed order.
// The AVX-512 row (further down) puts 2 blocks in one zmm per vpdpbusd instead.
// Every (activation row m, weight row j) output goes through the same operation sequence whatever
// m0, m1, n_rows and R are, so results are batch invariant (not bitwise equal to the scalar ref,
// which sums in another order; both agree with the exact sum to ~1e-6 relative).
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
#include <utility>

#include "kernels/quant_dot.h"
#include "kernels/quant_dot_interleaved_x86.h"
#include "kernels/quant_dot_x86_common.h"

namespace moerun {
namespace {

constexpr int kRowsPerPass = 4;  // activation rows sharing one unpacked weight block

inline __m256i MaddI16(__m256i x, __m256i y) {
#if MOERUN_QUANT_DOT_VNNI
  return _mm256_dpwssd_epi32(_mm256_setzero_si256(), x, y);
#else
  return _mm256_madd_epi16(x, y);
#endif
}

// Fixed-order horizontal sum.
inline float HSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256i LoadAct(const Q8Activations& a, int64_t m, int64_t kb) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + m * a.ldq + kb * 32));
}

// ---- Q6_K ----

template <int G>
inline __m256i HiBits(__m256i qh) {  // bits 2G, 2G+1 of each byte moved to bits 4, 5
  if constexpr (G == 0) return _mm256_slli_epi16(qh, 4);
  if constexpr (G == 1) return _mm256_slli_epi16(qh, 2);
  if constexpr (G == 2) return qh;
  if constexpr (G == 3) return _mm256_srli_epi16(qh, 2);
}

template <int R, int H, int G>
inline void BlockQ6K(const uint8_t* b, __m128i scales, const Q8Activations& a, int64_t m, int64_t kb,
                     __m256i (&p)[R]) {
  constexpr int i = 4 * H + G;
  const __m256i low4 = _mm256_set1_epi8(0x0F), bits45 = _mm256_set1_epi8(0x30);
  const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * H + 32 * (G & 1)));
  const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * H));
  const __m256i lo = _mm256_and_si256((G & 2) ? _mm256_srli_epi16(x, 4) : x, low4);
  const __m256i u = _mm256_or_si256(lo, _mm256_and_si256(HiBits<G>(qh), bits45));
  const __m128i pick = _mm_set_epi64x(0x0101010101010101LL * (2 * i + 1), 0x0101010101010101LL * (2 * i));
  const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, pick));
  const __m256i k32 = _mm256_set1_epi8(32);
  for (int r = 0; r < R; ++r) {
    const __m256i av = LoadAct(a, m + r, kb + i);
    // Pair sums of (q - 32) * a fit int16 (|.| <= 2 * 32 * 127), then times the int16 scale.
    p[r] = MaddI16(_mm256_sub_epi16(_mm256_maddubs_epi16(u, av), _mm256_maddubs_epi16(k32, av)), sc16);
  }
}

template <int R>
void RowQ6K(const uint8_t* row, const Q8Activations& a, int64_t m, int64_t kb0, int64_t kb1, float* out) {
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t sb = kb0 / 8; sb < kb1 / 8; ++sb) {
    const uint8_t* b = row + static_cast<size_t>(sb) * 210;
    Prefetch(b + kPrefetchAhead);
    Prefetch(b + kPrefetchAhead + 64);
    Prefetch(b + kPrefetchAhead + 128);
    Prefetch(b + kPrefetchAhead + 192);
    const __m128i scales = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192));
    const __m256 d = _mm256_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(LoadU16(b + 208)))));
    __m256 S[R];
    for (int r = 0; r < R; ++r) S[r] = _mm256_mul_ps(d, _mm256_loadu_ps(a.d + (m + r) * a.ldb + sb * 8));
    const int64_t kb = sb * 8;
    auto half = [&]<int H>(std::integral_constant<int, H>) {
      __m256i p0[R], p1[R], h0[R];
      BlockQ6K<R, H, 0>(b, scales, a, m, kb, p0);
      BlockQ6K<R, H, 1>(b, scales, a, m, kb, p1);
      for (int r = 0; r < R; ++r) h0[r] = _mm256_hadd_epi32(p0[r], p1[r]);
      BlockQ6K<R, H, 2>(b, scales, a, m, kb, p0);
      BlockQ6K<R, H, 3>(b, scales, a, m, kb, p1);
      for (int r = 0; r < R; ++r) {
        const __m256 s =
            H ? _mm256_permute2f128_ps(S[r], S[r], 0x11) : _mm256_permute2f128_ps(S[r], S[r], 0x00);
        const __m256i z = _mm256_hadd_epi32(h0[r], _mm256_hadd_epi32(p0[r], p1[r]));
        acc[r] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(z), acc[r]);
      }
    };
    half(std::integral_constant<int, 0>{});
    half(std::integral_constant<int, 1>{});
  }
  for (int r = 0; r < R; ++r) out[r * kQuantDotMaxRows] = HSum(acc[r]);
}

#if MOERUN_QUANT_DOT_VNNI
// ---- AVX-512 (zmm) rows: 16-lane f32 accumulators, one vpdpbusd per pair of blocks. Lanes 0-7
// hold the partial sums (4 elements each) of the first block of a pair, lanes 8-15 of the second;
// each pair is converted once and fma'd with [s_first x 8, s_second x 8]. Pairs alternate between
// two accumulators (two fma chains, so one activation row is not fma-latency bound), added at the end.
// ----

inline float HSum512(__m512 v) {
  return HSum(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
}

// Lane selectors: pair q of a 4- or 8-lane scale vector.
inline __m512i PairIdx(int q) {
  return _mm512_set_epi32(2 * q + 1, 2 * q + 1, 2 * q + 1, 2 * q + 1, 2 * q + 1, 2 * q + 1, 2 * q + 1,
                          2 * q + 1, 2 * q, 2 * q, 2 * q, 2 * q, 2 * q, 2 * q, 2 * q, 2 * q);
}

// Activation bytes of blocks kb, kb + 1 (n = 1: the second is zero).
inline __m512i LoadAct2(const Q8Activations& a, int64_t m, int64_t kb, int n) {
  const int8_t* p = a.q + m * a.ldq + kb * 32;
  if (n >= 2) return _mm512_loadu_si512(p);
  return _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

template <int R>
void RowQ6K512(const uint8_t* row, const Q8Activations& a, int64_t m, int64_t kb0, int64_t kb1, float* out) {
  __m512 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  const __m512i low4 = _mm512_set1_epi8(0x0F), bits45 = _mm512_set1_epi8(0x30), k32 = _mm512_set1_epi8(32);
  // Per 16-bit lane shifts moving qh bits (2g, 2g+1) to bits 4, 5: g = 0 | 1 (left 4 | 2), g = 2 | 3 (right 0
  // | 2).
  const __m512i shl01 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
  const __m512i shr23 = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);
  for (int64_t sb = kb0 / 8; sb < kb1 / 8; ++sb) {
    const uint8_t* b = row + static_cast<size_t>(sb) * 210;
    Prefetch(b + kPrefetchAhead);
    Prefetch(b + kPrefetchAhead + 64);
    Prefetch(b + kPrefetchAhead + 128);
    Prefetch(b + kPrefetchAhead + 192);
    // 16 int8 scales as int16, in a zmm: element e of block pair q uses scale 2(2q + e/32) + (e%32)/16.
    const __m512i sc16 = _mm512_castsi256_si512(
        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192))));
    const __m512 d = _mm512_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(LoadU16(b + 208)))));
    __m512 S[R];
    for (int r = 0; r < R; ++r) {
      S[r] = _mm512_mul_ps(d, _mm512_castps256_ps512(_mm256_loadu_ps(a.d + (m + r) * a.ldb + sb * 8)));
    }
    for (int h = 0; h < 2; ++h) {
      const __m512i ql = _mm512_loadu_si512(b + 64 * h);
      const __m512i qh =
          _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * h)));
      for (int gp = 0; gp < 2; ++gp) {  // blocks 4h + 2gp, 4h + 2gp + 1
        const int q = 2 * h + gp;
        const __m512i lo = _mm512_and_si512(gp ? _mm512_srli_epi16(ql, 4) : ql, low4);
        const __m512i hi =
            _mm512_and_si512(gp ? _mm512_srlv_epi16(qh, shr23) : _mm512_sllv_epi16(qh, shl01), bits45);
        const __m512i u = _mm512_or_si512(lo, hi);
        // int16 lane l (elements 2l, 2l+1) of this pair: scale index 4q + l / 8.
        const __m512i sidx = _mm512_add_epi16(
            _mm512_set1_epi16(static_cast<int16_t>(4 * q)),
            _mm512_srli_epi16(_mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16,
                                               15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                              3));
        const __m512i scq = _mm512_permutexvar_epi16(sidx, sc16);
        for (int r = 0; r < R; ++r) {
          const __m512i av = LoadAct2(a, m + r, sb * 8 + 2 * q, 2);
          const __m512i dq = _mm512_sub_epi16(_mm512_maddubs_epi16(u, av), _mm512_maddubs_epi16(k32, av));
          const __m512i I = _mm512_madd_epi16(dq, scq);
          acc[r][gp] =
              _mm512_fmadd_ps(_mm512_permutexvar_ps(PairIdx(q), S[r]), _mm512_cvtepi32_ps(I), acc[r][gp]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r) out[r * kQuantDotMaxRows] = HSum512(_mm512_add_ps(acc[r][0], acc[r][1]));
}
#endif

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

template <int R>
inline void RunRow(DType format, const uint8_t* row, const Q8Activations& a, int64_t m, int64_t kb0,
                   int64_t kb1, float* out) {
  switch (format) {
#if MOERUN_QUANT_DOT_VNNI
    case DType::kQ6_K:
      RowQ6K512<R>(row, a, m, kb0, kb1, out);
      break;
#else
    case DType::kQ6_K:
      RowQ6K<R>(row, a, m, kb0, kb1, out);
      break;
#endif
    default:
      break;
  }
}

void QuantDotTileX86(DType format, const uint8_t* w, size_t w_row_bytes, int n_rows, const Q8Activations& a,
                     int64_t m0, int64_t m1, int64_t kb0, int64_t kb1, float* out) {
  if (format == DType::kQ8_0) return TileInterleaved<DType::kQ8_0>(w, n_rows, a, m0, m1, kb0, kb1, out);
  if (format == DType::kQ4_0) return TileInterleaved<DType::kQ4_0>(w, n_rows, a, m0, m1, kb0, kb1, out);
  if (format == DType::kQ4_K) return TileInterleaved<DType::kQ4_K>(w, n_rows, a, m0, m1, kb0, kb1, out);
  // Activation rows in chunks that stay in L1 (<= 24 KB of int8) while every weight row passes
  // over them; each weight row streams through once per chunk. Does not change any (m, j) result.
  const int64_t act_bytes = std::max<int64_t>(1, (kb1 - kb0) * 32);
  const int64_t chunk = std::clamp<int64_t>((24 << 10) / act_bytes / kRowsPerPass, 1, 4) * kRowsPerPass;
  for (int64_t c0 = m0; c0 < m1; c0 += chunk) {
    const int64_t c1 = std::min(m1, c0 + chunk);
    for (int j = 0; j < n_rows; ++j) {
      const uint8_t* row = w + static_cast<size_t>(j) * w_row_bytes;
      for (int64_t m = c0; m < c1;) {
        float* o = out + (m - m0) * kQuantDotMaxRows + j;
        const int64_t left = c1 - m;
        if (left >= kRowsPerPass) {
          RunRow<kRowsPerPass>(format, row, a, m, kb0, kb1, o);
          m += kRowsPerPass;
        } else if (left >= 2) {
          RunRow<2>(format, row, a, m, kb0, kb1, o);
          m += 2;
        } else {
          RunRow<1>(format, row, a, m, kb0, kb1, o);
          m += 1;
        }
      }
    }
  }
}

}  // namespace
}  // namespace moerun

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
