// Portable reference for kernels/quant_dot.h: activation quantisation, the scalar tile and the ISA
// dispatch helpers. The scalar tile spells out the per-block integer sums and the f32 terms of each
// block on the GGUF bytes of one row at a time (deinterleaved), summed in block order; the SIMD
// files perform the same f32 operations with one weight row per vector lane.
#include "kernels/quant_dot.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/block_quant.h"
#include "core/cpu_features.h"
#include "kernels/block_interleave.h"

namespace moerun {
namespace {

inline float LoadF16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return F16ToF32(h);
}

// One (weight row, activation row) dot over blocks [kb0, kb1).
float DotRow(DType format, const uint8_t* row, const int8_t* aq, const float* ad, const int32_t* as,
             int64_t kb0, int64_t kb1) {
  float acc = 0.0f;
  for (int64_t kb = kb0; kb < kb1; ++kb) {
    const int8_t* a = aq + kb * 32;
    const float da = ad[kb];
    const int32_t A = as[kb];
    switch (format) {
      case DType::kQ8_0: {
        const uint8_t* b = row + kb * 34;
        int32_t I = 0;
        for (int e = 0; e < 32; ++e) I += static_cast<int8_t>(b[2 + e]) * a[e];
        acc = std::fma(LoadF16(b) * da, static_cast<float>(I), acc);
        break;
      }
      case DType::kQ4_0: {
        const uint8_t* b = row + kb * 18;
        int32_t I = 0;
        for (int e = 0; e < 16; ++e) I += (b[2 + e] & 0xF) * a[e] + (b[2 + e] >> 4) * a[16 + e];
        I -= 8 * A;
        acc = std::fma(LoadF16(b) * da, static_cast<float>(I), acc);
        break;
      }
      case DType::kQ5_0:
      case DType::kQ5_1: {  // Q5_1: d and m, then Q5_0's qh and qs; no offset, the min term
        const bool q51 = format == DType::kQ5_1;
        const uint8_t* b = row + kb * (q51 ? 24 : 22);
        const uint8_t* qh_bytes = b + (q51 ? 4 : 2);
        uint32_t qh;
        std::memcpy(&qh, qh_bytes, 4);
        int32_t I = q51 ? 0 : -16 * A;
        for (int e = 0; e < 32; ++e) I += Q5Level(qh, qh_bytes + 4, e) * a[e];
        acc = std::fma(LoadF16(b) * da, static_cast<float>(I), acc);
        if (q51) acc = std::fma(LoadF16(b + 2), da * static_cast<float>(A), acc);
        break;
      }
      case DType::kQ4_K:
      case DType::kQ5_K: {
        const bool q5 = format == DType::kQ5_K;
        const uint8_t* b = row + (kb / 8) * (q5 ? 176 : 144);
        const int s = static_cast<int>(kb % 8);
        const uint8_t* qs = b + (q5 ? 48 : 16) + 32 * (s / 2);
        const int shift = (s & 1) * 4;
        int32_t I = 0;
        for (int e = 0; e < 32; ++e) {
          const int fifth = q5 ? ((b[16 + e] >> s) & 1) << 4 : 0;  // Q5_K: bit s of qh[e]
          I += (((qs[e] >> shift) & 0xF) | fifth) * a[e];
        }
        uint8_t sc, m;
        Q4KScaleMin(s, b + 4, &sc, &m);
        const float ws = LoadF16(b) * static_cast<float>(sc);
        const float wm = LoadF16(b + 2) * static_cast<float>(m);
        const float inner = std::fma(ws, static_cast<float>(I), -(wm * static_cast<float>(A)));
        acc = std::fma(da, inner, acc);
        break;
      }
      case DType::kQ6_K: {
        const uint8_t* b = row + (kb / 8) * 210;
        const int i = static_cast<int>(kb % 8);
        const int h = i / 4, g = i % 4;
        const uint8_t* ql = b + 64 * h + 32 * (g & 1);
        const uint8_t* qh = b + 128 + 32 * h;
        const auto* scales = reinterpret_cast<const int8_t*>(b + 192);
        int32_t sub[2] = {0, 0};
        for (int e = 0; e < 32; ++e) {
          const int lo = (ql[e] >> ((g >> 1) * 4)) & 0xF;
          const int hi = (qh[e] >> (2 * g)) & 3;
          sub[e / 16] += ((lo | (hi << 4)) - 32) * a[e];
        }
        const int32_t I = scales[2 * i] * sub[0] + scales[2 * i + 1] * sub[1];
        acc = std::fma(LoadF16(b + 208) * da, static_cast<float>(I), acc);
        break;
      }
      default:
        assert(false && "QuantDotTileRef: not a block type");
        return 0.0f;
    }
  }
  return acc;
}

}  // namespace

