// x86 SIMD body of the quantised dot tiles (kernels/quant_dot.h), shared by quant_dot_avx2.cc
// (MOERUN_QUANT_DOT_VNNI 0: vpmaddubsw + vpmaddwd) and quant_dot_avx512.cc (MOERUN_QUANT_DOT_VNNI 1:
// vpdpbusd / vpdpwssd on 256-bit registers, AVX-512 VL). Include from exactly those two files:
// everything here has internal linkage, so each gets its own copy compiled for its ISA.
//
// Scheme: weight rows are taken 8 at a time (lanes of a __m256 accumulator = weight rows); for
// each 32-element block every row's weight bytes are unpacked once into 32 unsigned bytes and
// multiplied with kRowsPerPass activation rows. Each product vector holds 8 int32 partial sums of
// one (row, block); a hadd tree turns the 8 rows' vectors into one vector of exact int32 block sums,
// which then enter the f32 formulas of quant_dot.h lane-wise (same fma sequence as the reference).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/quant_dot.h"

#ifndef MOERUN_QUANT_DOT_VNNI
#error "define MOERUN_QUANT_DOT_VNNI before including quant_dot_x86_impl.h"
#endif

namespace moerun {
namespace {

constexpr int kGroup = 8;  // weight rows per accumulator vector
#if MOERUN_QUANT_DOT_VNNI
constexpr int kRowsPerPass = 4;  // activation rows sharing one unpacked weight block (32 registers)
#else
constexpr int kRowsPerPass = 2;  // 16 ymm registers
#endif

// Sum over groups of 4 bytes of u (unsigned) * a (signed), as 8 int32 lanes. REQUIRES for the
// AVX2 form: every adjacent pair u0*a0 + u1*a1 fits int16 (true for u <= 128 and |a| <= 127).
inline __m256i DotU8S8(__m256i u, __m256i a) {
#if MOERUN_QUANT_DOT_VNNI
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, a);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), _mm256_set1_epi16(1));
#endif
}

// Pairwise int16 products summed to int32 (vpmaddwd / vpdpwssd).
inline __m256i MaddI16(__m256i x, __m256i y) {
#if MOERUN_QUANT_DOT_VNNI
  return _mm256_dpwssd_epi32(_mm256_setzero_si256(), x, y);
#else
  return _mm256_madd_epi16(x, y);
#endif
}

// Finishes the hadd tree: q0 holds (per 128-bit half) partials of rows 0..3, q1 of rows 4..7.
inline __m256i FinishReduce(__m256i q0, __m256i q1) {
  return _mm256_add_epi32(_mm256_permute2x128_si256(q0, q1, 0x20), _mm256_permute2x128_si256(q0, q1, 0x31));
}

// 8 f16 values at rows[j] + off as f32 lanes.
inline __m256 GatherF16(const uint8_t* const* rows, size_t off) {
  alignas(16) uint16_t h[kGroup];
  for (int j = 0; j < kGroup; ++j) std::memcpy(&h[j], rows[j] + off, 2);
  return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(h)));
}

// Software prefetch of `bytes` bytes (whole lines) of every row at `off`: the 8 rows are 8
// interleaved streams, more than the hardware prefetchers follow well when weights are cold.
inline void PrefetchRows(const uint8_t* const* rows, size_t off, size_t bytes) {
  for (int j = 0; j < kGroup; ++j) {
    for (size_t b = 0; b < bytes; b += 64) _mm_prefetch(reinterpret_cast<const char*>(rows[j] + off + b), _MM_HINT_T0);
  }
}
constexpr size_t kPrefetchAhead = 1024;  // bytes ahead in each row

inline __m256i LoadAct(const Q8Activations& a, int64_t m, int64_t kb) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + m * a.ldq + kb * 32));
}

