// Helpers shared by the x86 quantised dot kernels (quant_dot_x86_impl.h, quant_dot_interleaved_x86.h).
// Include only from the ISA translation units quant_dot_avx2.cc / quant_dot_avx512.cc, after
// defining MOERUN_QUANT_DOT_VNNI: everything has internal linkage (one copy per ISA).
// Thread safety: pure functions.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstddef>
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
// A decode loop gives each thread one stream of the K formats (Q4_K, Q5_K; kernel_table.h's
// StreamsOf has none for them), and their tiles at one or two activation rows look twice as far
// ahead as PrefetchAheadOf. In-process A/B on V2-Lite decode (2 threads, the gate/up loops
// alternating 8 KB and 4 KB): AMD Zen 3, AVX2 Q4_K: 1.006-1.027 x in five runs; AMD Zen 5, AVX-512
// VNNI Q4_K: 0.98-1.12 x in eight runs (mean 1.05; the gain is at the host's fast moments), Q5_K
// 1.09, 1.18. 16 KB was no better than 8 on either, 32 KB worse; Q6_K (one burst per column) ran
// 0.93-0.97 x at 8 KB and stays at PrefetchAheadOf.
constexpr size_t kKDecodeAhead = 2 * PrefetchAheadOf(DType::kQ4_K);

// Four streams per thread (the AVX-512 StreamColumns of the 32-element formats) keep four columns
// in flight, and each stream looks less far ahead than a lone tile: Q8_0 a quarter of
// PrefetchAheadOf (1 KB), Q4_0 three quarters (1.5 KB), Q5_0 / Q5_1 all of it (2 KB). In-process
// A/B on V2-Lite decode (AMD Zen 5, 2 threads, the loops alternating, probes 50-78 GB/s), with the
// streams' loop unrolled: Q8_0 at 1 KB against 2 KB 1.015, 1.017, 1.019 x (against 2 KB too:
// 0.5 KB 0.93, 3 KB 0.99, 4 KB 0.965-0.973); Q4_0 at 1.5 KB against 2 KB 1.034 and 0.991 x, at
// 1 KB against 1.5 KB 0.98 x. Before the loop was unrolled: Q8_0 2 KB against 4 KB
// 1.024-1.031 x, Q4_0 1.5 KB against 2 KB 1.016-1.032 x, and Q5_0 at 1.5 KB 0.99-1.01 x (so it
// stays at 2 KB). The AVX2 streams are unmeasured on an AVX2-only CPU and keep PrefetchAheadOf.
constexpr size_t StreamAheadOf(DType t) {
  switch (t) {
    case DType::kQ8_0:
      return PrefetchAheadOf(t) / 4;
    case DType::kQ4_0:
      return 3 * PrefetchAheadOf(t) / 4;
    default:
      return PrefetchAheadOf(t);
  }
}
static_assert(StreamAheadOf(DType::kQ8_0) == 1024 && StreamAheadOf(DType::kQ4_0) == 1536);

// Every tile kernel takes kSwPrefetch: true issues the software prefetches below, false issues none
// and leaves the weight stream to the hardware prefetchers (the "-nopf" rows of
// kernels/kernel_table.h, which auto-selection prefers on CPUs where that decodes faster).

// Prefetches the kBytes at p (a column ahead) in one burst of 64-byte lines, or nothing.
template <bool kSwPrefetch, size_t kBytes>
inline void PrefetchColumn(const uint8_t* p) {
  if constexpr (kSwPrefetch) {
    for (size_t off = 0; off < kBytes; off += 64) Prefetch(p + off);
  }
}

// Prefetches part `part` (< kParts) of the kBytes at p, in whole 64-byte lines, so a tile kernel can
// spread the prefetches of the column ahead over its steps instead of issuing them in one burst per
// column. In-process A/B on DeepSeek-V2-Lite Q4_K decode (Zen 4, AVX-512 rows, 2 threads): a quarter
// per sub-block pair is 2-9 % faster than the burst, eighths the same as quarters. Unrolled, so a
// constant `part` leaves straight-line code.
template <bool kSwPrefetch, size_t kBytes, int kParts>
inline void PrefetchPart(const uint8_t* p, int part) {
  if constexpr (kSwPrefetch) {
    constexpr size_t kLines = (kBytes + 63) / 64, kPerPart = (kLines + kParts - 1) / kParts;
    const size_t end = std::min(kLines, kPerPart * static_cast<size_t>(part + 1));
#pragma GCC unroll 16
    for (size_t line = kPerPart * static_cast<size_t>(part); line < end; ++line) Prefetch(p + 64 * line);
  }
}

}  // namespace
}  // namespace moerun