void QuantizeActivationRow(const float* x, int64_t k, int8_t* q, float* d, int32_t* sum) {
  static const bool avx2 = QuantDotIsaSupported(QuantDotIsa::kAvx2);
  if (avx2) return QuantizeActivationRowAvx2(x, k, q, d, sum);
  QuantizeActivationRowRef(x, k, q, d, sum);
}

void QuantizeActivationRowRef(const float* x, int64_t k, int8_t* q, float* d, int32_t* sum) {
  const int64_t nb = (k + 31) / 32;
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t e0 = b * 32, e1 = std::min<int64_t>(k, e0 + 32);
    float amax = 0.0f;
    for (int64_t e = e0; e < e1; ++e) amax = std::max(amax, std::fabs(x[e]));
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    d[b] = amax / 127.0f;
    int32_t s = 0;
    for (int64_t e = e0; e < e0 + 32; ++e) {
      int v = 0;
      if (e < e1) v = std::clamp(static_cast<int>(std::nearbyint(x[e] * id)), -127, 127);
      q[e] = static_cast<int8_t>(v);
      s += v;
    }
    sum[b] = s;
  }
}

void QuantDotTileRef(DType format, const uint8_t* w, size_t /*w_row_bytes*/, int n_rows,
                     const Q8Activations& a, int64_t m0, int64_t m1, int64_t kb0, int64_t kb1, float* out) {
  assert(n_rows >= 0 && n_rows <= kQuantDotMaxRows);
  assert(IsInterleavedBlockType(format));
  const int64_t per = DTypeBlockSize(format) / 32;  // 32-element blocks per GGUF block
  const int64_t blk0 = kb0 / per, blk1 = (kb1 + per - 1) / per;
  const size_t bb = DTypeBlockBytes(format);
  std::vector<uint8_t> row(static_cast<size_t>(blk1) * bb);  // [blk1 blocks] GGUF bytes of row j
  for (int j = 0; j < n_rows; ++j) {
    for (int64_t blk = blk0; blk < blk1; ++blk) {  // back from the interleaved columns
      DeinterleaveBlock(format, w + static_cast<size_t>(blk) * InterleavedColumnBytes(format), j,
                        row.data() + static_cast<size_t>(blk) * bb);
    }
    for (int64_t m = m0; m < m1; ++m) {
      out[(m - m0) * kQuantDotMaxRows + j] =
          DotRow(format, row.data(), a.q + m * a.ldq, a.d + m * a.ldb, a.sum + m * a.ldb, kb0, kb1);
    }
  }
}

const char* QuantDotIsaName(QuantDotIsa isa) {
  switch (isa) {
    case QuantDotIsa::kRef:
      return "ref";
    case QuantDotIsa::kAvx2:
      return "avx2";
    case QuantDotIsa::kAvx2NoPrefetch:
      return "avx2-nopf";
    case QuantDotIsa::kAvx512Vnni:
      return "avx512vnni";
    case QuantDotIsa::kAvx512VnniNoPrefetch:
      return "avx512vnni-nopf";
  }
  return "?";
}

bool QuantDotIsaSupported(QuantDotIsa isa) {
  switch (isa) {
    case QuantDotIsa::kRef:
      return true;
    case QuantDotIsa::kAvx2:
    case QuantDotIsa::kAvx2NoPrefetch:
      return GetCpuFeatures().HasAvx2Kernels();
    case QuantDotIsa::kAvx512Vnni:
    case QuantDotIsa::kAvx512VnniNoPrefetch:
      return GetCpuFeatures().HasAvx512VnniKernels();
  }
  return false;
}

QuantDotTileFn QuantDotTileFor(QuantDotIsa isa) {
  switch (isa) {
    case QuantDotIsa::kRef:
      return &QuantDotTileRef;
    case QuantDotIsa::kAvx2:
      return &QuantDotTileAvx2;
    case QuantDotIsa::kAvx2NoPrefetch:
      return &QuantDotTileAvx2NoPrefetch;
    case QuantDotIsa::kAvx512Vnni:
      return &QuantDotTileAvx512Vnni;
    case QuantDotIsa::kAvx512VnniNoPrefetch:
      return &QuantDotTileAvx512VnniNoPrefetch;
  }
  return &QuantDotTileRef;
}

QuantDotIsa BestQuantDotIsa() {
  if (QuantDotIsaSupported(QuantDotIsa::kAvx512Vnni)) return QuantDotIsa::kAvx512Vnni;
  if (QuantDotIsaSupported(QuantDotIsa::kAvx2)) return QuantDotIsa::kAvx2;
  return QuantDotIsa::kRef;
}

}  // namespace moerun
