// Interleaved Q8_0 / Q4_0 / Q5_0 / Q5_1 / Q4_K / Q5_K / Q6_K tile kernels (kernels/block_interleave.h), used
// by quant_dot_x86_impl.h and compiled once per ISA (MOERUN_QUANT_DOT_VNNI 0: AVX2, 1: AVX-512 VNNI on zmm);
// internal linkage, include only from the quant_dot ISA translation units.
//
// Each 64-byte word of the 16 rows meets the 4 activation bytes of its elements broadcast, so every
// lane accumulates its own row's exact int32 block sum; then the scalar reference's f32 operations
// per (row, block) in block order. Activation rows go R at a time (up to 8), sharing each unpacked
// weight column.
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

// The 4 activation bytes of elements 4g..4g+3 of block kb of the activation row at `row`.
inline int32_t GroupAt(const int8_t* row, int64_t kb, int g) {
  int32_t v;
  std::memcpy(&v, row + kb * 32 + 4 * g, 4);
  return v;
}
inline int32_t ActGroup(const Q8Activations& a, int64_t m, int64_t kb, int g) {
  return GroupAt(a.q + m * a.ldq, kb, g);
}

// Activation rows m .. m + R - 1 of a tile, their row pointers taken once (not per block).
template <int R>
struct ActRows {
  const int8_t* q[R];
  const float* d[R];
  const int32_t* sum[R];
  ActRows() = default;
  ActRows(const Q8Activations& a, int64_t m) {
    for (int r = 0; r < R; ++r) {
      q[r] = a.q + (m + r) * a.ldq;
      d[r] = a.d + (m + r) * a.ldb;
      sum[r] = a.sum + (m + r) * a.ldb;
    }
  }
  int32_t Group(int r, int64_t kb, int g) const { return GroupAt(q[r], kb, g); }  // of row r
};

// ---- Q6_K interleaved: 3360-byte columns (block_interleave.h) ----
// [d: rows 0..15 x f16 (32 B)][4 scale words][32 ql words][16 qh words], 64 bytes (16 rows x 4)
// per word. Lane j of 32-element block i (= 4h + g) of a super-block, per 16-element half e:
//   T_e = sum over the half of (q - 32) a = (vpdpbusd of the 6-bit q with the activation bytes,
//         started from -32 x the half's activation sum), exact in int32;
//   float(I) = fma(sc_2i+1, T_1, sc_2i * T_0): exact, since |sc T| <= 128 x 16 x 32 x 128 = 2^23
//         and |I| <= 2^24 are integers f32 holds exactly (I is the reference's int32 sum);
//   acc = fma(d * da, float(I), acc): the reference's f32 operations.
constexpr size_t kQ6KColumnBytes = 3360;
constexpr size_t kQ6KScaleWords = 32, kQ6KQlWords = 32 + 64 * 4, kQ6KQhWords = 32 + 64 * 36;

// The ql / qh words holding elements 4p..4p+3 (p < 8) of block i = 4h + g (see block_interleave.h).
inline const uint8_t* Q6KQl(const uint8_t* c, int i, int p) {
  return c + kQ6KQlWords + 64 * (16 * (i / 4) + 8 * (i & 1) + p);
}
inline const uint8_t* Q6KQh(const uint8_t* c, int i, int p) {
  return c + kQ6KQhWords + 64 * (8 * (i / 4) + p);
}
// The scale word holding the int8 scale of sub-block s (< 16) in byte s % 4 of each row's word.
inline const uint8_t* Q6KScaleWord(const uint8_t* c, int s) { return c + kQ6KScaleWords + 64 * (s / 4); }

// Sum of the int8 activations 0..15 of block kb of row m (16..31 sum to a.sum - this), exact.
inline int32_t ActLowHalfSum(const Q8Activations& a, int64_t m, int64_t kb) {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a.q + m * a.ldq + kb * 32));
  const __m128i s = _mm_sad_epu8(_mm_xor_si128(x, _mm_set1_epi8(-128)), _mm_setzero_si128());  // a + 128
  return _mm_cvtsi128_si32(s) + _mm_extract_epi16(s, 4) - 16 * 128;
}

// ---- Q5_0 interleaved: 352-byte columns [d: rows 0..15 x f16 (32 B)][qh word][4 qs words]
// (block_interleave.h). Lane j's 5-bit q of elements 4G..4G+3 (G < 8) is the nibbles of qs word
// G % 4 (low for G < 4, high for G >= 4) with bit G of each byte of the packed (transposed) qh word
// as bit 4. Then I = sum q a - 16 A exact in int32, and the reference's f32 operations.
// Q5_1 columns (384 bytes) add the 16 rows' f16 m after d: [d][m][qh word][4 qs words].
//
// The interleaved column of a 32-element format (block_interleave.h): byte offsets of its qh word
// (0: none) and first qs word, the offset folded into I (I starts from -offset x A), and whether
// the block has a min (Q5_1: m's f16 at byte 32; after the d term, acc = fma(m, da * A, acc)).
struct Block32Layout {
  size_t column_bytes, qh, qs;
  int32_t offset;
  bool has_min;
};
constexpr Block32Layout Block32LayoutOf(DType t) {
  switch (t) {
    case DType::kQ8_0:
      return {544, 0, 32, 128, false};
    case DType::kQ4_0:
      return {288, 0, 32, 8, false};
    case DType::kQ5_0:
      return {352, 32, 96, 16, false};
    default:  // Q5_1
      return {384, 64, 128, 0, true};
  }
}

// The interleaved column of Q4_K / Q5_K: its bytes and the offsets of the first qh word (0: none)
// and qs word, after d, dmin (2 x 32 B) and the 3 scale words.
struct KLayout {
  size_t column_bytes, qh, qs;
};
constexpr KLayout KLayoutOf(DType t) {
  return t == DType::kQ5_K ? KLayout{2816, 256, 768} : KLayout{2304, 0, 256};
}
#if MOERUN_QUANT_DOT_VNNI
// Nibbles `nib` (u8 lanes of the 16 rows) plus 16 where bit b of the same byte of `bits` is set: a
// Q5 format's 5-bit values (Q5_0 / Q5_1 group b, bits = the packed qh word; Q5_K sub-block b,
// bits = a qh word), as WithFifthBit256 on AVX2.
inline __m512i WithFifthBit512(__m512i nib, __m512i bits, int b) {
  const __mmask64 high = _mm512_test_epi8_mask(bits, _mm512_set1_epi8(static_cast<char>(1 << b)));
  return _mm512_mask_add_epi8(nib, high, nib, _mm512_set1_epi8(16));
}

