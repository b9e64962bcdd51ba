// The SIMD bodies of kernels/row_ops.h, shared by row_ops_avx2.cc and row_ops_avx512.cc: each
// instantiates RowsAxpyT / RowsDotT with its vector trait (kernels/simd_f32_x86.h: F32x8, F32x16).
//
// A row is processed in chunks of kChunk elements: f32 rows are read in place, f16 / bf16 rows are
// widened into a buffer, block rows are dequantised into it with the f32 formulas of
// core/block_quant.cc (these TUs are compiled with -ffp-contract=off, so every dequantised value is
// bit-identical to DequantizeRow's). The accumulation orders are the ones row_ops.h documents.
// Not a public header: include only from the row_ops_*.cc ISA translation units.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/block_quant.h"
#include "kernels/row_ops.h"

namespace moerun::internal::row_ops {

constexpr int64_t kChunk = 256;  // a multiple of every block size and of 2 * W

inline uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Dequantises `n` elements (whole blocks) of type t starting at block pointer b into y, with the
// formulas and f32 operation order of core/block_quant.cc's DequantizeRow.
// 8 bytes (as int32 lanes, already the integer weight) times d, or d * q - m: the scalar formulas'
// f32 operations (int -> f32 exact, then one rounding per operation), 8 lanes at a time.
inline void Store8(__m128i bytes8, bool is_signed, __m256 d, float* y) {
  const __m256i q = is_signed ? _mm256_cvtepi8_epi32(bytes8) : _mm256_cvtepu8_epi32(bytes8);
  _mm256_storeu_ps(y, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
}

// A Q5_0 / Q5_1 block's q - offset as int8 (its qh word at `qh`, 16 nibble bytes at `qs`):
// elements 0..15 in *lo, 16..31 in *hi (the low / high nibbles of qs with bit j of qh as bit 4:
// each qh byte spread over 8 bytes, tested bit by bit).
inline void Q5Levels(const uint8_t* qh_bytes, const uint8_t* qs, int8_t offset, __m128i* lo, __m128i* hi) {
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, 4);
  const __m128i h = _mm_cvtsi32_si128(static_cast<int>(qh));
  const __m128i bit = _mm_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  auto fifth = [&](int64_t byte0) {                 // 16 where bit j of qh bytes byte0, byte0 + 1 is set
    constexpr int64_t kEvery = 0x0101010101010101;  // bytes 0..7 <- byte0, bytes 8..15 <- byte0 + 1
    const __m128i spread = _mm_shuffle_epi8(h, _mm_set_epi64x(kEvery * (byte0 + 1), kEvery * byte0));
    return _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(spread, bit), bit), _mm_set1_epi8(16));
  };
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i low4 = _mm_set1_epi8(0x0F), off = _mm_set1_epi8(offset);
  *lo = _mm_sub_epi8(_mm_or_si128(_mm_and_si128(x, low4), fifth(0)), off);
  *hi = _mm_sub_epi8(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(x, 4), low4), fifth(2)), off);
}
inline void Q5_0Levels(const uint8_t* b, __m128i* lo, __m128i* hi) { Q5Levels(b + 2, b + 6, 16, lo, hi); }

// 8 unsigned bytes q times d, minus m (K formats) or plus m (Q5_1): two f32 roundings, as the
// scalar formulas.
inline void Store8MinusMin(__m128i bytes8, __m256 d, __m256 m, float* y) {
  _mm256_storeu_ps(y, _mm256_sub_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes8))), m));
}
inline void Store8PlusMin(__m128i bytes8, __m256 d, __m256 m, float* y) {
  _mm256_storeu_ps(y, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes8)), d), m));
}

