// Interleaved Q8_0 / Q4_0 / Q4_K tile kernels (kernels/block_interleave.h), used by
// quant_dot_x86_impl.h and compiled once per ISA (MOERUN_QUANT_DOT_VNNI 0: AVX2, 1: AVX-512 VNNI
// on zmm); internal linkage, include only from the quant_dot ISA translation units.
//
// Each 64-byte word of the 16 rows meets the 4 activation bytes of its elements broadcast, so every
// lane accumulates its own row's exact int32 block sum; then the scalar reference's f32 operations
// per (row, block) in block order. Activation rows go R at a time (AVX-512: up to 8, AVX2: 4),
// sharing each unpacked weight column.
// Thread safety: pure functions.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"
#include "kernels/quant_dot.h"
#include "kernels/quant_dot_x86_common.h"

namespace moerun {
namespace {

// Each 64-byte quant group of the 16 rows meets the 4 activation bytes of its elements broadcast,
// so every lane accumulates its own row's exact int32 block sum I (starting from the block-sum
// correction -8 A or -128 A); then out += (dw * da) * float(I) with one fma per (row, block), in
// block order: the same f32 operations as the scalar reference (quant_dot.cc), so every ISA gives
// the reference's bits, whatever the tile shape.

inline int32_t ActGroup(const Q8Activations& a, int64_t m, int64_t kb, int g) {
  int32_t v;
  std::memcpy(&v, a.q + m * a.ldq + kb * 32 + 4 * g, 4);
  return v;
}

#if MOERUN_QUANT_DOT_VNNI
template <int R, bool kQ8>
void ColumnsInterleaved(const uint8_t* w, const Q8Activations& a, int64_t m, int64_t kb0, int64_t kb1,
                        int n_rows, float* out) {
  constexpr size_t kCB = kQ8 ? 544 : 288;
  constexpr int32_t kOffset = kQ8 ? 128 : 8;
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t kb = kb0; kb < kb1; ++kb) {
    const uint8_t* c = w + static_cast<size_t>(kb) * kCB;
    for (size_t off = 0; off < kCB; off += 64) Prefetch(c + kPrefetchAhead + off);
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c)));
    __m512i u[8];
    for (int g = 0; g < (kQ8 ? 8 : 4); ++g) {
      const __m512i x = _mm512_loadu_si512(c + 32 + 64 * g);
      if constexpr (kQ8) {
        u[g] = _mm512_xor_si512(x, _mm512_set1_epi8(-128));  // w + 128
      } else {
        u[g] = _mm512_and_si512(x, _mm512_set1_epi8(0x0F));                            // elements 4g..
        u[4 + g] = _mm512_and_si512(_mm512_srli_epi16(x, 4), _mm512_set1_epi8(0x0F));  // 16 + 4g..
      }
    }
    for (int r = 0; r < R; ++r) {
      __m512i I = _mm512_set1_epi32(-kOffset * a.sum[(m + r) * a.ldb + kb]);
      for (int g = 0; g < 8; ++g)
        I = _mm512_dpbusd_epi32(I, u[g], _mm512_set1_epi32(ActGroup(a, m + r, kb, g)));
      const __m512 s = _mm512_mul_ps(dw, _mm512_set1_ps(a.d[(m + r) * a.ldb + kb]));
      acc[r] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(I), acc[r]);
    }
  }
  const __mmask16 valid = static_cast<__mmask16>((1u << n_rows) - 1);
  for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(out + r * kQuantDotMaxRows, valid, acc[r]);
}