// Q8_0 / Q4_0 / Q5_0 / Q5_1 (one f16 scale per block, and Q5_1's min): u[g] = the unsigned bytes
// of elements 4g..4g+3 of the 16 rows (Q8_0: w + 128; Q4_0: the nibbles; Q5_0 / Q5_1: the nibbles
// with their fifth bits), and I = vpdpbusd sums from -offset x A (128, 8, 16 or 0).
// Column kb (block kb of the 16 rows) into acc[r] for activation rows act.
// Prefetches kAhead bytes ahead of the column, kCopies times (StreamColumns passes kStreamAhead and
// kStreamPrefetchCopies).
template <int R, DType kT, bool kSwPrefetch, size_t kAhead = PrefetchAheadOf(kT), int kCopies = 1>
inline void InterleavedColumn(const uint8_t* w, const ActRows<R>& act, int64_t kb, __m512 (&acc)[R]) {
  constexpr Block32Layout kL = Block32LayoutOf(kT);
  constexpr bool kQ8 = kT == DType::kQ8_0;
  // Few activation rows (decode): Q4_0's high nibbles meet the activations in place (x & 0xF0 is
  // 16 q, so that chain sums 16 x its exact int32 part, and an arithmetic shift by 4 recovers it
  // exactly), which saves a shift per word where the weight unpacking is most of the work.
  constexpr bool kHighInPlace = kT == DType::kQ4_0 && R <= 2;
  {
    const uint8_t* c = w + static_cast<size_t>(kb) * kL.column_bytes;
    PrefetchColumn<kSwPrefetch, kL.column_bytes, kCopies>(c + kAhead);
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c)));
    const __m512 mw = kL.has_min
                          ? _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 32)))
                          : _mm512_setzero_ps();
    __m512i u[8];
    const __m512i qh = kL.qh ? _mm512_loadu_si512(c + kL.qh) : _mm512_setzero_si512();
    for (int g = 0; g < (kQ8 ? 8 : 4); ++g) {
      const __m512i x = _mm512_loadu_si512(c + kL.qs + 64 * g);
      if constexpr (kQ8) {
        u[g] = _mm512_xor_si512(x, _mm512_set1_epi8(-128));  // w + 128
      } else if constexpr (kHighInPlace) {
        u[g] = _mm512_and_si512(x, _mm512_set1_epi8(0x0F));                         // elements 4g..
        u[4 + g] = _mm512_and_si512(x, _mm512_set1_epi8(static_cast<char>(0xF0)));  // 16 x (16 + 4g..)
      } else {
        u[g] = _mm512_and_si512(x, _mm512_set1_epi8(0x0F));                            // elements 4g..
        u[4 + g] = _mm512_and_si512(_mm512_srli_epi16(x, 4), _mm512_set1_epi8(0x0F));  // 16 + 4g..
        if constexpr (kL.qh != 0) {
          u[g] = WithFifthBit512(u[g], qh, g);
          u[4 + g] = WithFifthBit512(u[4 + g], qh, 4 + g);
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      const int32_t A = act.sum[r][kb];
      // Two independent chains of 4 words each, added exactly.
      __m512i I = _mm512_set1_epi32(-kL.offset * A), J = _mm512_setzero_si512();
      for (int g = 0; g < 4; ++g) {
        I = _mm512_dpbusd_epi32(I, u[g], _mm512_set1_epi32(act.Group(r, kb, g)));
        J = _mm512_dpbusd_epi32(J, u[4 + g], _mm512_set1_epi32(act.Group(r, kb, 4 + g)));
      }
      I = _mm512_add_epi32(I, kHighInPlace ? _mm512_srai_epi32(J, 4) : J);
      const float da = act.d[r][kb];
      acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(da)), _mm512_cvtepi32_ps(I), acc[r]);
      if constexpr (kL.has_min)
        acc[r] = _mm512_fmadd_ps(mw, _mm512_set1_ps(da * static_cast<float>(A)), acc[r]);
    }
  }
}

template <int R, DType kT, bool kSwPrefetch>
void ColumnsInterleaved(const uint8_t* w, const Q8Activations& a, int64_t m, int64_t kb0, int64_t kb1,
                        int n_rows, float* out) {
  const ActRows<R> act(a, m);
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t kb = kb0; kb < kb1; ++kb) InterleavedColumn<R, kT, kSwPrefetch>(w, act, kb, acc);
  const __mmask16 valid = static_cast<__mmask16>((1u << n_rows) - 1);
  for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(out + r * kQuantDotMaxRows, valid, acc[r]);
}

// Q4_K / Q5_K interleaved (2304 / 2816-byte columns: d, dmin, 3 scale words, Q5_K's 8 qh words,
// 32 qs words; block_interleave.h). Lane j: row j's 6-bit scale and min of sub-block s, the exact
// int32 sum I of the sub-block, then the reference's ops: inner = fma(d*sc, I, -(dmin*m * A));
// acc = fma(da, inner, acc).
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

template <int R, DType kT, bool kSwPrefetch>
void ColumnsK(const uint8_t* w, const Q8Activations& a, int64_t m, int64_t kb0, int64_t kb1, int n_rows,
              float* out) {
  constexpr KLayout kL = KLayoutOf(kT);
  // Few activation rows: Q4_K's high nibbles meet the activations in place, as in ColumnsInterleaved.
  constexpr bool kHighInPlace = kT == DType::kQ4_K && R <= 2;
  constexpr size_t kAhead = R <= 2 ? kKDecodeAhead : PrefetchAheadOf(kT);
  const ActRows<R> act(a, m);
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t sb = kb0 / 8; sb < kb1 / 8; ++sb) {
    const uint8_t* c = w + static_cast<size_t>(sb) * kL.column_bytes;
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c)));
    const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 32)));
    const Q4KScales512 scales(c);
    // Unrolled, so each sub-block's scale byte is a constant shift, and the column ahead prefetched
    // a quarter per step (PrefetchPart). In-process A/B on DeepSeek-V2-Lite Q4_K decode (Zen 4, 2
    // threads) against the loop with one burst of prefetches per column: 5-15 % faster in eight
    // runs; from 3 % slower to 2 % faster in six runs while the host's bandwidth was low. At decode
    // (one stream per thread) it looks kKDecodeAhead on, and kKDecodeFarAhead.
#pragma GCC unroll 4
    for (int t = 0; t < 4; ++t) {  // sub-blocks 2t (low nibbles) and 2t + 1 (high nibbles)
      PrefetchPart<kSwPrefetch, kL.column_bytes, 4>(c + kAhead, t);
      if constexpr (R <= 2) PrefetchPart<kSwPrefetch, kL.column_bytes, 4>(c + kKDecodeFarAhead, t);
      __m512i x[8];
      for (int g = 0; g < 8; ++g) x[g] = _mm512_loadu_si512(c + kL.qs + 64 * (8 * t + g));
      for (int half = 0; half < 2; ++half) {
        const int s = 2 * t + half;
        const int64_t kb = sb * 8 + s;
        const __m512 ws = _mm512_mul_ps(d, scales.Sc(s)), wm = _mm512_mul_ps(dmin, scales.Min(s));
        __m512i u[8];
        for (int g = 0; g < 8; ++g) {
          if (kHighInPlace && half) {
            u[g] = _mm512_and_si512(x[g], _mm512_set1_epi8(static_cast<char>(0xF0)));  // 16 q
          } else {
            u[g] = _mm512_and_si512(half ? _mm512_srli_epi16(x[g], 4) : x[g], _mm512_set1_epi8(0x0F));
          }
          if constexpr (kL.qh != 0)
            u[g] = WithFifthBit512(u[g], _mm512_loadu_si512(c + kL.qh + 64 * g), s);  // Q5_K
        }
        for (int r = 0; r < R; ++r) {
          __m512i I = _mm512_setzero_si512(), J = _mm512_setzero_si512();  // two exact chains
          for (int g = 0; g < 4; ++g) {
            I = _mm512_dpbusd_epi32(I, u[g], _mm512_set1_epi32(act.Group(r, kb, g)));
            J = _mm512_dpbusd_epi32(J, u[4 + g], _mm512_set1_epi32(act.Group(r, kb, 4 + g)));
          }
          I = _mm512_add_epi32(I, J);
          if (kHighInPlace && half) I = _mm512_srai_epi32(I, 4);  // 16 I -> I, exact
          const __m512 t_min = _mm512_mul_ps(wm, _mm512_set1_ps(static_cast<float>(act.sum[r][kb])));
          const __m512 inner = _mm512_fmsub_ps(ws, _mm512_cvtepi32_ps(I), t_min);
          acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(act.d[r][kb]), inner, acc[r]);
        }
      }
    }
  }
  const __mmask16 valid = static_cast<__mmask16>((1u << n_rows) - 1);
  for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(out + r * kQuantDotMaxRows, valid, acc[r]);
}