template <class V>
void DequantBlocks(DType t, const uint8_t* b, int64_t n, float* y) {
  const __m128i low4 = _mm_set1_epi8(0x0F);
  switch (t) {
    case DType::kQ8_0:
      for (int64_t i = 0; i < n; i += 32, b += 34, y += 32) {
        const __m256 d = _mm256_set1_ps(V::Half(LoadU16(b)));
        const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2));
        const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 18));
        Store8(lo, true, d, y);
        Store8(_mm_srli_si128(lo, 8), true, d, y + 8);
        Store8(hi, true, d, y + 16);
        Store8(_mm_srli_si128(hi, 8), true, d, y + 24);
      }
      return;
    case DType::kQ4_0:
      for (int64_t i = 0; i < n; i += 32, b += 18, y += 32) {
        const __m256 d = _mm256_set1_ps(V::Half(LoadU16(b)));
        const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2));
        const __m128i eight = _mm_set1_epi8(8);
        const __m128i lo = _mm_sub_epi8(_mm_and_si128(x, low4), eight);  // q - 8 in -8..7
        const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(x, 4), low4), eight);
        Store8(lo, true, d, y);
        Store8(_mm_srli_si128(lo, 8), true, d, y + 8);
        Store8(hi, true, d, y + 16);
        Store8(_mm_srli_si128(hi, 8), true, d, y + 24);
      }
      return;
    case DType::kQ4_K:
    case DType::kQ5_K: {  // d * sc * q - dmin * m, Q5_K's q with bit j of its qh bytes as bit 4
      const bool q5 = t == DType::kQ5_K;
      for (int64_t i = 0; i < n; i += 256, b += DTypeBlockBytes(t)) {
        const float d = V::Half(LoadU16(b)), dmin = V::Half(LoadU16(b + 2));
        const uint8_t* q = b + (q5 ? 48 : 16);
        for (int j = 0; j < 8; ++j, y += 32) {
          uint8_t sc, m;
          Q4KScaleMin(j, b + 4, &sc, &m);
          const __m256 d1 = _mm256_set1_ps(d * sc), m1 = _mm256_set1_ps(dmin * m);
          for (int h = 0; h < 2; ++h) {
            const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 32 * (j / 2) + 16 * h));
            __m128i v = _mm_and_si128((j & 1) ? _mm_srli_epi16(x, 4) : x, low4);
            if (q5) {
              const __m128i qh = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 16 + 16 * h));
              const __m128i fifth = _mm_and_si128(_mm_srl_epi16(qh, _mm_cvtsi32_si128(j)), _mm_set1_epi8(1));
              v = _mm_or_si128(v, _mm_slli_epi16(fifth, 4));
            }
            Store8MinusMin(v, d1, m1, y + 16 * h);
            Store8MinusMin(_mm_srli_si128(v, 8), d1, m1, y + 16 * h + 8);
          }
        }
      }
      return;
    }
    case DType::kQ5_0:  // (q - 16) * d, as DequantizeQ5_0
      for (int64_t i = 0; i < n; i += 32, b += 22, y += 32) {
        const __m256 d = _mm256_set1_ps(V::Half(LoadU16(b)));
        __m128i lo, hi;
        Q5_0Levels(b, &lo, &hi);
        Store8(lo, true, d, y);
        Store8(_mm_srli_si128(lo, 8), true, d, y + 8);
        Store8(hi, true, d, y + 16);
        Store8(_mm_srli_si128(hi, 8), true, d, y + 24);
      }
      return;
    case DType::kQ5_1:  // q * d + m, as DequantizeQ5_1
      for (int64_t i = 0; i < n; i += 32, b += 24, y += 32) {
        const __m256 d = _mm256_set1_ps(V::Half(LoadU16(b))), m = _mm256_set1_ps(V::Half(LoadU16(b + 2)));
        __m128i lo, hi;
        Q5Levels(b + 4, b + 8, 0, &lo, &hi);
        Store8PlusMin(lo, d, m, y);
        Store8PlusMin(_mm_srli_si128(lo, 8), d, m, y + 8);
        Store8PlusMin(hi, d, m, y + 16);
        Store8PlusMin(_mm_srli_si128(hi, 8), d, m, y + 24);
      }
      return;
    case DType::kQ6_K:  // rare for kv_b: the reference dequantiser (same values by definition)
      DequantizeRow(t, b, y, n);
      return;
    default:
      return;
  }
}

// Elements [c0, c0 + n) of `row` as f32: in place for f32 rows, else converted into buf.
template <class V>
const float* ChunkF32(DType t, const uint8_t* row, int64_t c0, int64_t n, float* buf) {
  switch (t) {
    case DType::kF32:
      return reinterpret_cast<const float*>(row) + c0;
    case DType::kF16:
      V::WidenF16(reinterpret_cast<const uint16_t*>(row) + c0, buf, n);
      return buf;
    case DType::kBF16:
      V::WidenBf16(reinterpret_cast<const uint16_t*>(row) + c0, buf, n);
      return buf;
    default:
      DequantBlocks<V>(t, row + DTypeRowBytes(t, c0), n, buf);
      return buf;
  }
}

// ---- Decode (one activation vector): block rows dequantised in registers ----
// A row of a "unit format" is read 32 elements (a unit: a Q8_0 / Q4_0 / Q5_0 / Q5_1 block, or 32
// elements of a Q4_K / Q5_K / Q6_K super-block) at a time, NR rows in lockstep, each unit as 32 / W
// f32 vectors holding exactly the values DequantizeRow gives (so the ops' documented orders are
// unchanged):
//   - integer levels widened to f32, then the reference's operations (q * d; q * d + m; d * q - m;
//     Q6_K: (d * sc) * q), one rounding each: AVX2 everywhere, AVX-512 for Q8_0 and Q6_K;
//   - AVX-512, 4- and 5-bit formats: the unit's 16 or 32 possible values are worked out once with
//     those same operations on the levels, and each element is looked up by its level (vpermps /
//     vpermt2ps), so the values are the same bits with a third of the work per element.
constexpr bool IsUnitFormat(DType t) {
  return t == DType::kQ8_0 || t == DType::kQ4_0 || t == DType::kQ5_0 || t == DType::kQ5_1 ||
         t == DType::kQ4_K || t == DType::kQ5_K || t == DType::kQ6_K;
}
constexpr bool IsKUnitFormat(DType t) { return t == DType::kQ4_K || t == DType::kQ5_K; }