// Q4_K interleaved (2304-byte columns: d, dmin, 3 scale words, 32 qs words; block_interleave.h).
// Lane j: row j's 6-bit scale and min of sub-block s, the exact int32 sum I of the sub-block, then
// the reference's ops: inner = fma(d*sc, I, -(dmin*m * A)); acc = fma(da, inner, acc).
struct Q4KScales512 {
  __m512i sc_lo, sc_hi, m_lo, m_hi;  // bytes s (s < 4) / s - 4 of each lane: 6-bit values
  explicit Q4KScales512(const uint8_t* c) {
    const __m512i u0 = _mm512_loadu_si512(c + 64), u1 = _mm512_loadu_si512(c + 128),
                  u2 = _mm512_loadu_si512(c + 192);
    const __m512i k1 = _mm512_set1_epi32(0x3f3f3f3f), k2 = _mm512_set1_epi32(0x0f0f0f0f),
                  k3 = _mm512_set1_epi32(0x03030303);
    sc_lo = _mm512_and_si512(u0, k1);
    m_lo = _mm512_and_si512(u1, k1);
    sc_hi = _mm512_or_si512(_mm512_and_si512(u2, k2),
                            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u0, 6), k3), 4));
    m_hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u2, 4), k2),
                           _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u1, 6), k3), 4));
  }
  static __m512 Byte(__m512i v, int b) {
    return _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(v, 8 * b), _mm512_set1_epi32(0xFF)));
  }
  __m512 Sc(int s) const { return s < 4 ? Byte(sc_lo, s) : Byte(sc_hi, s - 4); }
  __m512 Min(int s) const { return s < 4 ? Byte(m_lo, s) : Byte(m_hi, s - 4); }
};

template <int R>
void ColumnsQ4K(const uint8_t* w, const Q8Activations& a, int64_t m, int64_t kb0, int64_t kb1, int n_rows,
                float* out) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t sb = kb0 / 8; sb < kb1 / 8; ++sb) {
    const uint8_t* c = w + static_cast<size_t>(sb) * 2304;
    for (size_t off = 0; off < 2304; off += 64) Prefetch(c + 2 * kPrefetchAhead + off);
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c)));
    const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 32)));
    const Q4KScales512 scales(c);
    for (int t = 0; t < 4; ++t) {  // sub-blocks 2t (low nibbles) and 2t + 1 (high nibbles)
      __m512i x[8];
      for (int g = 0; g < 8; ++g) x[g] = _mm512_loadu_si512(c + 256 + 64 * (8 * t + g));
      for (int half = 0; half < 2; ++half) {
        const int s = 2 * t + half;
        const int64_t kb = sb * 8 + s;
        const __m512 ws = _mm512_mul_ps(d, scales.Sc(s)), wm = _mm512_mul_ps(dmin, scales.Min(s));
        __m512i u[8];
        for (int g = 0; g < 8; ++g) {
          u[g] = _mm512_and_si512(half ? _mm512_srli_epi16(x[g], 4) : x[g], _mm512_set1_epi8(0x0F));
        }
        for (int r = 0; r < R; ++r) {
          __m512i I = _mm512_setzero_si512();
          for (int g = 0; g < 8; ++g)
            I = _mm512_dpbusd_epi32(I, u[g], _mm512_set1_epi32(ActGroup(a, m + r, kb, g)));
          const __m512 t_min =
              _mm512_mul_ps(wm, _mm512_set1_ps(static_cast<float>(a.sum[(m + r) * a.ldb + kb])));
          const __m512 inner = _mm512_fmsub_ps(ws, _mm512_cvtepi32_ps(I), t_min);
          acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(a.d[(m + r) * a.ldb + kb]), inner, acc[r]);
        }
      }
    }
  }
  const __mmask16 valid = static_cast<__mmask16>((1u << n_rows) - 1);
  for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(out + r * kQuantDotMaxRows, valid, acc[r]);
}
constexpr int kInterleavedMaxR = 8;
#else
template <int R, bool kQ8>
void ColumnsInterleaved(const uint8_t* w, const Q8Activations& a, int64_t m, int64_t kb0, int64_t kb1,
                        int n_rows, float* out) {
  constexpr size_t kCB = kQ8 ? 544 : 288;
  constexpr int32_t kOffset = kQ8 ? 0 : 8;  // Q8_0 multiplies signed weights directly (sign trick)
  const __m256i ones = _mm256_set1_epi16(1);
  for (int h = 0; h < 2; ++h) {  // rows 8h .. 8h + 7: 32 bytes of each 64-byte group
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t kb = kb0; kb < kb1; ++kb) {
      const uint8_t* c = w + static_cast<size_t>(kb) * kCB;
      if (h == 0) {
        for (size_t off = 0; off < kCB; off += 64) Prefetch(c + kPrefetchAhead + off);
      }
      const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 16 * h)));
      __m256i u[8];
      for (int g = 0; g < (kQ8 ? 8 : 4); ++g) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 32 + 64 * g + 32 * h));
        if constexpr (kQ8) {
          u[g] = x;
        } else {
          u[g] = _mm256_and_si256(x, _mm256_set1_epi8(0x0F));
          u[4 + g] = _mm256_and_si256(_mm256_srli_epi16(x, 4), _mm256_set1_epi8(0x0F));
        }
      }
      for (int r = 0; r < R; ++r) {
        __m256i I;
        if constexpr (kQ8) {
          // |w| * (a with w's sign): pairs fit int16 (2 * 128 * 127), widened per group.
          I = _mm256_setzero_si256();
          for (int g = 0; g < 8; ++g) {
            const __m256i av = _mm256_set1_epi32(ActGroup(a, m + r, kb, g));
            I = _mm256_add_epi32(
                I, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(u[g]), _mm256_sign_epi8(av, u[g])),
                                     ones));
          }
        } else {
          // Nibble x int8 pair sums stay int16 over all 8 groups (8 x 2 x 15 x 127 < 2^15).
          __m256i s16 = _mm256_maddubs_epi16(u[0], _mm256_set1_epi32(ActGroup(a, m + r, kb, 0)));
          for (int g = 1; g < 8; ++g) {
            s16 = _mm256_add_epi16(s16,
                                   _mm256_maddubs_epi16(u[g], _mm256_set1_epi32(ActGroup(a, m + r, kb, g))));
          }
          I = _mm256_add_epi32(_mm256_madd_epi16(s16, ones),
                               _mm256_set1_epi32(-kOffset * a.sum[(m + r) * a.ldb + kb]));
        }
        const __m256 s = _mm256_mul_ps(dw, _mm256_set1_ps(a.d[(m + r) * a.ldb + kb]));
        acc[r] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(I), acc[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      alignas(32) float t[8];
      _mm256_store_ps(t, acc[r]);
      for (int j = 8 * h; j < std::min(n_rows, 8 * h + 8); ++j) out[r * kQuantDotMaxRows + j] = t[j - 8 * h];
    }
  }
}