// One activation row against kNs blocks (streams[i]), column by column across the blocks: the
// kNs blocks are kNs memory streams in flight at once, which one core reads faster than one stream
// (docs/benchmarks.md "Several streams per thread"). Each block's lanes take the operations of the
// one-stream kernels in the same order: the same bits.
template <DType kT, bool kSwPrefetch, int kNs>
void StreamColumns(const QuantDotStream* streams, int64_t kb0, int64_t kb1) {
  ActRows<1> acts[kNs];
  __m512 acc[kNs][1];
  for (int i = 0; i < kNs; ++i) {
    acts[i] = ActRows<1>(*streams[i].a, streams[i].m);
    acc[i][0] = _mm512_setzero_ps();
  }
  // Unrolled over the streams, so each stream's accumulator and row pointers stay in registers (the
  // rolled loop kept them on the stack). In-process A/B on V2-Lite decode against the rolled loop
  // (AMD Zen 5, 2 threads, loops alternating): Q8_0 1.136 and 1.065 x, Q4_0 1.096 and 1.110 x, the
  // Q4_K file's down loops (Q5_0 streams) 1.093 and 1.144 x.
  for (int64_t kb = kb0; kb < kb1; ++kb) {
#pragma GCC unroll 4
    for (int i = 0; i < kNs; ++i)
      InterleavedColumn<1, kT, kSwPrefetch, kStreamAhead, kStreamPrefetchCopies>(streams[i].w, acts[i], kb,
                                                                                 acc[i]);
  }
  for (int i = 0; i < kNs; ++i) {
    const __mmask16 valid = static_cast<__mmask16>((1u << streams[i].n_rows) - 1);
    _mm512_mask_storeu_ps(streams[i].out, valid, acc[i][0]);
  }
}

// Q6_K, AVX-512: the 6-bit q of elements 4p..4p+3 of block i = 4h + G, 16 rows (u8 lanes).
template <int G>
inline __m512i Q6KWord512(const uint8_t* c, int h, int p) {
  const __m512i ql = _mm512_loadu_si512(Q6KQl(c, 4 * h + G, p)),
                qh = _mm512_loadu_si512(Q6KQh(c, 4 * h + G, p));
  const __m512i lo = _mm512_and_si512(G >= 2 ? _mm512_srli_epi16(ql, 4) : ql, _mm512_set1_epi8(0x0F));
  __m512i hi;  // bits 2G, 2G + 1 of each byte moved to bits 4, 5
  if constexpr (G == 0) hi = _mm512_slli_epi16(qh, 4);
  if constexpr (G == 1) hi = _mm512_slli_epi16(qh, 2);
  if constexpr (G == 2) hi = qh;
  if constexpr (G == 3) hi = _mm512_srli_epi16(qh, 2);
  return _mm512_or_si512(lo, _mm512_and_si512(hi, _mm512_set1_epi8(0x30)));
}

// Sub-block s's int8 scale of the 16 rows as f32 lanes.
inline __m512 Q6KScale512(const uint8_t* c, int s) {
  const __m512i w = _mm512_loadu_si512(Q6KScaleWord(c, s));
  return _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(w, 24 - 8 * (s % 4)), 24));
}

// init + sum over words u[0..3] (elements 4 p0 .. 4 p0 + 15 of block kb) of q * a, exact int32.
inline __m512i DotHalf512(const __m512i (&u)[4], const Q8Activations& a, int64_t m, int64_t kb, int p0,
                          int32_t init) {
  __m512i t = _mm512_set1_epi32(init);
  for (int p = 0; p < 4; ++p) t = _mm512_dpbusd_epi32(t, u[p], _mm512_set1_epi32(ActGroup(a, m, kb, p0 + p)));
  return t;
}

// Block i = 4h + G (activation block kb) of the column into acc[r] (activation rows m + r).
template <int R, int G>
inline void Q6KBlock512(const uint8_t* c, int h, __m512 d, const Q8Activations& a, int64_t m, int64_t kb,
                        __m512 (&acc)[R]) {
  const int i = 4 * h + G;
  __m512 part[R];  // sc_2i * T_0 (exact)
  int32_t low[R];  // activation sums of elements 0..15
  __m512i u[4];
  for (int p = 0; p < 4; ++p) u[p] = Q6KWord512<G>(c, h, p);
  const __m512 sc0 = Q6KScale512(c, 2 * i);
  for (int r = 0; r < R; ++r) {
    low[r] = ActLowHalfSum(a, m + r, kb);
    part[r] = _mm512_mul_ps(sc0, _mm512_cvtepi32_ps(DotHalf512(u, a, m + r, kb, 0, -32 * low[r])));
  }
  for (int p = 0; p < 4; ++p) u[p] = Q6KWord512<G>(c, h, 4 + p);
  const __m512 sc1 = Q6KScale512(c, 2 * i + 1);
  for (int r = 0; r < R; ++r) {
    const int32_t high = a.sum[(m + r) * a.ldb + kb] - low[r];
    const __m512 fi =
        _mm512_fmadd_ps(sc1, _mm512_cvtepi32_ps(DotHalf512(u, a, m + r, kb, 4, -32 * high)), part[r]);
    const __m512 s = _mm512_mul_ps(d, _mm512_set1_ps(a.d[(m + r) * a.ldb + kb]));
    acc[r] = _mm512_fmadd_ps(s, fi, acc[r]);
  }
}

template <int R, bool kSwPrefetch>
void ColumnsQ6K(const uint8_t* w, const Q8Activations& a, int64_t m, int64_t kb0, int64_t kb1, int n_rows,
                float* out) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t sb = kb0 / 8; sb < kb1 / 8; ++sb) {
    const uint8_t* c = w + static_cast<size_t>(sb) * kQ6KColumnBytes;
    PrefetchColumn<kSwPrefetch, kQ6KColumnBytes>(c + PrefetchAheadOf(DType::kQ6_K));
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c)));
    // One burst of prefetches per column, in a loop over blocks. Unrolling the loop and spreading
    // the prefetches an eighth per block (as ColumnsK does) measured 31-45 % faster in one state of
    // the host and 14-45 % slower in another (in-process A/B, Q6_K V2-Lite decode, Zen 4).
    for (int h = 0; h < 2; ++h) {
      const int64_t kb = sb * 8 + 4 * h;
      Q6KBlock512<R, 0>(c, h, d, a, m, kb, acc);
      Q6KBlock512<R, 1>(c, h, d, a, m, kb + 1, acc);
      Q6KBlock512<R, 2>(c, h, d, a, m, kb + 2, acc);
      Q6KBlock512<R, 3>(c, h, d, a, m, kb + 3, acc);
    }
  }
  const __mmask16 valid = static_cast<__mmask16>((1u << n_rows) - 1);
  for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(out + r * kQuantDotMaxRows, valid, acc[r]);
}