// A Q4_K / Q5_K super-block's 8 sub-block constants, d * sc_j and dmin * m_j (f32, one rounding
// each, as DequantizeRow), from its 12 packed 6-bit scale bytes (core/block_quant.h's Q4KScaleMin,
// four sub-blocks per 32-bit word).
struct KScales {
  alignas(32) float d[8];
  alignas(32) float m[8];
};
inline KScales KScalesOf(const uint8_t* b) {
  uint32_t w[3];
  std::memcpy(w, b + 4, sizeof w);
  const uint32_t sc_lo = w[0] & 0x3f3f3f3fu, m_lo = w[1] & 0x3f3f3f3fu;
  const uint32_t sc_hi = (w[2] & 0x0f0f0f0fu) | (((w[0] >> 6) & 0x03030303u) << 4);
  const uint32_t m_hi = ((w[2] >> 4) & 0x0f0f0f0fu) | (((w[1] >> 6) & 0x03030303u) << 4);
  auto widen = [](uint32_t lo, uint32_t hi) {  // 8 bytes -> 8 f32 lanes (exact)
    const uint64_t v = lo | (static_cast<uint64_t>(hi) << 32);
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(v))));
  };
  KScales k;
  _mm256_store_ps(k.d, _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(LoadU16(b))), widen(sc_lo, sc_hi)));
  _mm256_store_ps(k.m, _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(LoadU16(b + 2))), widen(m_lo, m_hi)));
  return k;
}

// A unit's integer levels as int8 (elements 0..15, 16..31), for the AVX2 path.
struct Levels32 {
  __m128i q[2];
};

// Vector j (elements jW .. jW + W - 1) of a unit from its levels: q * d, q * d + m (Q5_1) or
// d * q - m (K formats), one rounding per operation.
template <class V, DType kT>
inline typename V::Vec LevelsVector(const Levels32& lv, int j, float d, float m) {
  constexpr int W = V::W;
  __m128i bytes = lv.q[j * W / 16];  // W = 8: the high 8 bytes for odd j
  if constexpr (W == 8) bytes = j % 2 == 0 ? bytes : _mm_srli_si128(bytes, 8);
  const typename V::Vec q = V::FromI8Lanes(bytes);
  if constexpr (IsKUnitFormat(kT)) return V::Sub(V::Mul(V::Set1(d), q), V::Set1(m));
  if constexpr (kT == DType::kQ5_1) return V::Add(V::Mul(q, V::Set1(d)), V::Set1(m));
  return V::Mul(q, V::Set1(d));
}

// Levels of a Q8_0 / Q4_0 / Q5_0 / Q5_1 block (Q4_0, Q5_0: less their offsets 8, 16).
template <DType kT>
inline Levels32 BlockLevels(const uint8_t* b) {
  Levels32 lv;
  if constexpr (kT == DType::kQ8_0) {
    lv.q[0] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2));
    lv.q[1] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 18));
  } else if constexpr (kT == DType::kQ4_0) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2)), low4 = _mm_set1_epi8(0x0F),
                  eight = _mm_set1_epi8(8);
    lv.q[0] = _mm_sub_epi8(_mm_and_si128(x, low4), eight);  // q - 8 in -8..7
    lv.q[1] = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(x, 4), low4), eight);
  } else if constexpr (kT == DType::kQ5_0) {
    Q5_0Levels(b, &lv.q[0], &lv.q[1]);
  } else {  // Q5_1
    Q5Levels(b + 4, b + 8, 0, &lv.q[0], &lv.q[1]);
  }
  return lv;
}

// Levels of sub-block j of a Q4_K / Q5_K super-block b.
template <DType kT>
inline Levels32 KLevels(const uint8_t* b, int j) {
  constexpr bool kQ5 = kT == DType::kQ5_K;
  const uint8_t* q = b + (kQ5 ? 48 : 16) + 32 * (j / 2);
  Levels32 lv;
  for (int h = 0; h < 2; ++h) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16 * h));
    __m128i v = _mm_and_si128((j & 1) ? _mm_srli_epi16(x, 4) : x, _mm_set1_epi8(0x0F));
    if constexpr (kQ5) {  // bit j of the qh bytes as bit 4
      const __m128i qh = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 16 + 16 * h));
      const __m128i fifth = _mm_and_si128(_mm_srl_epi16(qh, _mm_cvtsi32_si128(j)), _mm_set1_epi8(1));
      v = _mm_or_si128(v, _mm_slli_epi16(fifth, 4));
    }
    lv.q[h] = v;
  }
  return lv;
}