// Q4_K interleaved, AVX2: rows 8h .. 8h + 7 per pass, same lane arithmetic as the AVX-512 body.
template <int R>
void ColumnsQ4K(const uint8_t* w, const Q8Activations& a, int64_t m, int64_t kb0, int64_t kb1, int n_rows,
                float* out) {
  const __m256i ones = _mm256_set1_epi16(1);
  for (int h = 0; h < 2; ++h) {
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t sb = kb0 / 8; sb < kb1 / 8; ++sb) {
      const uint8_t* c = w + static_cast<size_t>(sb) * 2304;
      if (h == 0) {
        for (size_t off = 0; off < 2304; off += 64) Prefetch(c + 2 * kPrefetchAhead + off);
      }
      const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 16 * h)));
      const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 32 + 16 * h)));
      auto word = [&](int wd) {
        return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 64 + 64 * wd + 32 * h));
      };
      const __m256i u0 = word(0), u1 = word(1), u2 = word(2);
      const __m256i k1 = _mm256_set1_epi32(0x3f3f3f3f), k2 = _mm256_set1_epi32(0x0f0f0f0f),
                    k3 = _mm256_set1_epi32(0x03030303);
      const __m256i sc_lo = _mm256_and_si256(u0, k1), m_lo = _mm256_and_si256(u1, k1);
      const __m256i sc_hi = _mm256_or_si256(
          _mm256_and_si256(u2, k2), _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u0, 6), k3), 4));
      const __m256i m_hi =
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(u2, 4), k2),
                          _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u1, 6), k3), 4));
      auto byte = [](__m256i v, int b) {
        return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(v, 8 * b), _mm256_set1_epi32(0xFF)));
      };
      for (int s = 0; s < 8; ++s) {
        const int64_t kb = sb * 8 + s;
        const int t = s / 2;
        const __m256 ws = _mm256_mul_ps(d, s < 4 ? byte(sc_lo, s) : byte(sc_hi, s - 4));
        const __m256 wm = _mm256_mul_ps(dmin, s < 4 ? byte(m_lo, s) : byte(m_hi, s - 4));
        __m256i u[8];
        for (int g = 0; g < 8; ++g) {
          const __m256i x = word(3 + 8 * t + g);
          u[g] = _mm256_and_si256((s & 1) ? _mm256_srli_epi16(x, 4) : x, _mm256_set1_epi8(0x0F));
        }
        for (int r = 0; r < R; ++r) {
          // Nibble x int8 pair sums stay int16 over the 8 words (8 x 2 x 15 x 127 < 2^15).
          __m256i s16 = _mm256_maddubs_epi16(u[0], _mm256_set1_epi32(ActGroup(a, m + r, kb, 0)));
          for (int g = 1; g < 8; ++g) {
            s16 = _mm256_add_epi16(s16,
                                   _mm256_maddubs_epi16(u[g], _mm256_set1_epi32(ActGroup(a, m + r, kb, g))));
          }
          const __m256i I = _mm256_madd_epi16(s16, ones);
          const __m256 t_min =
              _mm256_mul_ps(wm, _mm256_set1_ps(static_cast<float>(a.sum[(m + r) * a.ldb + kb])));
          const __m256 inner = _mm256_fmsub_ps(ws, _mm256_cvtepi32_ps(I), t_min);
          acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(a.d[(m + r) * a.ldb + kb]), inner, acc[r]);
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      alignas(32) float tmp[8];
      _mm256_store_ps(tmp, acc[r]);
      for (int j = 8 * h; j < std::min(n_rows, 8 * h + 8); ++j)
        out[r * kQuantDotMaxRows + j] = tmp[j - 8 * h];
    }
  }
}
constexpr int kInterleavedMaxR = 4;
#endif