constexpr int kInterleavedMaxR = 8;
#else
// AVX2 holds 8 of a column's 16 rows per register: rows 8h .. 8h + 7 are the 32-byte halves of each
// 64-byte word. A tile of few activation rows (decode: R <= kOnePassMaxR) takes both halves of each
// block in one pass over the weights, so the compute overlaps the stream from memory; more rows
// (prefill, compute bound) take the halves in two passes, which keeps one half's unpacked words and
// sums in registers (the second pass reads the tile from cache). Either order gives each lane the same
// f32 operations in block order.
constexpr int kOnePassMaxR = 2;

// Accumulates a tile over blocks (or super-blocks) i0 .. i1 - 1 and stores lanes j < n_rows of
// acc[h][r] to out[r * kQuantDotMaxRows + 8h + ..]. One pass: both(i, acc) adds block i of both
// halves; two passes: half(h, i, acc) adds block i of rows 8h .. 8h + 7 to acc[h]. prefetch(i) is
// issued once per block.
template <int R, bool kOnePass, typename Both, typename Half, typename PrefetchFn>
inline void TwoHalves256(int64_t i0, int64_t i1, int n_rows, float* out, Both both, Half half,
                         PrefetchFn prefetch) {
  __m256 acc[2][R];
  for (auto& acc_h : acc) {
    for (__m256& v : acc_h) v = _mm256_setzero_ps();
  }
  if constexpr (kOnePass) {
    for (int64_t i = i0; i < i1; ++i) {
      prefetch(i);
      both(i, acc);
    }
  } else {
    for (int h = 0; h < 2; ++h) {
      for (int64_t i = i0; i < i1; ++i) {
        if (h == 0) prefetch(i);
        half(h, i, acc);
      }
    }
  }
  for (int h = 0; h < 2; ++h) {
    for (int r = 0; r < R; ++r) {
      alignas(32) float t[8];
      _mm256_store_ps(t, acc[h][r]);
      for (int j = 8 * h; j < std::min(n_rows, 8 * h + 8); ++j) out[r * kQuantDotMaxRows + j] = t[j - 8 * h];
    }
  }
}

// A super-block format's tile (K-quants, Q6_K: kColumnBytes per 256-element column) over
// super-blocks kb0 / 8 .. kb1 / 8 - 1, through half(h, sb, acc): one pass at few activation rows
// (halves 0 and 1 of each super-block in turn), else two; with kSwPrefetch, the column kAhead bytes
// on is prefetched once per super-block.
template <int R, size_t kColumnBytes, size_t kAhead, bool kSwPrefetch, typename Half>
inline void SuperBlocks256(const uint8_t* w, int64_t kb0, int64_t kb1, int n_rows, float* out, Half half) {
  TwoHalves256<R, (R <= kOnePassMaxR)>(
      kb0 / 8, kb1 / 8, n_rows, out,
      [&](int64_t sb, __m256(&acc)[2][R]) {
        half(0, sb, acc);
        half(1, sb, acc);
      },
      half,
      [&](int64_t sb) {
        PrefetchColumn<kSwPrefetch, kColumnBytes>(w + static_cast<size_t>(sb) * kColumnBytes + kAhead);
      });
}

// Q8_0 / Q4_0 block kb (column c) of rows 8 kH0 .. 8 kH1 - 1 into acc[h][r] (activation row
// m + r), one 4-element group at a time: each unpacked word serves every row r and each activation
// broadcast both halves. Integer sums are exact, so any grouping gives the same I; then the
// reference's f32 operations.
template <int R, bool kQ8, int kH0, int kH1>
inline void BlockRows256(const uint8_t* c, const Q8Activations& a, int64_t m, int64_t kb,
                         __m256 (&acc)[2][R]) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i sum[2][R];  // Q8_0: int32 sums; Q4_0: int16 pair sums (8 x 2 x 15 x 127 < 2^15)
  for (int h = kH0; h < kH1; ++h) {
    for (__m256i& v : sum[h]) v = _mm256_setzero_si256();
  }
  for (int g = 0; g < (kQ8 ? 8 : 4); ++g) {
    __m256i x[2], lo[2], hi[2];
    for (int h = kH0; h < kH1; ++h) {
      x[h] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 32 + 64 * g + 32 * h));
      if constexpr (kQ8) {
        lo[h] = _mm256_abs_epi8(x[h]);  // |w|; a takes w's sign (pairs fit int16: 2 x 128 x 127)
      } else {
        lo[h] = _mm256_and_si256(x[h], _mm256_set1_epi8(0x0F));                        // elements 4g ..
        hi[h] = _mm256_and_si256(_mm256_srli_epi16(x[h], 4), _mm256_set1_epi8(0x0F));  // 16 + 4g ..
      }
    }
    for (int r = 0; r < R; ++r) {
      const __m256i av = _mm256_set1_epi32(ActGroup(a, m + r, kb, g));
      if constexpr (kQ8) {
        for (int h = kH0; h < kH1; ++h) {
          sum[h][r] = _mm256_add_epi32(
              sum[h][r], _mm256_madd_epi16(_mm256_maddubs_epi16(lo[h], _mm256_sign_epi8(av, x[h])), ones));
        }
      } else {
        const __m256i av_hi = _mm256_set1_epi32(ActGroup(a, m + r, kb, 4 + g));
        for (int h = kH0; h < kH1; ++h) {
          sum[h][r] = _mm256_add_epi16(sum[h][r], _mm256_add_epi16(_mm256_maddubs_epi16(lo[h], av),
                                                                   _mm256_maddubs_epi16(hi[h], av_hi)));
        }
      }
    }
  }
  for (int h = kH0; h < kH1; ++h) {
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 16 * h)));
    for (int r = 0; r < R; ++r) {
      const __m256i I = kQ8 ? sum[h][r]
                            : _mm256_add_epi32(_mm256_madd_epi16(sum[h][r], ones),
                                               _mm256_set1_epi32(-8 * a.sum[(m + r) * a.ldb + kb]));
      const __m256 s = _mm256_mul_ps(dw, _mm256_set1_ps(a.d[(m + r) * a.ldb + kb]));
      acc[h][r] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(I), acc[h][r]);
    }
  }
}

