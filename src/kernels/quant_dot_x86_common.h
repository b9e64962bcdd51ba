// Helpers shared by the x86 quantised dot kernels (quant_dot_x86_impl.h, quant_dot_interleaved_x86.h).
// Include only from the ISA translation units quant_dot_avx2.cc / quant_dot_avx512.cc, after
// defining MOERUN_QUANT_DOT_VNNI: everything has internal linkage (one copy per ISA).
// Thread safety: pure functions.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

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
constexpr size_t kPrefetchAhead = 2048;

}  // namespace
}  // namespace moerun
