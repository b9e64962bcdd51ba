// Helpers shared by the x86 quantised dot kernels (quant_dot_x86_impl.h, quant_dot_interleaved_x86.h).
// Include only from the ISA translation units quant_dot_avx2.cc / quant_dot_avx512.cc, after
// defining MOERUN_QUANT_DOT_VNNI: everything has internal linkage (one copy per ISA).
// Thread safety: pure functions.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "core/dtype.h"

#ifndef MOERUN_QUANT_DOT_VNNI
#error "define MOERUN_QUANT_DOT_VNNI before including the quant_dot x86 headers"
#endif

namespace moerun {
namespace {

inline uint16_t LoadU16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}

inline void Prefetch(const uint8_t* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0); }
// How far ahead of the column being multiplied a tile kernel prefetches its weights (into L1), in
// bytes. The nibble formats (Q4_0, Q5_0, Q5_1) look kPrefetchAhead ahead; Q8_0 and the K-quants,
// which a thread consumes about twice as fast (no nibble unpacking per byte, or more weights per
// instruction), look twice as far. Measured by alternating two distances decode step by decode step
// in one process on DeepSeek-V2-Lite shapes (Zen 5, 2 threads): Q8_0 at 2 x ahead decodes 4-5 %
// faster than at 1 x (AVX2 rows: 2 %), and flat from 2 x to 8 x; Q4_0 and Q5_0 gain nothing past 1 x.
constexpr size_t kPrefetchAhead = 2048;
constexpr size_t PrefetchAheadOf(DType t) {
  return t == DType::kQ4_0 || t == DType::kQ5_0 || t == DType::kQ5_1 ? kPrefetchAhead : 2 * kPrefetchAhead;
}

}  // namespace
}  // namespace moerun