// Sum over the 8 words u[g] (unsigned: nibbles <= 15, or Q5_0's 5-bit values <= 31) times
// activation group g of block kb of row m, exact in int32 lanes: the vpmaddubsw pair sums stay
// int16 over kChunk words (8 x 2 x 15 x 127, or 4 x 2 x 31 x 127, < 2^15), each chunk widened once.
template <int kChunk = 8>
inline __m256i NibbleDot256(const __m256i (&u)[8], const Q8Activations& a, int64_t m, int64_t kb) {
  __m256i I[8 / kChunk];
  for (int c = 0; c < 8 / kChunk; ++c) {
    __m256i s16 = _mm256_maddubs_epi16(u[c * kChunk], _mm256_set1_epi32(ActGroup(a, m, kb, c * kChunk)));
    for (int g = c * kChunk + 1; g < (c + 1) * kChunk; ++g) {
      s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(u[g], _mm256_set1_epi32(ActGroup(a, m, kb, g))));
    }
    I[c] = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
  }
  if constexpr (kChunk == 8) {
    return I[0];
  } else {
    return _mm256_add_epi32(I[0], I[1]);
  }
}

// Nibbles `nib` (u8 lanes) with bit b of each byte of `bits` as their bit 4: a Q5 format's 5-bit
// values (Q5_0 / Q5_1 group b, bits = the packed qh word; Q5_K sub-block b, bits = a qh word).
inline __m256i WithFifthBit256(__m256i nib, __m256i bits, int b) {
  const __m256i fifth = b <= 4 ? _mm256_slli_epi16(bits, 4 - b) : _mm256_srli_epi16(bits, b - 4);
  return _mm256_or_si256(nib, _mm256_and_si256(fifth, _mm256_set1_epi8(0x10)));
}

// Q5_0 / Q5_1 block kb (column c) of both halves into acc[h][r] in one pass (decode), in
// BlockRows256's group order: each word's low and high nibbles take their fifth bits, and the int16
// pair sums are widened every two groups (4 x 2 x 31 x 127 < 2^15). The same exact I and f32
// operations as the reference (NibbleBlockHalf256's).
template <int R, DType kT>
inline void Q5BlockRows256(const uint8_t* c, const Q8Activations& a, int64_t m, int64_t kb,
                           __m256 (&acc)[2][R]) {
  constexpr Block32Layout kL = Block32LayoutOf(kT);
  const __m256i ones = _mm256_set1_epi16(1), nib = _mm256_set1_epi8(0x0F);
  auto load = [&](size_t offset) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + offset)); };
  __m256i qh[2], sum[2][R];  // the halves' packed qh words; int32 sums
  for (int h = 0; h < 2; ++h) {
    qh[h] = load(kL.qh + 32 * h);
    for (__m256i& v : sum[h]) v = _mm256_setzero_si256();
  }
  for (int g0 = 0; g0 < 4; g0 += 2) {
    __m256i s16[2][R];  // int16 pair sums of groups g0, g0 + 1 and 4 + g0, 5 + g0
    for (auto& v : s16) {
      for (__m256i& x : v) x = _mm256_setzero_si256();
    }
    for (int g = g0; g < g0 + 2; ++g) {
      __m256i lo[2], hi[2];  // elements 4g .. 4g + 3 and 16 + 4g .. 16 + 4g + 3
      for (int h = 0; h < 2; ++h) {
        const __m256i x = load(kL.qs + 64 * g + 32 * h);
        lo[h] = WithFifthBit256(_mm256_and_si256(x, nib), qh[h], g);
        hi[h] = WithFifthBit256(_mm256_and_si256(_mm256_srli_epi16(x, 4), nib), qh[h], 4 + g);
      }
      for (int r = 0; r < R; ++r) {
        const __m256i av = _mm256_set1_epi32(ActGroup(a, m + r, kb, g));
        const __m256i av_hi = _mm256_set1_epi32(ActGroup(a, m + r, kb, 4 + g));
        for (int h = 0; h < 2; ++h) {
          s16[h][r] = _mm256_add_epi16(s16[h][r], _mm256_add_epi16(_mm256_maddubs_epi16(lo[h], av),
                                                                   _mm256_maddubs_epi16(hi[h], av_hi)));
        }
      }
    }
    for (int h = 0; h < 2; ++h) {
      for (int r = 0; r < R; ++r) sum[h][r] = _mm256_add_epi32(sum[h][r], _mm256_madd_epi16(s16[h][r], ones));
    }
  }
  for (int h = 0; h < 2; ++h) {
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 16 * h)));
    const __m256 mw =
        kL.has_min ? _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 32 + 16 * h)))
                   : _mm256_setzero_ps();
    for (int r = 0; r < R; ++r) {
      const int32_t A = a.sum[(m + r) * a.ldb + kb];
      const __m256i I = _mm256_add_epi32(sum[h][r], _mm256_set1_epi32(-kL.offset * A));
      const float da = a.d[(m + r) * a.ldb + kb];
      acc[h][r] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(da)), _mm256_cvtepi32_ps(I), acc[h][r]);
      if constexpr (kL.has_min)
        acc[h][r] = _mm256_fmadd_ps(mw, _mm256_set1_ps(da * static_cast<float>(A)), acc[h][r]);
    }
  }
}

// Q4_0 / Q5_0 / Q5_1 block kb (column c) of rows 8h .. 8h + 7 into acc[r], for the two-pass order:
// the 8 unpacked words first (Q5: with their fifth bits), then each row's 8 vpmaddubsw (faster
// than BlockRows256's group order for Q4_0 at R = 8; Q8_0 is the other way round); I from -8 A,
// -16 A or 0. The same exact I and f32 operations as the reference.
template <int R, DType kT>
inline void NibbleBlockHalf256(const uint8_t* c, int h, const Q8Activations& a, int64_t m, int64_t kb,
                               __m256 (&acc)[R]) {
  constexpr Block32Layout kL = Block32LayoutOf(kT);
  const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 16 * h)));
  const __m256 mw = kL.has_min
                        ? _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 32 + 16 * h)))
                        : _mm256_setzero_ps();
  __m256i u[8];
  for (int g = 0; g < 4; ++g) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + kL.qs + 64 * g + 32 * h));
    u[g] = _mm256_and_si256(x, _mm256_set1_epi8(0x0F));
    u[4 + g] = _mm256_and_si256(_mm256_srli_epi16(x, 4), _mm256_set1_epi8(0x0F));
  }
  if constexpr (kL.qh != 0) {
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + kL.qh + 32 * h));
    for (int g = 0; g < 8; ++g) u[g] = WithFifthBit256(u[g], qh, g);
  }
  for (int r = 0; r < R; ++r) {
    const int32_t A = a.sum[(m + r) * a.ldb + kb];
    const __m256i I = _mm256_add_epi32(NibbleDot256 < kL.qh != 0 ? 4 : 8 > (u, a, m + r, kb),
                                       _mm256_set1_epi32(-kL.offset * A));
    const float da = a.d[(m + r) * a.ldb + kb];
    acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(da)), _mm256_cvtepi32_ps(I), acc[r]);
    if constexpr (kL.has_min)
      acc[r] = _mm256_fmadd_ps(mw, _mm256_set1_ps(da * static_cast<float>(A)), acc[r]);
  }
}