template <int R, DType kT>
inline void Columns(const uint8_t* w, const Q8Activations& a, int64_t m, int64_t kb0, int64_t kb1, int n_rows,
                    float* out) {
  if constexpr (kT == DType::kQ4_K) {
    ColumnsQ4K<R>(w, a, m, kb0, kb1, n_rows, out);
  } else {
    ColumnsInterleaved<R, kT == DType::kQ8_0>(w, a, m, kb0, kb1, n_rows, out);
  }
}

template <DType kT>
void TileInterleaved(const uint8_t* w, int n_rows, const Q8Activations& a, int64_t m0, int64_t m1,
                     int64_t kb0, int64_t kb1, float* out) {
  for (int64_t m = m0; m < m1;) {
    float* o = out + (m - m0) * kQuantDotMaxRows;
    const int64_t left = m1 - m;
    if (left >= kInterleavedMaxR) {
      Columns<kInterleavedMaxR, kT>(w, a, m, kb0, kb1, n_rows, o);
      m += kInterleavedMaxR;
    } else if (kInterleavedMaxR > 4 && left >= 4) {
      Columns<4, kT>(w, a, m, kb0, kb1, n_rows, o);
      m += 4;
    } else if (left >= 2) {
      Columns<2, kT>(w, a, m, kb0, kb1, n_rows, o);
      m += 2;
    } else {
      Columns<1, kT>(w, a, m, kb0, kb1, n_rows, o);
      m += 1;
    }
  }
}

}  // namespace
}  // namespace moerun
