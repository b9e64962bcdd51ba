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
// The AVX-512 Q4_K / Q5_K decode tiles also prefetch each line a second time, kKDecodeFarAhead on
// (why two requests beat either alone is not known; see kStreamPrefetchCopies). In-process A/B on
// V2-Lite Q4_K decode (AMD Zen 5, 2 threads, steps alternating in threes), against kKDecodeAhead
// alone: decode step 0.925-0.970 x (four runs, probes 46-48 GB/s), the gate/up loops 0.890-0.982 x.
// A copy at 8 KB instead (the same line twice) ran the loops 0.945-0.955 x; 8 and 24 KB 0.961 x; 8,
// 16 and 24 KB 0.969 x; 4 and 8 KB 1.047 x. A stand-alone loop over 0.5 GiB of Q4_K tiles (2
// threads) read 0.90 x a plain sum's bytes per second with one prefetch, 1.10-1.15 x with two.
// Q5_K's tile takes the same (unmeasured: no Q5_K file); the AVX2 tiles keep one prefetch
// (unmeasured on an AVX2-only CPU).
constexpr size_t kKDecodeFarAhead = 2 * kKDecodeAhead;

// Four streams per thread (the AVX-512 StreamColumns of the 32-element formats) keep four columns
// in flight, each looking kPrefetchAhead (2 KB) ahead: 8 KB per thread. How far pays depends on how
// much bandwidth the host leaves us. In-process A/B on V2-Lite decode (AMD Zen 5, 2 threads, decode
// steps alternating in threes), 2 KB against the 1 KB (Q8_0) and 1.5 KB (Q4_0) used before, time
// per step: Q8_0 0.943-0.987 x in five runs whose probes read 41-50 GB/s, 1.000 and 1.006 x in two
// at 31-39 GB/s (the memory is then the limit, however far one looks); Q4_0 0.942 and 0.958 x
// (probes 44-49 GB/s). The Q8_0 runs prefetched one 64-byte line per column line 2 KB on;
// PrefetchColumn's burst of 9 lines from 2 KB on (what the kernel issues) ran 1.007 and 0.974 x in
// the two runs that had both (the per-line form 1.000 and 0.980), and the Q4_0 runs used it.
// Further is not better: Q8_0 2.5 KB 0.981 and 1.007 x, 3 KB 0.969; Q4_0 3 KB 0.945 and 0.989 x
// (each against 1 KB / 1.5 KB in the same runs). A session in which the host read 50-78 GB/s had
// measured 1 KB ahead of 2 KB for Q8_0 (1.015-1.019 x): the gain moves with the host, and these are
// the later, more numerous runs. The AVX2 streams are unmeasured on an AVX2-only CPU and keep
// PrefetchAheadOf.
constexpr size_t kStreamAhead = kPrefetchAhead;
static_assert(kStreamAhead == 2048);
// How many times a four-stream column's prefetch burst is issued (the same lines each time).
// In-process A/B on V2-Lite decode (AMD Zen 5, 2 threads, probes 38-47 GB/s) against one burst, two
// runs per file (the second with one burst as two of the three alternating variants): Q8_0 step
// 0.957, then 0.985 and 0.988 x (the gate/up loops 0.932, then 0.988 and 0.990 x); Q4_0 0.981, then
// 0.974 and 0.978 x (0.956, then 0.955 and 0.967 x). A second burst 4 KB ahead instead ran 0.983 x
// (Q8_0) and 1.027 x (Q4_0). Why the copy pays is not known; a software prefetch may be dropped
// when the core's miss buffers are full, and the copy is a second chance. The AVX2 streams keep one
// burst (unmeasured on an AVX2-only CPU).
constexpr int kStreamPrefetchCopies = 2;

// Every tile kernel takes kSwPrefetch: true issues the software prefetches below, false issues none
// and leaves the weight stream to the hardware prefetchers (the "-nopf" rows of
// kernels/kernel_table.h, which auto-selection prefers on CPUs where that decodes faster).

// Prefetches the kBytes at p (a column ahead) in kCopies bursts of 64-byte lines, or nothing.
template <bool kSwPrefetch, size_t kBytes, int kCopies = 1>
inline void PrefetchColumn(const uint8_t* p) {
  if constexpr (kSwPrefetch) {
    for (int copy = 0; copy < kCopies; ++copy) {
      for (size_t off = 0; off < kBytes; off += 64) Prefetch(p + off);
    }
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