// Q6_K (ql[128], qh[64], 16 int8 scales, f16 d): unit u of a super-block is elements 32u ..
// 32u + 31, in 128-element half n = u / 4 at k = u % 4. Its levels q - 32 (int8): the low (k < 2)
// or high nibbles of ql[64n + 32 (k % 2) + l] with bits 2k, 2k + 1 of qh[32n + l] as bits 4, 5.
inline Levels32 Q6KLevels(const uint8_t* b, int u) {
  const int n = u / 4, k = u % 4;
  const uint8_t* ql = b + 64 * n + 32 * (k % 2);
  const uint8_t* qh = b + 128 + 32 * n;
  Levels32 lv;
  for (int h = 0; h < 2; ++h) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ql + 16 * h));
    const __m128i nib = _mm_and_si128(k >= 2 ? _mm_srli_epi16(x, 4) : x, _mm_set1_epi8(0x0F));
    const __m128i hb =
        _mm_and_si128(_mm_srl_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qh + 16 * h)),
                                    _mm_cvtsi32_si128(2 * k)),
                      _mm_set1_epi8(3));
    lv.q[h] = _mm_sub_epi8(_mm_or_si128(nib, _mm_slli_epi16(hb, 4)), _mm_set1_epi8(32));
  }
  return lv;
}
// A Q6_K super-block's 16 products d * sc_i (f32, one rounding each, as DequantizeRow).
inline void Q6KScales(const uint8_t* b, float (&ds)[16]) {
  const __m256 d = _mm256_set1_ps(_cvtsh_ss(LoadU16(b + 208)));
  for (int i = 0; i < 2; ++i) {
    const __m128i sc = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 192 + 8 * i));
    _mm256_storeu_ps(ds + 8 * i, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))));
  }
}
// Vector j of a Q6_K unit: (d * sc) * q, its 16-element half's scale ds[j * W / 16].
template <class V>
inline typename V::Vec Q6KVector(const Levels32& lv, int j, const float* ds) {
  constexpr int W = V::W;
  __m128i bytes = lv.q[j * W / 16];
  if constexpr (W == 8) bytes = j % 2 == 0 ? bytes : _mm_srli_si128(bytes, 8);
  return V::Mul(V::Set1(ds[j * W / 16]), V::FromI8Lanes(bytes));
}

#ifdef __AVX512F__
// AVX-512 lookups. Lanes hold a level in their low 4 (vpermps) or 5 (vpermt2ps) bits; higher bits
// are ignored by the permutes.
inline __m512 Iota16() { return _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
// 16 bytes at p widened to int32 lanes.
inline __m512i Bytes16(const uint8_t* p) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
// Elements 16h .. 16h + 15 of a Q5_0 / Q5_1 block: nibbles (low for h = 0, high for h = 1) with
// bit 16h + e of qh as bit 4.
inline __m512i Q5Index(__m512i bytes, uint32_t qh, int h) {
  const __m512i nib = h == 0 ? _mm512_and_si512(bytes, _mm512_set1_epi32(0x0F)) : _mm512_srli_epi32(bytes, 4);
  return _mm512_mask_or_epi32(nib, static_cast<__mmask16>(qh >> (16 * h)), nib, _mm512_set1_epi32(16));
}

template <DType kT>
inline void BlockVectors512(const uint8_t* b, __m512 (&w)[2]) {
  const __m512 d = _mm512_set1_ps(_cvtsh_ss(LoadU16(b)));
  if constexpr (kT == DType::kQ8_0) {
    for (int h = 0; h < 2; ++h) {
      const __m512i q =
          _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2 + 16 * h)));
      w[h] = _mm512_mul_ps(_mm512_cvtepi32_ps(q), d);
    }
  } else if constexpr (kT == DType::kQ4_0) {  // value of level q: (q - 8) * d
    const __m512 table = _mm512_mul_ps(_mm512_sub_ps(Iota16(), _mm512_set1_ps(8)), d);
    const __m512i x = Bytes16(b + 2);
    w[0] = _mm512_permutexvar_ps(x, table);
    w[1] = _mm512_permutexvar_ps(_mm512_srli_epi32(x, 4), table);
  } else {  // Q5_0: (q - 16) * d; Q5_1: q * d + m
    constexpr bool kQ51 = kT == DType::kQ5_1;
    uint32_t qh;
    std::memcpy(&qh, b + (kQ51 ? 4 : 2), 4);
    __m512 lo, hi;
    if constexpr (kQ51) {
      const __m512 m = _mm512_set1_ps(_cvtsh_ss(LoadU16(b + 2)));
      lo = _mm512_add_ps(_mm512_mul_ps(Iota16(), d), m);
      hi = _mm512_add_ps(_mm512_mul_ps(_mm512_add_ps(Iota16(), _mm512_set1_ps(16)), d), m);
    } else {
      lo = _mm512_mul_ps(_mm512_sub_ps(Iota16(), _mm512_set1_ps(16)), d);
      hi = _mm512_mul_ps(Iota16(), d);
    }
    const __m512i x = Bytes16(b + (kQ51 ? 8 : 6));
    for (int h = 0; h < 2; ++h) w[h] = _mm512_permutex2var_ps(lo, Q5Index(x, qh, h), hi);
  }
}