// Q8_0 / Q4_0 / Q5_0 / Q5_1.
template <int R, DType kT, bool kSwPrefetch>
void ColumnsInterleaved(const uint8_t* w, const Q8Activations& a, int64_t m, int64_t kb0, int64_t kb1,
                        int n_rows, float* out) {
  constexpr Block32Layout kL = Block32LayoutOf(kT);
  constexpr bool kQ8 = kT == DType::kQ8_0, kQ5 = kL.qh != 0;
  constexpr size_t kCB = kL.column_bytes;
  TwoHalves256<R, (R <= kOnePassMaxR)>(
      kb0, kb1, n_rows, out,
      [&](int64_t kb, __m256(&acc)[2][R]) {
        const uint8_t* c = w + static_cast<size_t>(kb) * kCB;
        if constexpr (kQ5) {
          Q5BlockRows256<R, kT>(c, a, m, kb, acc);
        } else {
          BlockRows256<R, kQ8, 0, 2>(c, a, m, kb, acc);
        }
      },
      [&](int h, int64_t kb, __m256(&acc)[2][R]) {
        const uint8_t* c = w + static_cast<size_t>(kb) * kCB;
        if constexpr (!kQ8) {
          NibbleBlockHalf256<R, kT>(c, h, a, m, kb, acc[h]);
        } else if (h == 0) {
          BlockRows256<R, kQ8, 0, 1>(c, a, m, kb, acc);
        } else {
          BlockRows256<R, kQ8, 1, 2>(c, a, m, kb, acc);
        }
      },
      [&](int64_t kb) {
        PrefetchColumn<kSwPrefetch, kCB>(w + static_cast<size_t>(kb) * kCB + PrefetchAheadOf(kT));
      });
}

// One activation row against kNs blocks (streams[i]), column by column across the blocks, as the
// AVX-512 StreamColumns: both 8-row halves of a stream's column in turn (one pass), so each lane
// takes the one-stream kernels' f32 operations in block order: the same bits.
template <DType kT, bool kSwPrefetch, int kNs>
void StreamColumns(const QuantDotStream* streams, int64_t kb0, int64_t kb1) {
  constexpr Block32Layout kL = Block32LayoutOf(kT);
  constexpr bool kQ8 = kT == DType::kQ8_0;
  __m256 acc[kNs][2][1];
  for (auto& acc_i : acc) {
    for (auto& acc_h : acc_i) acc_h[0] = _mm256_setzero_ps();
  }
  // Unrolled over the streams, as the AVX-512 StreamColumns. In-process A/B against the rolled loop
  // with these rows forced (--kernel avx2) on an AMD Zen 5: Q8_0 1.184 and 1.054 x, Q4_0 1.069 and
  // 1.051 x, the Q4_K file's down loops 1.110 x; not yet measured on an AVX2-only CPU.
  for (int64_t kb = kb0; kb < kb1; ++kb) {
#pragma GCC unroll 4
    for (int i = 0; i < kNs; ++i) {
      const QuantDotStream& s = streams[i];
      const uint8_t* c = s.w + static_cast<size_t>(kb) * kL.column_bytes;
      PrefetchColumn<kSwPrefetch, kL.column_bytes>(c + PrefetchAheadOf(kT));
      if constexpr (kL.qh != 0) {
        Q5BlockRows256<1, kT>(c, *s.a, s.m, kb, acc[i]);
      } else {
        BlockRows256<1, kQ8, 0, 2>(c, *s.a, s.m, kb, acc[i]);
      }
    }
  }
  for (int i = 0; i < kNs; ++i) {
    alignas(32) float t[16];
    _mm256_store_ps(t, acc[i][0][0]);
    _mm256_store_ps(t + 8, acc[i][1][0]);
    std::copy(t, t + streams[i].n_rows, streams[i].out);
  }
}

// Q4_K / Q5_K interleaved, AVX2: super-block sb (column c) of rows 8h .. 8h + 7 into acc[r], the
// same lane arithmetic as the AVX-512 body. kSpreadPrefetch: prefetches part 8h + s of 16 of the
// column PrefetchAheadOf(kT) bytes on before sub-block s.
// The 6-bit scales (sc) and mins (mn) of rows 8h .. 8h + 7 of a Q4_K / Q5_K column, one byte per
// sub-block in each row's dword: [0] sub-blocks 0..3, [1] sub-blocks 4..7.
inline void KScales256(const uint8_t* c, int h, __m256i (&sc)[2], __m256i (&mn)[2]) {
  auto load = [&](size_t offset) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + offset + 32 * h));
  };
  const __m256i u0 = load(64), u1 = load(128), u2 = load(192);
  const __m256i k1 = _mm256_set1_epi32(0x3f3f3f3f), k2 = _mm256_set1_epi32(0x0f0f0f0f),
                k3 = _mm256_set1_epi32(0x03030303);
  sc[0] = _mm256_and_si256(u0, k1);
  mn[0] = _mm256_and_si256(u1, k1);
  sc[1] = _mm256_or_si256(_mm256_and_si256(u2, k2),
                          _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u0, 6), k3), 4));
  mn[1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(u2, 4), k2),
                          _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u1, 6), k3), 4));
}

template <int R, DType kT, bool kSpreadPrefetch = false>
inline void SuperBlockKHalf256(const uint8_t* c, int h, const Q8Activations& a, int64_t m, int64_t sb,
                               __m256 (&acc)[R]) {
  constexpr KLayout kL = KLayoutOf(kT);
  const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 16 * h)));
  const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 32 + 16 * h)));
  auto load = [&](size_t offset) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + offset + 32 * h));
  };
  __m256i sc[2], mn[2];
  KScales256(c, h, sc, mn);
  const __m256i sc_lo = sc[0], sc_hi = sc[1], m_lo = mn[0], m_hi = mn[1];
  auto byte = [](__m256i v, int b) {
    return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(v, 8 * b), _mm256_set1_epi32(0xFF)));
  };
  for (int s = 0; s < 8; ++s) {
    PrefetchPart<kSpreadPrefetch, kL.column_bytes, 16>(c + PrefetchAheadOf(kT), 8 * h + s);
    const int64_t kb = sb * 8 + s;
    const int t = s / 2;
    const __m256 ws = _mm256_mul_ps(d, s < 4 ? byte(sc_lo, s) : byte(sc_hi, s - 4));
    const __m256 wm = _mm256_mul_ps(dmin, s < 4 ? byte(m_lo, s) : byte(m_hi, s - 4));
    __m256i u[8];
    for (int g = 0; g < 8; ++g) {
      const __m256i x = load(kL.qs + 64 * (8 * t + g));
      u[g] = _mm256_and_si256((s & 1) ? _mm256_srli_epi16(x, 4) : x, _mm256_set1_epi8(0x0F));
      if constexpr (kL.qh != 0) u[g] = WithFifthBit256(u[g], load(kL.qh + 64 * g), s);  // Q5_K
    }
    for (int r = 0; r < R; ++r) {
      const __m256i I = NibbleDot256 < kL.qh != 0 ? 4 : 8 > (u, a, m + r, kb);
      const __m256 t_min = _mm256_mul_ps(wm, _mm256_set1_ps(static_cast<float>(a.sum[(m + r) * a.ldb + kb])));
      const __m256 inner = _mm256_fmsub_ps(ws, _mm256_cvtepi32_ps(I), t_min);
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(a.d[(m + r) * a.ldb + kb]), inner, acc[r]);
    }
  }
}