// Runs the 8-row x R-activation-row integer part of one block: unpack(j) gives row j's 32 weight
// bytes, dot(u, r) its 8 int32 partials against activation row r. Writes red[r] = block sums.
template <int R, typename Unpack, typename Dot>
inline void ReduceBlock(Unpack unpack, Dot dot, __m256i red[R]) {
  __m256i h[R][4];
  for (int jp = 0; jp < 4; ++jp) {
    const __m256i u0 = unpack(2 * jp), u1 = unpack(2 * jp + 1);
    for (int r = 0; r < R; ++r) h[r][jp] = _mm256_hadd_epi32(dot(u0, r), dot(u1, r));
  }
  for (int r = 0; r < R; ++r) {
    red[r] = FinishReduce(_mm256_hadd_epi32(h[r][0], h[r][1]), _mm256_hadd_epi32(h[r][2], h[r][3]));
  }
}

template <int R>
void GroupQ8_0(const uint8_t* const* rows, const Q8Activations& a, int64_t m, int64_t kb0, int64_t kb1,
               __m256 acc[R]) {
  for (int64_t kb = kb0; kb < kb1; ++kb) {
    const size_t off = static_cast<size_t>(kb) * 34;
    if ((kb & 1) == 0) PrefetchRows(rows, off + kPrefetchAhead, 64);
    __m256i act[R];
    for (int r = 0; r < R; ++r) act[r] = LoadAct(a, m + r, kb);
    auto unpack = [&](int j) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[j] + off + 2)); };
#if MOERUN_QUANT_DOT_VNNI
    // (w + 128) * a summed by vpdpbusd; 128 * A is taken off after the reduction.
    auto dot = [&](__m256i w, int r) {
      return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_xor_si256(w, _mm256_set1_epi8(-128)), act[r]);
    };
#else
    // |w| * (a with w's sign): exact for every int8 w, pair sums <= 2 * 128 * 127.
    auto dot = [&](__m256i w, int r) {
      return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(act[r], w)),
                               _mm256_set1_epi16(1));
    };
#endif
    __m256i red[R];
    ReduceBlock<R>(unpack, dot, red);
    const __m256 dw = GatherF16(rows, off);
    for (int r = 0; r < R; ++r) {
      __m256i I = red[r];
#if MOERUN_QUANT_DOT_VNNI
      I = _mm256_sub_epi32(I, _mm256_set1_epi32(a.sum[(m + r) * a.ldb + kb] * 128));
#endif
      const __m256 s = _mm256_mul_ps(dw, _mm256_set1_ps(a.d[(m + r) * a.ldb + kb]));
      acc[r] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(I), acc[r]);
    }
  }
}

template <int R>
void GroupQ4_0(const uint8_t* const* rows, const Q8Activations& a, int64_t m, int64_t kb0, int64_t kb1,
               __m256 acc[R]) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  for (int64_t kb = kb0; kb < kb1; ++kb) {
    const size_t off = static_cast<size_t>(kb) * 18;
    if ((kb & 3) == 0) PrefetchRows(rows, off + kPrefetchAhead, 64);
    __m256i act[R];
    for (int r = 0; r < R; ++r) act[r] = LoadAct(a, m + r, kb);
    auto unpack = [&](int j) {
      const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[j] + off + 2));
      return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(x, 4), x), low4);
    };
    auto dot = [&](__m256i u, int r) { return DotU8S8(u, act[r]); };
    __m256i red[R];
    ReduceBlock<R>(unpack, dot, red);
    const __m256 dw = GatherF16(rows, off);
    for (int r = 0; r < R; ++r) {
      const __m256i I = _mm256_sub_epi32(red[r], _mm256_set1_epi32(a.sum[(m + r) * a.ldb + kb] * 8));
      const __m256 s = _mm256_mul_ps(dw, _mm256_set1_ps(a.d[(m + r) * a.ldb + kb]));
      acc[r] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(I), acc[r]);
    }
  }
}