// Sub-block j of a Q4_K / Q5_K super-block b (constants k; qh: Q5_K's 32 qh bytes as int32 lanes).
template <DType kT>
inline void KVectors512(const uint8_t* b, const KScales& k, const __m512i (&qh)[2], int j, __m512 (&w)[2]) {
  const __m512 d = _mm512_set1_ps(k.d[j]), m = _mm512_set1_ps(k.m[j]);
  const __m512 lo = _mm512_sub_ps(_mm512_mul_ps(d, Iota16()), m);  // value of level q: d * q - m
  const uint8_t* q = b + (kT == DType::kQ5_K ? 48 : 16) + 32 * (j / 2);
  for (int h = 0; h < 2; ++h) {
    __m512i idx = Bytes16(q + 16 * h);
    if (j & 1) idx = _mm512_srli_epi32(idx, 4);
    if constexpr (kT == DType::kQ4_K) {
      w[h] = _mm512_permutexvar_ps(idx, lo);
    } else {
      const __m512 hi = _mm512_sub_ps(_mm512_mul_ps(d, _mm512_add_ps(Iota16(), _mm512_set1_ps(16))), m);
      // bit j of the qh byte as bit 4: (idx & 0x0F) | (qh shifted & ~0x0F), bits above 4 ignored.
      const __m512i bit = j <= 4 ? _mm512_sll_epi32(qh[h], _mm_cvtsi32_si128(4 - j))
                                 : _mm512_srl_epi32(qh[h], _mm_cvtsi32_si128(j - 4));
      idx = _mm512_ternarylogic_epi32(idx, bit, _mm512_set1_epi32(0x0F), 0xE4);
      w[h] = _mm512_permutex2var_ps(lo, idx, hi);
    }
  }
}
#endif

// Calls f(u, w) for every unit u of NR rows in order, w[r][j] being vector j of row r's unit u.
template <class V, DType kT, int NR, class F>
inline void ForEachUnit(const uint8_t* const (&rows)[NR], int64_t cols, F&& f) {
  using Vec = typename V::Vec;
  constexpr int kVecs = 32 / V::W;
  constexpr size_t kBytes = DTypeBlockBytes(kT);
  if constexpr (kT == DType::kQ6_K) {
    for (int64_t sb = 0; sb < cols / 256; ++sb) {
      const uint8_t* b[NR];
      alignas(32) float ds[NR][16];
      for (int r = 0; r < NR; ++r) {
        b[r] = rows[r] + static_cast<size_t>(sb) * kBytes;
        Q6KScales(b[r], ds[r]);
      }
#pragma GCC unroll 8
      for (int u = 0; u < 8; ++u) {
        Vec w[NR][kVecs];
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) {
          const Levels32 lv = Q6KLevels(b[r], u);
          const float* unit_ds = ds[r] + 8 * (u / 4) + 2 * (u % 4);  // sc of its two halves
#pragma GCC unroll 4
          for (int v = 0; v < kVecs; ++v) w[r][v] = Q6KVector<V>(lv, v, unit_ds);
        }
        f(sb * 8 + u, w);
      }
    }
  } else if constexpr (IsKUnitFormat(kT)) {
    for (int64_t sb = 0; sb < cols / 256; ++sb) {
      const uint8_t* b[NR];
      KScales k[NR];
#if defined(__AVX512F__)
      __m512i qh[NR][2];
#endif
      for (int r = 0; r < NR; ++r) {
        b[r] = rows[r] + static_cast<size_t>(sb) * kBytes;
        k[r] = KScalesOf(b[r]);
#if defined(__AVX512F__)
        if constexpr (V::W == 16 && kT == DType::kQ5_K) {
          qh[r][0] = Bytes16(b[r] + 16);
          qh[r][1] = Bytes16(b[r] + 32);
        }
#endif
      }
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        Vec w[NR][kVecs];
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) {
#if defined(__AVX512F__)
          if constexpr (V::W == 16) {
            KVectors512<kT>(b[r], k[r], qh[r], j, w[r]);
            continue;
          }
#endif
          const Levels32 lv = KLevels<kT>(b[r], j);
#pragma GCC unroll 4
          for (int v = 0; v < kVecs; ++v) w[r][v] = LevelsVector<V, kT>(lv, v, k[r].d[j], k[r].m[j]);
        }
        f(sb * 8 + j, w);
      }
    }
  } else {
    for (int64_t u = 0; u < cols / 32; ++u) {
      Vec w[NR][kVecs];
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) {
        const uint8_t* b = rows[r] + static_cast<size_t>(u) * kBytes;
#if defined(__AVX512F__)
        if constexpr (V::W == 16) {
          BlockVectors512<kT>(b, w[r]);
          continue;
        }
#endif
        const Levels32 lv = BlockLevels<kT>(b);
        const float d = V::Half(LoadU16(b)), m = kT == DType::kQ5_1 ? V::Half(LoadU16(b + 2)) : 0.0f;
#pragma GCC unroll 4
        for (int v = 0; v < kVecs; ++v) w[r][v] = LevelsVector<V, kT>(lv, v, d, m);
      }
      f(u, w);
    }
  }
}