// vpshufb index (within each 128-bit lane of 4 rows) taking byte b of each row's dword into the low
// byte of both its int16 halves (kBoth) or of its low half only; every other byte zero (index bit 7).
template <bool kBoth>
inline __m256i ByteToWordsIndex(int b) {
  auto lane = [&](int j) {
    const uint32_t i = static_cast<uint32_t>(4 * j + b);  // row j's byte b within the 128-bit lane
    return static_cast<int32_t>(kBoth ? (i | 0x80u << 8) * 0x00010001u : i | 0xFFFFFF00u);
  };
  return _mm256_setr_epi32(lane(0), lane(1), lane(2), lane(3), lane(0), lane(1), lane(2), lane(3));
}

// Q4_K interleaved, AVX2, at few activation rows (decode): super-block sb (column c) of all 16
// rows into acc[h][r], sub-block by sub-block, both 8-row halves together (each activation group
// broadcast once for both). Each lane gets the reference's f32 operations on the same exact values:
// the sub-block's int16 pair sums are widened by vpmaddwd against its 6-bit scale (sc I exact:
// |sc I| <= 63 x 32 x 15 x 127 < 2^24, so d x float(sc I) is the exact product (d sc) x I that the
// reference rounds once in its fmsub), and the min term is dmin x float(m A) (m A exact in int32
// and in f32: the reference's single rounding of (dmin m) x A). The group loop stays a loop (two
// loads per step walking the sub-block's words): fully unrolled, the tile ran 0.8 x as fast from L1
// and 0.93-0.94 x in the decode (AMD Zen 3). kSwPrefetch: parts 2s, 2s + 1 of 16 of the column
// kKDecodeAhead bytes on before sub-block s.
template <int R, bool kSwPrefetch>
inline void SuperBlockQ4K256(const uint8_t* c, const Q8Activations& a, int64_t m, int64_t sb,
                             __m256 (&acc)[2][R]) {
  constexpr KLayout kL = KLayoutOf(DType::kQ4_K);
  __m256 d[2], dmin[2];
  __m256i sc[2][2], mn[2][2];  // [half][sub-blocks 0..3 | 4..7]: 6-bit scale / min bytes per row
  for (int h = 0; h < 2; ++h) {
    d[h] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 16 * h)));
    dmin[h] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 32 + 16 * h)));
    KScales256(c, h, sc[h], mn[h]);
  }
  const __m256i nib = _mm256_set1_epi8(0x0F);
#pragma GCC unroll 8
  for (int s = 0; s < 8; ++s) {
    PrefetchPart<kSwPrefetch, kL.column_bytes, 16>(c + kKDecodeAhead, 2 * s);
    PrefetchPart<kSwPrefetch, kL.column_bytes, 16>(c + kKDecodeAhead, 2 * s + 1);
    const int64_t kb = sb * 8 + s;
    __m256i s16[2][R];  // int16 pair sums (8 x 2 x 15 x 127 < 2^15)
    for (auto& v : s16) {
      for (__m256i& x : v) x = _mm256_setzero_si256();
    }
#pragma GCC unroll 1
    for (int g = 0; g < 8; ++g) {
      __m256i u[2];
      for (int h = 0; h < 2; ++h) {
        const __m256i x =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + kL.qs + 64 * (8 * (s / 2) + g) + 32 * h));
        u[h] = _mm256_and_si256((s & 1) ? _mm256_srli_epi16(x, 4) : x, nib);
      }
      for (int r = 0; r < R; ++r) {
        const __m256i av = _mm256_set1_epi32(ActGroup(a, m + r, kb, g));
        for (int h = 0; h < 2; ++h) s16[h][r] = _mm256_add_epi16(s16[h][r], _mm256_maddubs_epi16(u[h], av));
      }
    }
    const __m256i sc_index = ByteToWordsIndex<true>(s % 4), m_index = ByteToWordsIndex<false>(s % 4);
    for (int h = 0; h < 2; ++h) {
      const __m256i sc16 = _mm256_shuffle_epi8(sc[h][s / 4], sc_index);
      const __m256i m32 = _mm256_shuffle_epi8(mn[h][s / 4], m_index);
      for (int r = 0; r < R; ++r) {
        const __m256i scI = _mm256_madd_epi16(s16[h][r], sc16);
        const __m256i mA = _mm256_madd_epi16(m32, _mm256_set1_epi32(a.sum[(m + r) * a.ldb + kb]));
        const __m256 t_min = _mm256_mul_ps(dmin[h], _mm256_cvtepi32_ps(mA));
        const __m256 inner = _mm256_fmsub_ps(d[h], _mm256_cvtepi32_ps(scI), t_min);
        acc[h][r] = _mm256_fmadd_ps(_mm256_set1_ps(a.d[(m + r) * a.ldb + kb]), inner, acc[h][r]);
      }
    }
  }
}

template <int R, DType kT, bool kSwPrefetch>
void ColumnsK(const uint8_t* w, const Q8Activations& a, int64_t m, int64_t kb0, int64_t kb1, int n_rows,
              float* out) {
  constexpr size_t kCB = KLayoutOf(kT).column_bytes;
  if constexpr (kT == DType::kQ4_K && R <= kOnePassMaxR) {
    // Decode: both halves per sub-block (SuperBlockQ4K256). From L1 1.7 x the per-half tile below
    // (30 vs 18 GB/s, one Zen 3 thread); in-process A/B on V2-Lite Q4_K decode (AMD Zen 3, the Q4_K
    // gate/up loops alternating): 1 thread 1.04 and 1.23 x, 2 threads 0.93-1.15 x in five runs
    // (mean 1.03; docs/benchmarks.md).
    TwoHalves256<R, true>(
        kb0 / 8, kb1 / 8, n_rows, out,
        [&](int64_t sb, __m256(&acc)[2][R]) {
          SuperBlockQ4K256<R, kSwPrefetch>(w + static_cast<size_t>(sb) * kCB, a, m, sb, acc);
        },
        [](int, int64_t, __m256(&)[2][R]) {}, [](int64_t) {});
  } else {
    // One pass (Q5_K decode) prefetches the column ahead a sixteenth per sub-block half instead of
    // in one burst per super-block (in-process A/B on DeepSeek-V2-Lite Q4_K decode with this tile,
    // AMD Zen 3, 2 threads: 11-12 % faster in three runs; twice as far ahead 9-11 %); two passes
    // (prefill) keep the burst.
    constexpr bool kSpread = R <= kOnePassMaxR;
    auto half = [&](int h, int64_t sb, __m256(&acc)[2][R]) {
      SuperBlockKHalf256<R, kT, kSpread && kSwPrefetch>(w + static_cast<size_t>(sb) * kCB, h, a, m, sb,
                                                        acc[h]);
    };
    SuperBlocks256<R, kCB, PrefetchAheadOf(kT), !kSpread && kSwPrefetch>(w, kb0, kb1, n_rows, out, half);
  }
}