template <int R>
void GroupQ4_K(const uint8_t* const* rows, const Q8Activations& a, int64_t m, int64_t kb0, int64_t kb1,
               __m256 acc[R]) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  for (int64_t sb = kb0 / 8; sb < kb1 / 8; ++sb) {
    const size_t base = static_cast<size_t>(sb) * 144;
    PrefetchRows(rows, base + kPrefetchAhead, 128);
    // ws[s][j] = d * sc_s, wm[s][j] = dmin * m_s of row j.
    alignas(32) float ws[8][kGroup], wm[8][kGroup];
    for (int j = 0; j < kGroup; ++j) {
      const uint8_t* b = rows[j] + base;
      uint16_t hd, hm;
      std::memcpy(&hd, b, 2);
      std::memcpy(&hm, b + 2, 2);
      const float d = F16ToF32(hd), dmin = F16ToF32(hm);
      const uint8_t* q = b + 4;
      for (int s = 0; s < 8; ++s) {
        int sc, mn;
        if (s < 4) {
          sc = q[s] & 63;
          mn = q[s + 4] & 63;
        } else {
          sc = (q[s + 4] & 0xF) | ((q[s - 4] >> 6) << 4);
          mn = (q[s + 4] >> 4) | ((q[s] >> 6) << 4);
        }
        ws[s][j] = d * static_cast<float>(sc);
        wm[s][j] = dmin * static_cast<float>(mn);
      }
    }
    for (int s = 0; s < 8; ++s) {
      const int64_t kb = sb * 8 + s;
      const size_t qoff = base + 16 + 32 * static_cast<size_t>(s / 2);
      __m256i act[R];
      for (int r = 0; r < R; ++r) act[r] = LoadAct(a, m + r, kb);
      auto unpack = [&](int j) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[j] + qoff));
        return _mm256_and_si256((s & 1) ? _mm256_srli_epi16(x, 4) : x, low4);
      };
      auto dot = [&](__m256i u, int r) { return DotU8S8(u, act[r]); };
      __m256i red[R];
      ReduceBlock<R>(unpack, dot, red);
      const __m256 vws = _mm256_load_ps(ws[s]), vwm = _mm256_load_ps(wm[s]);
      for (int r = 0; r < R; ++r) {
        const float A = static_cast<float>(a.sum[(m + r) * a.ldb + kb]);
        const __m256 t = _mm256_mul_ps(vwm, _mm256_set1_ps(A));
        const __m256 inner = _mm256_fmsub_ps(vws, _mm256_cvtepi32_ps(red[r]), t);
        acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(a.d[(m + r) * a.ldb + kb]), inner, acc[r]);
      }
    }
  }
}

template <int R>
void GroupQ6_K(const uint8_t* const* rows, const Q8Activations& a, int64_t m, int64_t kb0, int64_t kb1,
               __m256 acc[R]) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), bits45 = _mm256_set1_epi8(0x30);
  const __m256i k32 = _mm256_set1_epi8(32);
  for (int64_t sb = kb0 / 8; sb < kb1 / 8; ++sb) {
    const size_t base = static_cast<size_t>(sb) * 210;
    PrefetchRows(rows, base + kPrefetchAhead, 192);
    const __m256 d = GatherF16(rows, base + 208);
    for (int i = 0; i < 8; ++i) {
      const int64_t kb = sb * 8 + i;
      const int h = i / 4, g = i % 4;
      const size_t ql_off = base + 64 * static_cast<size_t>(h) + 32 * static_cast<size_t>(g & 1);
      const size_t qh_off = base + 128 + 32 * static_cast<size_t>(h);
      // Bytes 2i (x8) then 2i+1 (x8): the two 16-element scales of this block, one per 128-bit half.
      const __m128i pick = _mm_set_epi64x(0x0101010101010101LL * (2 * i + 1), 0x0101010101010101LL * (2 * i));
      __m256i act[R], m32[R];
      for (int r = 0; r < R; ++r) {
        act[r] = LoadAct(a, m + r, kb);
        m32[r] = _mm256_maddubs_epi16(k32, act[r]);  // 32 * (a0 + a1) per int16 lane
      }
      __m256i sc16[kGroup];
      for (int j = 0; j < kGroup; ++j) {
        const __m128i s = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[j] + base + 192));
        sc16[j] = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(s, pick));
      }
      auto unpack = [&](int j) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[j] + ql_off));
        const __m256i lo = _mm256_and_si256((g & 2) ? _mm256_srli_epi16(x, 4) : x, low4);
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[j] + qh_off));
        __m256i hi;  // bits 2g, 2g+1 of qh moved to bits 4, 5
        switch (g) {
          case 0: hi = _mm256_slli_epi16(qh, 4); break;
          case 1: hi = _mm256_slli_epi16(qh, 2); break;
          case 2: hi = qh; break;
          default: hi = _mm256_srli_epi16(qh, 2); break;
        }
        return _mm256_or_si256(lo, _mm256_and_si256(hi, bits45));
      };
      // Pair sums of (q - 32) * a fit int16 (|.| <= 2 * 32 * 127), then times the int16 scale.
      int cur_j = 0;
      auto dot = [&](__m256i u, int r) {
        return MaddI16(_mm256_sub_epi16(_mm256_maddubs_epi16(u, act[r]), m32[r]), sc16[cur_j]);
      };
      // ReduceBlock calls unpack(2jp), unpack(2jp+1) then dot for both; track the row per call.
      __m256i h4[R][4];
      for (int jp = 0; jp < 4; ++jp) {
        const __m256i u0 = unpack(2 * jp), u1 = unpack(2 * jp + 1);
        for (int r = 0; r < R; ++r) {
          cur_j = 2 * jp;
          const __m256i p0 = dot(u0, r);
          cur_j = 2 * jp + 1;
          h4[r][jp] = _mm256_hadd_epi32(p0, dot(u1, r));
        }
      }
      for (int r = 0; r < R; ++r) {
        const __m256i I =
            FinishReduce(_mm256_hadd_epi32(h4[r][0], h4[r][1]), _mm256_hadd_epi32(h4[r][2], h4[r][3]));
        const __m256 s = _mm256_mul_ps(d, _mm256_set1_ps(a.d[(m + r) * a.ldb + kb]));
        acc[r] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(I), acc[r]);
      }
    }
  }
}