// Rows in lockstep on the decode path: 4 (AVX-512) or 2 (AVX2, whose 16 registers hold fewer).
template <class V>
constexpr int kUnitRows = V::W == 16 ? 4 : 2;

// Asks for the bytes [p, end) + kRowPrefetchAhead ahead of their use: a head's rows are read once
// per token, from memory, in short rows the hardware prefetcher follows late.
constexpr size_t kRowPrefetchAhead = 2048;
inline void PrefetchAhead(const uint8_t* p, const uint8_t* end) {
  for (; p < end; p += 64) _mm_prefetch(reinterpret_cast<const char*>(p + kRowPrefetchAhead), _MM_HINT_T0);
}

// NR rows dotted with one vector: per row the same values and order as DotTileF32 on the
// dequantised row (vector j of the row into accumulator j % 2; a unit holds an even number of
// vectors). The rows' chains interleave for overlap.
template <class V, DType kT, int NR>
void DotRowsUnits(const uint8_t* const (&rows)[NR], int64_t cols, const float* x, float* y) {
  constexpr int W = V::W;
  typename V::Vec acc[NR][2];
  for (auto& a : acc) a[0] = a[1] = V::Zero();
  ForEachUnit<V, kT, NR>(rows, cols, [&](int64_t u, const typename V::Vec(&w)[NR][32 / W]) {
#pragma GCC unroll 4
    for (int j = 0; j < 32 / W; ++j) {
      const typename V::Vec xv = V::Load(x + 32 * u + j * W);
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) acc[r][j & 1] = V::Fma(w[r][j], xv, acc[r][j & 1]);
    }
  });
  for (int r = 0; r < NR; ++r) y[r] = V::Reduce(V::Add(acc[r][0], acc[r][1]));
}

// RowsDot of one vector on a unit format.
template <class V, DType kT>
void DotUnitsOneVector(const StoredRowsView& w, const float* x, float* y) {
  constexpr int kRows = kUnitRows<V>;
  const auto* base = static_cast<const uint8_t*>(w.data);
  auto row = [&](int64_t i) { return base + static_cast<size_t>(i) * w.row_stride; };
  int64_t i = 0;
  for (; i + kRows <= w.rows; i += kRows) {
    const uint8_t* rows[kRows];
    for (int r = 0; r < kRows; ++r) rows[r] = row(i + r);
    PrefetchAhead(row(i), row(i + kRows));
    DotRowsUnits<V, kT, kRows>(rows, w.cols, x, y + i);
  }
  for (; i < w.rows; ++i) {
    const uint8_t* const rows[1] = {row(i)};
    DotRowsUnits<V, kT, 1>(rows, w.cols, x, y + i);
  }
}

// RowsAxpy of one vector on a unit format: y[c] gets one fma per row in row order, as AxpyChunk
// (NR rows per pass over y; the grouping does not change a chain).
template <class V, DType kT, int NR>
void AxpyRowsUnits(const StoredRowsView& w, int64_t i0, const float* x, float* y) {
  constexpr int W = V::W;
  const uint8_t* rows[NR];
  typename V::Vec va[NR];
  for (int k = 0; k < NR; ++k) {
    rows[k] = static_cast<const uint8_t*>(w.data) + static_cast<size_t>(i0 + k) * w.row_stride;
    va[k] = V::Set1(x[i0 + k]);
  }
  ForEachUnit<V, kT, NR>(rows, w.cols, [&](int64_t u, const typename V::Vec(&wv)[NR][32 / W]) {
#pragma GCC unroll 4
    for (int j = 0; j < 32 / W; ++j) {
      float* yc = y + 32 * u + j * W;
      typename V::Vec acc = V::Load(yc);
#pragma GCC unroll 4
      for (int k = 0; k < NR; ++k) acc = V::Fma(va[k], wv[k][j], acc);
      V::Store(yc, acc);
    }
  });
}

