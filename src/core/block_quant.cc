// Reference (scalar) quantisers for the GGUF block formats; see core/block_quant.h. About 530 lines:
// one ggml-faithful quantiser and dequantiser per format (dequantiser only for the load-only
// types), kept together for side-by-side review.
//
// The float arithmetic below deliberately mirrors ggml's reference code operation by operation
// (same association, no fused multiply-add: this file is compiled with -ffp-contract=off), because
// any change of rounding changes the chosen integers and therefore the bytes.
#include "core/block_quant.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

namespace moerun {
namespace {

constexpr int kQK = 256;  // elements per K-quant super-block
constexpr float kGroupMaxEps = 1e-15f;

// Round to nearest, ties to even, for |f| <= 2^22: adding 1.5 * 2^23 puts the integer part in the
// low mantissa bits (the f32 addition does the rounding).
inline int NearestInt(float f) {
  const float v = f + 12582912.f;
  int32_t i;
  std::memcpy(&i, &v, sizeof i);
  return (i & 0x007fffff) - 0x00400000;
}

inline void StoreF16(uint8_t* p, float f) {
  const uint16_t h = F32ToF16(f);
  std::memcpy(p, &h, 2);
}
inline float LoadF16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return F16ToF32(h);
}

// ---- Q8_0: [f16 d][int8 q[32]], x = d * q.
void QuantizeQ8_0(const float* x, uint8_t* y) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  StoreF16(y, d);
  for (int j = 0; j < 32; ++j) {
    const float v = x[j] * id;
    y[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(v)));  // ties away from zero
  }
}

// The element of x[0, 32) with the largest |x|, with its sign (the first one on ties): Q4_0's and
// Q5_0's scale comes from it.
float SignedAbsMax32(const float* x) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < 32; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

// ---- Q4_0: [f16 d][16 bytes], byte j = q[j] | q[j + 16] << 4, x = d * (q - 8).
void QuantizeQ4_0(const float* x, uint8_t* y) {
  const float d = SignedAbsMax32(x) / -8;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  StoreF16(y, d);
  for (int j = 0; j < 16; ++j) {
    const float x0 = x[j] * id;
    const float x1 = x[16 + j] * id;
    // Truncation toward zero of x + 8.5 (always >= 0.5 here), then clamp to 15.
    const uint8_t q0 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 8.5f))));
    const uint8_t q1 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 8.5f))));
    y[2 + j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

// ---- Q5_0: [f16 d][qh u32 LE][16 bytes]; element j (< 16): low nibble of byte j and bit j of qh,
// element j + 16: high nibble and bit j + 16; x = d * (q - 16). Q4_0's algorithm with 5 bits.
void QuantizeQ5_0(const float* x, uint8_t* y) {
  const float d = SignedAbsMax32(x) / -16;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  StoreF16(y, d);
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const float x0 = x[j] * id;
    const float x1 = x[16 + j] * id;
    // Truncation toward zero of x + 16.5 (always >= 0.5 here), then clamp to 31.
    const auto q0 = static_cast<uint32_t>(std::min(31, static_cast<int>(static_cast<int8_t>(x0 + 16.5f))));
    const auto q1 = static_cast<uint32_t>(std::min(31, static_cast<int>(static_cast<int8_t>(x1 + 16.5f))));
    y[6 + j] = static_cast<uint8_t>((q0 & 0x0F) | ((q1 & 0x0F) << 4));
    qh |= ((q0 & 0x10u) >> 4) << j;
    qh |= ((q1 & 0x10u) >> 4) << (j + 16);
  }
  std::memcpy(y + 2, &qh, 4);
}

// ---- Q5_1: [f16 d][f16 m][qh u32 LE][16 bytes], Q5_0's bit placement; x = d * q + m with
// m = the block's minimum and d = (max - min) / 31 (ggml's quantize_row_q5_1_ref).
void QuantizeQ5_1(const float* x, uint8_t* y) {
  float min = x[0], max = x[0];
  for (int j = 1; j < 32; ++j) {
    min = std::min(min, x[j]);
    max = std::max(max, x[j]);
  }
  const float d = (max - min) / 31;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  StoreF16(y, d);
  StoreF16(y + 2, min);
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    // Truncation of (x - min) / d + 0.5 (in [0.5, 31.5) here, so no clamp), as ggml rounds.
    const auto q0 = static_cast<uint32_t>((x[j] - min) * id + 0.5f);  // NOLINT(bugprone-incorrect-roundings)
    const auto q1 =
        static_cast<uint32_t>((x[16 + j] - min) * id + 0.5f);  // NOLINT(bugprone-incorrect-roundings)
    y[8 + j] = static_cast<uint8_t>((q0 & 0x0F) | ((q1 & 0x0F) << 4));
    qh |= ((q0 & 0x10u) >> 4) << j;
    qh |= ((q1 & 0x10u) >> 4) << (j + 16);
  }
  std::memcpy(y + 4, &qh, 4);
}

