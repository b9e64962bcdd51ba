// Test helper: random rows of GGUF block types written as llama.cpp's quantiser mixes them into
// K-quant files (the load-only Q3_K, Q2_K, IQ4_NL of core/dtype.h, and Q5_0, Q5_1, Q5_K) and the IQ4_XS of
// IQ4_XS files. Random bytes, then
// the f16 scale fields set so the dequantised values are finite and spread roughly `sd` around 0 (layouts:
// docs/formats.md). Header-only; deterministic for a given rng state.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"

namespace moerun::load_only_test {

inline void PutF16(uint8_t* p, float f) {
  const uint16_t h = F32ToF16(f);
  std::memcpy(p, &h, 2);
}

// DTypeRowBytes(t, cols) bytes of `cols` random elements. REQUIRES: t one of the seven above.
inline std::vector<uint8_t> RandomLoadOnlyRow(DType t, int64_t cols, float sd, std::mt19937* rng) {
  std::vector<uint8_t> row(DTypeRowBytes(t, cols));
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> jitter(0.75f, 1.25f);
  for (uint8_t& b : row) b = static_cast<uint8_t>(byte(*rng));
  for (uint8_t* b = row.data(); b < row.data() + row.size(); b += DTypeBlockBytes(t)) {
    const float s = sd * jitter(*rng);
    switch (t) {
      case DType::kQ5_0:  // d (q - 16), q in 0..31
        PutF16(b, s / 9.0f);
        break;
      case DType::kQ5_1:  // d q + m
        PutF16(b, s / 9.0f);
        PutF16(b + 2, -16.0f * s / 9.0f);
        break;
      case DType::kIQ4_NL:  // d table[q], |table| <= 127
        PutF16(b, s / 73.0f);
        break;
      case DType::kIQ4_XS:  // d (ls - 32) table[q]; ls random 6-bit
        PutF16(b, s / (73.0f * 18.0f));
        break;
      case DType::kQ5_K:  // d sc q - dmin m; sc, m random 6-bit
        PutF16(b, s / (9.0f * 32.0f));
        PutF16(b + 2, s * 16.0f / (9.0f * 32.0f));
        break;
      case DType::kQ3_K:  // d (sc - 32) q, q in -4..3
        PutF16(b + 108, s / 40.0f);
        break;
      case DType::kQ2_K:  // d sc q - dmin m; sc, m in 0..15, q in 0..3
        PutF16(b + 80, s / 9.0f);
        PutF16(b + 82, 1.5f * s / 9.0f);
        break;
      default:
        break;
    }
  }
  return row;
}

}  // namespace moerun::load_only_test