template <class V, DType kT>
void AxpyUnitsOneVector(const StoredRowsView& w, const float* x, float* y) {
  constexpr int kRows = kUnitRows<V>;
  const auto* base = static_cast<const uint8_t*>(w.data);
  int64_t i = 0;
  for (; i + kRows <= w.rows; i += kRows) {
    PrefetchAhead(base + static_cast<size_t>(i) * w.row_stride,
                  base + static_cast<size_t>(i + kRows) * w.row_stride);
    AxpyRowsUnits<V, kT, kRows>(w, i, x, y);
  }
  for (; i < w.rows; ++i) AxpyRowsUnits<V, kT, 1>(w, i, x, y);
}

// Calls f.template operator()<kT>() with t as a template argument (t a unit format).
template <class F>
void WithUnitFormat(DType t, F&& f) {
  switch (t) {
    case DType::kQ8_0:
      return f.template operator()<DType::kQ8_0>();
    case DType::kQ4_0:
      return f.template operator()<DType::kQ4_0>();
    case DType::kQ5_0:
      return f.template operator()<DType::kQ5_0>();
    case DType::kQ5_1:
      return f.template operator()<DType::kQ5_1>();
    case DType::kQ4_K:
      return f.template operator()<DType::kQ4_K>();
    case DType::kQ5_K:
      return f.template operator()<DType::kQ5_K>();
    default:
      return f.template operator()<DType::kQ6_K>();
  }
}

// y[0, n) = fma chain over NR rows (wf[k], coefficient a[k]) in row order.
template <class V, int NR>
void AxpyChunk(const float* const* wf, const float* a, int64_t n, float* y) {
  constexpr int W = V::W;
  typename V::Vec va[NR];
  for (int k = 0; k < NR; ++k) va[k] = V::Set1(a[k]);
  int64_t c = 0;
  for (; c + W <= n; c += W) {
    typename V::Vec acc = V::Load(y + c);
    for (int k = 0; k < NR; ++k) acc = V::Fma(va[k], V::Load(wf[k] + c), acc);
    V::Store(y + c, acc);
  }
  if (c < n) {  // zero-padded tail (dense rows of any length)
    alignas(64) float ty[W] = {}, tw[W] = {};
    const int64_t m = n - c;
    std::copy(y + c, y + n, ty);
    typename V::Vec acc = V::Load(ty);
    for (int k = 0; k < NR; ++k) {
      std::copy(wf[k] + c, wf[k] + n, tw);
      acc = V::Fma(va[k], V::Load(tw), acc);
    }
    V::Store(ty, acc);
    std::copy(ty, ty + m, y + c);
  }
}

template <class V, int NR>
void AxpyRows(const StoredRowsView& w, int64_t i0, const float* x, float* y, RowBatch batch) {
  alignas(64) float buf[NR][kChunk];
  const float* wf[NR];
  for (int64_t c0 = 0; c0 < w.cols; c0 += kChunk) {
    const int64_t n = std::min(kChunk, w.cols - c0);
    for (int k = 0; k < NR; ++k) {
      const auto* row = static_cast<const uint8_t*>(w.data) + static_cast<size_t>(i0 + k) * w.row_stride;
      wf[k] = ChunkF32<V>(w.dtype, row, c0, n, buf[k]);
    }
    for (int64_t v = 0; v < batch.m; ++v)
      AxpyChunk<V, NR>(wf, x + v * batch.ldx + i0, n, y + v * batch.ldy + c0);
  }
}

template <class V>
void RowsAxpyT(const StoredRowsView& w, const float* x, float* y, RowBatch batch) {
  if (batch.m == 1 && IsUnitFormat(w.dtype)) {  // decode: dequantised in registers
    WithUnitFormat(w.dtype, [&]<DType kT>() { AxpyUnitsOneVector<V, kT>(w, x, y); });
    return;
  }
  int64_t i = 0;
  for (; i + 4 <= w.rows; i += 4) AxpyRows<V, 4>(w, i, x, y, batch);
  for (; i < w.rows; ++i) AxpyRows<V, 1>(w, i, x, y, batch);
}