// Weighted asymmetric fit of n values to L in [0, nmax] with x ~ scale * L - the_min, searching
// nstep + 1 candidate scales around nmax / (max - min) (ggml's make_qkx2_quants, use_mad false).
float MakeQkx2Quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                     uint8_t* Laux, float rmin, float rdelta, int nstep) {
  float min = x[0];
  float max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = NearestInt(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    float diff = scale * L[i] + min - x[i];
    diff = diff * diff;
    best_error += weights[i] * diff;
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = NearestInt(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = diff * diff;
        cur_error += weights[i] * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// Symmetric fit of n values to L in [0, 2 nmax) (stored with offset nmax), weights x^2, trying 19
// scales around -nmax / max (ggml's make_qx_quants with rmse_type 1 and no importance weights).
float MakeQxQuants(int n, int nmax, const float* x, int8_t* L) {
  float max = 0;
  float amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = NearestInt(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = NearestInt(iscale * x[i]);
      l = std::max(-nmax, std::min(nmax - 1, l));
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = NearestInt(iscale * x[i]);
        L[i] = static_cast<int8_t>(nmax + std::max(-nmax, std::min(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Q4_K and Q5_K share their fit (ggml's quantize_row_q4_K_ref / q5_K_ref): per 32-element
// sub-block a weighted asymmetric fit of the levels to [0, nmax], the 6-bit scales and mins packed
// into y[4, 16) with d and dmin at y[0, 4), then every level re-rounded against the stored scales
// into L[0, 256).
void FitKQuantLevels(const float* x, int nmax, float rmin, int nstep, uint8_t* y, uint8_t* L) {
  uint8_t Laux[32];
  float weights[32];
  float mins[8];
  float scales[8];
  float max_scale = 0;
  float max_min = 0;
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = MakeQkx2Quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  uint8_t* sc = y + 4;
  std::memset(sc, 0, 12);
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  for (int j = 0; j < 8; ++j) {
    // ggml stores nearest_int into a uint8_t (wrapping) before the clamp; do the same.
    uint8_t ls = static_cast<uint8_t>(NearestInt(inv_scale * scales[j]));
    uint8_t lm = static_cast<uint8_t>(NearestInt(inv_min * mins[j]));
    ls = std::min<uint8_t>(63, ls);
    lm = std::min<uint8_t>(63, lm);
    if (j < 4) {
      sc[j] = ls;
      sc[j + 4] = lm;
    } else {
      sc[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      sc[j - 4] = static_cast<uint8_t>(sc[j - 4] | ((ls >> 4) << 6));
      sc[j] = static_cast<uint8_t>(sc[j] | ((lm >> 4) << 6));
    }
  }
  StoreF16(y, max_scale / 63.f);
  StoreF16(y + 2, max_min / 63.f);
  const float d_all = LoadF16(y);
  const float dmin_all = LoadF16(y + 2);
  for (int j = 0; j < 8; ++j) {
    uint8_t s, m;
    Q4KScaleMin(j, sc, &s, &m);
    const float d = d_all * s;
    if (d == 0.0f) continue;
    const float dm = dmin_all * m;
    for (int ii = 0; ii < 32; ++ii) {
      const int l = NearestInt((x[32 * j + ii] + dm) / d);
      L[32 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    }
  }
}

// ---- Q4_K: [f16 d][f16 dmin][12 B scales/mins][128 B nibbles]; byte group g (32 bytes) holds
// sub-block 2g in its low nibbles and 2g + 1 in its high nibbles.
void QuantizeQ4_K(const float* x, uint8_t* y) {
  uint8_t L[kQK];
  FitKQuantLevels(x, 15, -1.f, 20, y, L);
  uint8_t* q = y + 16;
  for (int j = 0; j < kQK; j += 64) {
    for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
    q += 32;
  }
}

// ---- Q5_K: [f16 d][f16 dmin][12 B scales/mins][qh 32 B][qs 128 B]: Q4_K's nibbles, and the fifth
// bit of element l of sub-block s in bit s of qh[l].
void QuantizeQ5_K(const float* x, uint8_t* y) {
  uint8_t L[kQK];
  FitKQuantLevels(x, 31, -0.5f, 15, y, L);
  uint8_t* qh = y + 16;
  uint8_t* q = y + 48;
  std::memset(qh, 0, 32);
  for (int s = 0; s < 8; s += 2) {
    for (int l = 0; l < 32; ++l) {
      const int lo = L[32 * s + l], hi = L[32 * s + 32 + l];
      qh[l] = static_cast<uint8_t>(qh[l] | ((lo >> 4) << s) | ((hi >> 4) << (s + 1)));
      q[l] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
    }
    q += 32;
  }
}

// ---- Q6_K: [ql 128 B][qh 64 B][int8 scales 16][f16 d].
void QuantizeQ6_K(const float* x, uint8_t* y) {
  int8_t L[kQK];
  float scales[16];
  float max_scale = 0;
  float max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    const float scale = MakeQxQuants(16, 32, x + 16 * ib, L + 16 * ib);
    scales[ib] = scale;
    const float abs_scale = std::fabs(scale);
    if (abs_scale > max_abs_scale) {
      max_abs_scale = abs_scale;
      max_scale = scale;
    }
  }
  if (max_abs_scale < kGroupMaxEps) {
    std::memset(y, 0, 210);
    return;
  }
  uint8_t* ql = y;
  uint8_t* qh = y + 128;
  auto* sc = reinterpret_cast<int8_t*>(y + 192);
  const float iscale = -128.f / max_scale;
  StoreF16(y + 208, 1 / iscale);
  for (int ib = 0; ib < 16; ++ib)
    sc[ib] = static_cast<int8_t>(std::min(127, NearestInt(iscale * scales[ib])));
  const float d_all = LoadF16(y + 208);
  for (int j = 0; j < 16; ++j) {
    const float d = d_all * sc[j];
    if (d == 0.0f) continue;
    for (int ii = 0; ii < 16; ++ii) {
      int l = NearestInt(x[16 * j + ii] / d);
      l = std::max(-32, std::min(31, l));
      L[16 * j + ii] = static_cast<int8_t>(l + 32);
    }
  }
  for (int j = 0; j < kQK; j += 128) {
    for (int l = 0; l < 32; ++l) {
      const int q1 = L[j + l] & 0xF;
      const int q2 = L[j + l + 32] & 0xF;
      const int q3 = L[j + l + 64] & 0xF;
      const int q4 = L[j + l + 96] & 0xF;
      ql[l] = static_cast<uint8_t>(q1 | (q3 << 4));
      ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
      qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                   ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
    }
    ql += 64;
    qh += 32;
  }
}

void DequantizeQ8_0(const uint8_t* b, float* y) {
  const float d = LoadF16(b);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<int8_t>(b[2 + j]) * d;
}

void DequantizeQ4_0(const uint8_t* b, float* y) {
  const float d = LoadF16(b);
  for (int j = 0; j < 16; ++j) {
    y[j] = ((b[2 + j] & 0x0F) - 8) * d;
    y[j + 16] = ((b[2 + j] >> 4) - 8) * d;
  }
}

void DequantizeQ4_K(const uint8_t* b, float* y) {
  const float d = LoadF16(b);
  const float min = LoadF16(b + 2);
  const uint8_t* q = b + 16;
  for (int j = 0; j < 8; j += 2) {
    uint8_t sc, m;
    Q4KScaleMin(j, b + 4, &sc, &m);
    const float d1 = d * sc, m1 = min * m;
    Q4KScaleMin(j + 1, b + 4, &sc, &m);
    const float d2 = d * sc, m2 = min * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
    q += 32;
  }
}

void DequantizeQ6_K(const uint8_t* b, float* y) {
  const float d = LoadF16(b + 208);
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  for (int n = 0; n < kQK; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * sc[is] * q1;
      y[l + 32] = d * sc[is + 2] * q2;
      y[l + 64] = d * sc[is + 4] * q3;
      y[l + 96] = d * sc[is + 6] * q4;
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

// ---- Dequantisers of Q5_0 and the load-only formats (docs/formats.md). Same f32 operations, in the
// same order, as ggml's dequantize_row_*: an integer level times an f32 scale, then the min added
// or subtracted.

// Q5_0: [f16 d][qh: 32 fifth bits, u32 LE][16 B nibbles]; element j (< 16): low nibble of byte j
// and bit j of qh; element j + 16: high nibble of byte j and bit j + 16. x = d * (q - 16).
void DequantizeQ5_0(const uint8_t* b, float* y) {
  const float d = LoadF16(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  for (int e = 0; e < 32; ++e) y[e] = static_cast<float>(Q5Level(qh, b + 6, e) - 16) * d;
}

// Q5_1: [f16 d][f16 m][qh u32][16 B nibbles], the Q5_0 bit placement; x = d * q + m.
void DequantizeQ5_1(const uint8_t* b, float* y) {
  const float d = LoadF16(b);
  const float m = LoadF16(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  for (int e = 0; e < 32; ++e) y[e] = static_cast<float>(Q5Level(qh, b + 8, e)) * d + m;
}

// Q5_K: [f16 d][f16 dmin][12 B Q4_K scales/mins][qh 32 B][qs 128 B]. Sub-block s (32 elements):
// nibbles as Q4_K (byte group s / 2, low nibbles for even s), fifth bit = bit s of qh[l].
// x = d * sc_s * q - dmin * m_s, q in 0..31.
void DequantizeQ5_K(const uint8_t* b, float* y) {
  const float d = LoadF16(b);
  const float dmin = LoadF16(b + 2);
  const uint8_t* qh = b + 16;
  for (int s = 0; s < 8; ++s) {
    uint8_t sc, m;
    Q4KScaleMin(s, b + 4, &sc, &m);
    const float ds = d * sc, ms = dmin * m;
    const uint8_t* qs = b + 48 + 32 * (s / 2);
    for (int l = 0; l < 32; ++l) {
      const int low = (s % 2 == 0) ? (qs[l] & 0x0F) : (qs[l] >> 4);
      const int q = low + (((qh[l] >> s) & 1) << 4);
      *y++ = ds * static_cast<float>(q) - ms;
    }
  }
}

// Q3_K scale of sub-block s (0..15), 6 bits stored with an offset of 32: the low 4 bits are the
// low nibble of byte s (s < 8) or the high nibble of byte s - 8; the high 2 bits are bits
// 2 (s / 4), +1 of byte 8 + s % 4.
inline int Q3KScale(const uint8_t* sc, int s) {
  const int low = s < 8 ? (sc[s] & 0x0F) : (sc[s - 8] >> 4);
  const int high = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
  return (low | (high << 4)) - 32;
}

// Q3_K: [hmask 32 B][qs 64 B][12 B scales][f16 d]. Element e = 128 h + 32 p + 16 k + l (half h,
// pair p 0..3, k 0/1, l 0..15): 2 low bits = bits 2p, 2p+1 of qs[32 h + 16 k + l]; the third bit
// is bit 4h + p of hmask[16 k + l], and a CLEAR bit subtracts 4: q in -4..3. Sub-block (16
// elements) 8 h + 2 p + k. x = d * scale * q.
void DequantizeQ3_K(const uint8_t* b, float* y) {
  const uint8_t* hm = b;
  const uint8_t* qs = b + 32;
  const uint8_t* sc = b + 96;
  const float d = LoadF16(b + 108);
  for (int h = 0; h < 2; ++h) {
    for (int p = 0; p < 4; ++p) {
      for (int k = 0; k < 2; ++k) {
        const float dl = d * static_cast<float>(Q3KScale(sc, 8 * h + 2 * p + k));
        for (int l = 0; l < 16; ++l) {
          const int i = 16 * k + l;
          const int low = (qs[32 * h + i] >> (2 * p)) & 3;
          const int q = low - (((hm[i] >> (4 * h + p)) & 1) ? 0 : 4);
          *y++ = dl * static_cast<float>(q);
        }
      }
    }
  }
}

// Q2_K: [16 B scales: low nibble scale, high nibble min][qs 64 B][f16 d][f16 dmin]. Element order
// as Q3_K (2 bits 2p, 2p+1 of qs[32 h + 16 k + l], sub-block 8 h + 2 p + k);
// x = (d * scale) * q - dmin * min, q in 0..3.
void DequantizeQ2_K(const uint8_t* b, float* y) {
  const uint8_t* sc = b;
  const uint8_t* qs = b + 16;
  const float d = LoadF16(b + 80);
  const float dmin = LoadF16(b + 82);
  for (int h = 0; h < 2; ++h) {
    for (int p = 0; p < 4; ++p) {
      for (int k = 0; k < 2; ++k) {
        const uint8_t s = sc[8 * h + 2 * p + k];
        const float dl = d * static_cast<float>(s & 0x0F);
        const float ml = dmin * static_cast<float>(s >> 4);
        for (int l = 0; l < 16; ++l) {
          const int q = (qs[32 * h + 16 * k + l] >> (2 * p)) & 3;
          *y++ = dl * static_cast<float>(q) - ml;
        }
      }
    }
  }
}

// IQ4_NL: [f16 d][16 B nibbles], Q4_0's placement; x = d * kIq4NlValues[q].
constexpr int8_t kIq4NlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};
// One IQ4_NL block's values: d * table[q] for the 16 bytes `qs` (elements j, j + 16 in byte j).
void DequantizeIQ4Nibbles(float d, const uint8_t* qs, float* y) {
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>(kIq4NlValues[qs[j] & 0x0F]);
    y[j + 16] = d * static_cast<float>(kIq4NlValues[qs[j] >> 4]);
  }
}
void DequantizeIQ4_NL(const uint8_t* b, float* y) { DequantizeIQ4Nibbles(LoadF16(b), b + 2, y); }

// IQ4_XS: [f16 d][u16 scales_h][4 B scales_l][128 B qs]. Sub-block s (elements 32s..32s+31) has the
// 6-bit scale ls = nibble s % 2 of scales_l[s / 2] | bits 2s, 2s+1 of scales_h << 4, and is the
// IQ4_NL block of scale d * (ls - 32) over qs bytes 16s..16s+15.
void DequantizeIQ4_XS(const uint8_t* b, float* y) {
  const float d = LoadF16(b);
  const unsigned scales_h = b[2] | (unsigned{b[3]} << 8);
  for (int s = 0; s < 8; ++s) {
    const int ls = ((b[4 + s / 2] >> (4 * (s % 2))) & 0x0F) | (((scales_h >> (2 * s)) & 3) << 4);
    DequantizeIQ4Nibbles(d * static_cast<float>(ls - 32), b + 8 + 16 * s, y + 32 * s);
  }
}

}  // namespace

void QuantizeRow(DType t, const float* x, int64_t n, void* dst) {
  assert(IsBlockDType(t) && !IsLoadOnlyDType(t) && n % DTypeBlockSize(t) == 0);
  const int64_t bs = DTypeBlockSize(t);
  const size_t bb = DTypeBlockBytes(t);
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < n / bs; ++i) {
    const float* xb = x + i * bs;
    uint8_t* yb = out + static_cast<size_t>(i) * bb;
    switch (t) {
      case DType::kQ8_0:
        QuantizeQ8_0(xb, yb);
        break;
      case DType::kQ4_0:
        QuantizeQ4_0(xb, yb);
        break;
      case DType::kQ5_0:
        QuantizeQ5_0(xb, yb);
        break;
      case DType::kQ5_1:
        QuantizeQ5_1(xb, yb);
        break;
      case DType::kQ4_K:
        QuantizeQ4_K(xb, yb);
        break;
      case DType::kQ5_K:
        QuantizeQ5_K(xb, yb);
        break;
      case DType::kQ6_K:
        QuantizeQ6_K(xb, yb);
        break;
      default:
        assert(false && "QuantizeRow: not a block type");
    }
  }
}

void DequantizeRow(DType t, const void* src, float* y, int64_t n) {
  assert(IsBlockDType(t) && n % DTypeBlockSize(t) == 0);
  const int64_t bs = DTypeBlockSize(t);
  const size_t bb = DTypeBlockBytes(t);
  const auto* in = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n / bs; ++i) {
    const uint8_t* b = in + static_cast<size_t>(i) * bb;
    float* yb = y + i * bs;
    switch (t) {
      case DType::kQ8_0:
        DequantizeQ8_0(b, yb);
        break;
      case DType::kQ4_0:
        DequantizeQ4_0(b, yb);
        break;
      case DType::kQ4_K:
        DequantizeQ4_K(b, yb);
        break;
      case DType::kQ6_K:
        DequantizeQ6_K(b, yb);
        break;
      case DType::kQ5_0:
        DequantizeQ5_0(b, yb);
        break;
      case DType::kQ5_1:
        DequantizeQ5_1(b, yb);
        break;
      case DType::kQ5_K:
        DequantizeQ5_K(b, yb);
        break;
      case DType::kQ3_K:
        DequantizeQ3_K(b, yb);
        break;
      case DType::kQ2_K:
        DequantizeQ2_K(b, yb);
        break;
      case DType::kIQ4_NL:
        DequantizeIQ4_NL(b, yb);
        break;
      case DType::kIQ4_XS:
        DequantizeIQ4_XS(b, yb);
        break;
      default:
        assert(false && "DequantizeRow: not a block type");
    }
  }
}

}  // namespace moerun