template <int R>
void RunGroup(DType format, const uint8_t* const* rows, int nj, const Q8Activations& a, int64_t m, int64_t kb0,
              int64_t kb1, float* out) {
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  switch (format) {
    case DType::kQ8_0: GroupQ8_0<R>(rows, a, m, kb0, kb1, acc); break;
    case DType::kQ4_0: GroupQ4_0<R>(rows, a, m, kb0, kb1, acc); break;
    case DType::kQ4_K: GroupQ4_K<R>(rows, a, m, kb0, kb1, acc); break;
    case DType::kQ6_K: GroupQ6_K<R>(rows, a, m, kb0, kb1, acc); break;
    default: return;
  }
  for (int r = 0; r < R; ++r) {
    alignas(32) float tmp[kGroup];
    _mm256_store_ps(tmp, acc[r]);
    std::memcpy(out + r * kQuantDotMaxRows, tmp, sizeof(float) * static_cast<size_t>(nj));
  }
}

void QuantDotTileX86(DType format, const uint8_t* w, size_t w_row_bytes, int n_rows, const Q8Activations& a,
                     int64_t m0, int64_t m1, int64_t kb0, int64_t kb1, float* out) {
  for (int j0 = 0; j0 < n_rows; j0 += kGroup) {
    const int nj = std::min(kGroup, n_rows - j0);
    // Lanes past n_rows repeat row j0 (valid memory); their results are dropped.
    const uint8_t* rows[kGroup];
    for (int j = 0; j < kGroup; ++j) rows[j] = w + static_cast<size_t>(j0 + (j < nj ? j : 0)) * w_row_bytes;
    for (int64_t m = m0; m < m1;) {
      float* o = out + (m - m0) * kQuantDotMaxRows + j0;
      const int64_t left = m1 - m;
      if (left >= kRowsPerPass) {
        RunGroup<kRowsPerPass>(format, rows, nj, a, m, kb0, kb1, o);
        m += kRowsPerPass;
      } else if (left >= 2) {
        RunGroup<2>(format, rows, nj, a, m, kb0, kb1, o);
        m += 2;
      } else {
        RunGroup<1>(format, rows, nj, a, m, kb0, kb1, o);
        m += 1;
      }
    }
  }
}

}  // namespace
}  // namespace moerun