// RR f32 rows (wf[r]: [cols]) dotted with RT vectors (x[t]) into y[r][t], each of the RR x RT
// results in the documented order whatever RR and RT: chunks of kChunk, vectors alternating
// between two accumulators (each chunk starts with the first), the last partial vector
// zero-padded, then the two accumulators added and reduced. Every loaded weight vector serves RT
// vectors and every loaded activation vector RR rows.
template <class V, int RR, int RT>
void DotTileF32(const float* const (&wf)[RR], int64_t cols, const float* const (&x)[RT], float (&y)[RR][RT]) {
  constexpr int W = V::W;
  typename V::Vec acc[2][RR][RT];
  for (auto& a : acc)
    for (auto& ar : a)
      for (auto& v : ar) v = V::Zero();
  auto step = [&](int k, int64_t c) {  // one vector of every row and vector into accumulator k
    typename V::Vec w[RR];
    for (int r = 0; r < RR; ++r) w[r] = V::Load(wf[r] + c);
    for (int t = 0; t < RT; ++t) {
      const typename V::Vec xv = V::Load(x[t] + c);
      for (int r = 0; r < RR; ++r) acc[k][r][t] = V::Fma(w[r], xv, acc[k][r][t]);
    }
  };
  for (int64_t c0 = 0; c0 < cols; c0 += kChunk) {  // each chunk starts at an even vector index
    const int64_t n = std::min(kChunk, cols - c0);
    int64_t c = 0;
    for (; c + 2 * W <= n; c += 2 * W) {
      step(0, c0 + c);
      step(1, c0 + c + W);
    }
    int k = 0;  // the accumulator of the next vector
    if (c + W <= n) {
      step(0, c0 + c);
      c += W;
      k = 1;
    }
    if (c < n) {  // zero-padded last vector
      for (int r = 0; r < RR; ++r) {
        alignas(64) float tw[W] = {};
        std::copy(wf[r] + c0 + c, wf[r] + c0 + n, tw);
        for (int t = 0; t < RT; ++t) {
          alignas(64) float tx[W] = {};
          std::copy(x[t] + c0 + c, x[t] + c0 + n, tx);
          acc[k][r][t] = V::Fma(V::Load(tw), V::Load(tx), acc[k][r][t]);
        }
      }
    }
  }
  for (int r = 0; r < RR; ++r)
    for (int t = 0; t < RT; ++t) y[r][t] = V::Reduce(V::Add(acc[0][r][t], acc[1][r][t]));
}

// Rows i .. i + RR - 1 (f32 in wf[r]) against every vector of the batch: kTokens at a time, then
// the rest in smaller tiles (4 on AVX-512, 2, 1); every result gets the same operations whatever
// its tile.
template <class V, int RR>
void DotRowsBatch(const float* const (&wf)[RR], int64_t cols, int64_t i, const float* x, float* y,
                  RowBatch batch) {
  constexpr int kTokens = V::W == 8 ? 3 : 6;  // 2 x RR x kTokens accumulators fit the registers
  int64_t v = 0;
  auto tiles = [&]<int kT>() {  // vectors v, v + 1, .. kT at a time while kT are left
    for (; v + kT <= batch.m; v += kT) {
      const float* xs[kT];
      for (int t = 0; t < kT; ++t) xs[t] = x + (v + t) * batch.ldx;
      float out[RR][kT];
      DotTileF32<V, RR, kT>(wf, cols, xs, out);
      for (int r = 0; r < RR; ++r)
        for (int t = 0; t < kT; ++t) y[(v + t) * batch.ldy + i + r] = out[r][t];
    }
  };
  tiles.template operator()<kTokens>();
  if constexpr (kTokens > 4) tiles.template operator()<4>();
  tiles.template operator()<2>();
  tiles.template operator()<1>();
}

template <class V>
void RowsDotT(const StoredRowsView& w, const float* x, float* y, RowBatch batch) {
  if (batch.m == 1 && IsUnitFormat(w.dtype)) {  // decode: dequantised in registers
    WithUnitFormat(w.dtype, [&]<DType kT>() { DotUnitsOneVector<V, kT>(w, x, y); });
    return;
  }
  constexpr int kRows = 2;  // rows dequantised together, each loaded vector serving both
  thread_local std::vector<float> buf;
  buf.resize(static_cast<size_t>(kRows * w.cols));
  // Row i as f32: in place (f32 rows) or dequantised into buf slot s.
  auto row_f32 = [&](int64_t i, int s) -> const float* {
    const auto* row = static_cast<const uint8_t*>(w.data) + static_cast<size_t>(i) * w.row_stride;
    if (w.dtype == DType::kF32) return reinterpret_cast<const float*>(row);
    float* out = buf.data() + s * w.cols;
    for (int64_t c0 = 0; c0 < w.cols; c0 += kChunk) {
      const int64_t n = std::min(kChunk, w.cols - c0);
      const float* chunk = ChunkF32<V>(w.dtype, row, c0, n, out + c0);
      if (chunk != out + c0) std::copy(chunk, chunk + n, out + c0);
    }
    return out;
  };
  int64_t i = 0;
  for (; i + kRows <= w.rows; i += kRows) {
    const float* const wf[kRows] = {row_f32(i, 0), row_f32(i + 1, 1)};
    DotRowsBatch<V, kRows>(wf, w.cols, i, x, y, batch);
  }
  for (; i < w.rows; ++i) {
    const float* const wf[1] = {row_f32(i, 0)};
    DotRowsBatch<V, 1>(wf, w.cols, i, x, y, batch);
  }
}

}  // namespace moerun::internal::row_ops