// Q6_K, AVX2: rows 8hh .. 8hh + 7 per pass (the 32-byte halves of each word), the same lane
// arithmetic as the AVX-512 body. The 6-bit q of elements 4p..4p+3 of block i = 4h + G (u8 lanes).
template <int G>
inline __m256i Q6KWord256(const uint8_t* c, int hh, int h, int p) {
  const __m256i ql = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(Q6KQl(c, 4 * h + G, p) + 32 * hh));
  const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(Q6KQh(c, 4 * h + G, p) + 32 * hh));
  const __m256i lo = _mm256_and_si256(G >= 2 ? _mm256_srli_epi16(ql, 4) : ql, _mm256_set1_epi8(0x0F));
  __m256i hi;  // bits 2G, 2G + 1 of each byte moved to bits 4, 5
  if constexpr (G == 0) hi = _mm256_slli_epi16(qh, 4);
  if constexpr (G == 1) hi = _mm256_slli_epi16(qh, 2);
  if constexpr (G == 2) hi = qh;
  if constexpr (G == 3) hi = _mm256_srli_epi16(qh, 2);
  return _mm256_or_si256(lo, _mm256_and_si256(hi, _mm256_set1_epi8(0x30)));
}

// Sub-block s's int8 scale of rows 8hh .. 8hh + 7 as f32 lanes.
inline __m256 Q6KScale256(const uint8_t* c, int hh, int s) {
  const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(Q6KScaleWord(c, s) + 32 * hh));
  return _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(w, 24 - 8 * (s % 4)), 24));
}

// init + sum over words u[0..3] (elements 4 p0 .. 4 p0 + 15 of block kb) of q * a, exact int32:
// u8 (<= 63) x int8 pair sums of two words stay within int16 (2 x 2 x 63 x 128 < 2^15).
inline __m256i DotHalf256(const __m256i (&u)[4], const Q8Activations& a, int64_t m, int64_t kb, int p0,
                          int32_t init) {
  auto mb = [&](int p) { return _mm256_maddubs_epi16(u[p], _mm256_set1_epi32(ActGroup(a, m, kb, p0 + p))); };
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i s01 = _mm256_madd_epi16(_mm256_add_epi16(mb(0), mb(1)), ones);
  const __m256i s23 = _mm256_madd_epi16(_mm256_add_epi16(mb(2), mb(3)), ones);
  return _mm256_add_epi32(_mm256_add_epi32(s01, s23), _mm256_set1_epi32(init));
}

template <int R, int G>
inline void Q6KBlock256(const uint8_t* c, int hh, int h, __m256 d, const Q8Activations& a, int64_t m,
                        int64_t kb, __m256 (&acc)[R]) {
  const int i = 4 * h + G;
  __m256 part[R];  // sc_2i * T_0 (exact)
  int32_t low[R];  // activation sums of elements 0..15
  __m256i u[4];
  for (int p = 0; p < 4; ++p) u[p] = Q6KWord256<G>(c, hh, h, p);
  const __m256 sc0 = Q6KScale256(c, hh, 2 * i);
  for (int r = 0; r < R; ++r) {
    low[r] = ActLowHalfSum(a, m + r, kb);
    part[r] = _mm256_mul_ps(sc0, _mm256_cvtepi32_ps(DotHalf256(u, a, m + r, kb, 0, -32 * low[r])));
  }
  for (int p = 0; p < 4; ++p) u[p] = Q6KWord256<G>(c, hh, h, 4 + p);
  const __m256 sc1 = Q6KScale256(c, hh, 2 * i + 1);
  for (int r = 0; r < R; ++r) {
    const int32_t high = a.sum[(m + r) * a.ldb + kb] - low[r];
    const __m256 fi =
        _mm256_fmadd_ps(sc1, _mm256_cvtepi32_ps(DotHalf256(u, a, m + r, kb, 4, -32 * high)), part[r]);
    const __m256 s = _mm256_mul_ps(d, _mm256_set1_ps(a.d[(m + r) * a.ldb + kb]));
    acc[r] = _mm256_fmadd_ps(s, fi, acc[r]);
  }
}

template <int R, bool kSwPrefetch>
void ColumnsQ6K(const uint8_t* w, const Q8Activations& a, int64_t m, int64_t kb0, int64_t kb1, int n_rows,
                float* out) {
  // Few activation rows take both halves per super-block in one pass, as ColumnsK does (in-process
  // A/B on a Q6_K DeepSeek-V2-Lite's decode, Zen 4 forced to these rows: 4 % faster than two passes);
  // more rows take two passes (the Q6_K body holds too many words for both halves in registers).
  auto half = [&](int hh, int64_t sb, __m256(&acc_hh)[2][R]) {
    __m256(&acc)[R] = acc_hh[hh];
    const uint8_t* c = w + static_cast<size_t>(sb) * kQ6KColumnBytes;
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 16 * hh)));
    for (int h = 0; h < 2; ++h) {
      const int64_t kb = sb * 8 + 4 * h;
      Q6KBlock256<R, 0>(c, hh, h, d, a, m, kb, acc);
      Q6KBlock256<R, 1>(c, hh, h, d, a, m, kb + 1, acc);
      Q6KBlock256<R, 2>(c, hh, h, d, a, m, kb + 2, acc);
      Q6KBlock256<R, 3>(c, hh, h, d, a, m, kb + 3, acc);
    }
  };
  SuperBlocks256<R, kQ6KColumnBytes, PrefetchAheadOf(DType::kQ6_K), kSwPrefetch>(w, kb0, kb1, n_rows, out,
                                                                                 half);
}

constexpr int kInterleavedMaxR = 8;
#endif

template <int R, DType kT, bool kSwPrefetch>
inline void Columns(const uint8_t* w, const Q8Activations& a, int64_t m, int64_t kb0, int64_t kb1, int n_rows,
                    float* out) {
  if constexpr (kT == DType::kQ4_K || kT == DType::kQ5_K) {
    ColumnsK<R, kT, kSwPrefetch>(w, a, m, kb0, kb1, n_rows, out);
  } else if constexpr (kT == DType::kQ6_K) {
    ColumnsQ6K<R, kSwPrefetch>(w, a, m, kb0, kb1, n_rows, out);
  } else {
    ColumnsInterleaved<R, kT, kSwPrefetch>(w, a, m, kb0, kb1, n_rows, out);
  }
}

template <DType kT, bool kSwPrefetch>
void TileInterleaved(const uint8_t* w, int n_rows, const Q8Activations& a, int64_t m0, int64_t m1,
                     int64_t kb0, int64_t kb1, float* out) {
  for (int64_t m = m0; m < m1;) {
    float* o = out + (m - m0) * kQuantDotMaxRows;
    const int64_t left = m1 - m;
    if (left >= kInterleavedMaxR) {
      Columns<kInterleavedMaxR, kT, kSwPrefetch>(w, a, m, kb0, kb1, n_rows, o);
      m += kInterleavedMaxR;
    } else if (kInterleavedMaxR > 4 && left >= 4) {
      Columns<4, kT, kSwPrefetch>(w, a, m, kb0, kb1, n_rows, o);
      m += 4;
    } else if (left >= 2) {
      Columns<2, kT, kSwPrefetch>(w, a, m, kb0, kb1, n_rows, o);
      m += 2;
    } else {
      Columns<1, kT, kSwPrefetch>(w, a, m, kb0, kb1, n_rows, o);
      m += 1;
    }
  }
}

}  // namespace
}  // namespace moerun
