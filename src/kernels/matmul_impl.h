// Internal: the per-ISA task bodies behind the kernel table (kernels/kernel_table.h). Each
// computes rows [m0, m1) and stored 16-row blocks [b0, b1) of `job` (b0, b1 even for gate/up).
#pragma once

#include <cstdint>

#include "kernels/kernel_table.h"
#include "kernels/quant_dot.h"
#include "kernels/silu.h"

namespace moerun::internal {

// How far ahead of its reads the AVX2 and AVX-512 bf16 tiles (f32 activations) prefetch each
// 16-column panel at one or two activation rows (decode), in bf16 elements: 2 KB. Their NB panels
// are NB memory streams, 64 bytes of each per step. In-process A/B on a bf16 V2-Lite decode (8
// layers, AMD Zen 5, 2 threads, the bf16 loops alternating with and without): AVX-512 1 KB 1.07 x,
// 2 KB 1.10-1.14 x (three runs), 4 KB 1.07-1.12 x, 8 KB 1.10 x; the AVX2 tile (--kernel avx2 on
// the same machine, not measured on an AVX2-only CPU) 2 KB 1.10-1.17 x (three runs), 4 KB 1.17 x.
// avx512-bf16dot prefetches the same way: deterministic mode runs it at one row too.
constexpr int64_t kBf16DecodeAhead = 1024;

// The bf16 tiles' decode prefetch: step p's line of each of the NB panels kBf16DecodeAhead ahead
// (prefetcht0), at MR <= 2 activation rows only (more rows are compute bound).
template <int MR, int NB>
inline void PrefetchBf16Panels(const uint16_t* const (&blk)[NB], int64_t p) {
  if constexpr (MR <= 2) {
    for (int j = 0; j < NB; ++j) __builtin_prefetch(blk[j] + p * 32 + kBf16DecodeAhead, 0, 3);
  }
}

// Portable C++ (matmul_ref.cc): float formats on f32 activations.
void MatmulTaskRef(const MatmulJob& job, int64_t m0, int64_t m1, int64_t b0, int64_t b1);
// AVX2 + FMA + F16C (matmul_avx2.cc).
void MatmulTaskAvx2(const MatmulJob& job, int64_t m0, int64_t m1, int64_t b0, int64_t b1);
// AVX-512 (matmul_avx512.cc): f32 activations, and vdpbf16ps on bf16 pairs.
void MatmulTaskAvx512F32(const MatmulJob& job, int64_t m0, int64_t m1, int64_t b0, int64_t b1);
void MatmulTaskAvx512Bf16Dot(const MatmulJob& job, int64_t m0, int64_t m1, int64_t b0, int64_t b1);

// Block formats on q8 activations: per 16-row block, the ISA's quant_dot tile, then the epilogue
// (SwiGLU through the ISA's row of kernels/silu.h: the same bits on every ISA).
template <QuantDotTileFn Tile, SwiGluRowFn SwiGlu>
void MatmulTaskQuant(const MatmulJob& job, int64_t m0, int64_t m1, int64_t b0, int64_t b1);
extern template void MatmulTaskQuant<QuantDotTileRef, SwiGluRowRef>(const MatmulJob&, int64_t, int64_t,
                                                                    int64_t, int64_t);
extern template void MatmulTaskQuant<QuantDotTileAvx2, SwiGluRowAvx2>(const MatmulJob&, int64_t, int64_t,
                                                                      int64_t, int64_t);
extern template void MatmulTaskQuant<QuantDotTileAvx512Vnni, SwiGluRowAvx512>(const MatmulJob&, int64_t,
                                                                              int64_t, int64_t, int64_t);
extern template void MatmulTaskQuant<QuantDotTileAvx2NoPrefetch, SwiGluRowAvx2>(const MatmulJob&, int64_t,
                                                                                int64_t, int64_t, int64_t);
extern template void MatmulTaskQuant<QuantDotTileAvx512VnniNoPrefetch, SwiGluRowAvx512>(const MatmulJob&,
                                                                                        int64_t, int64_t,
                                                                                        int64_t, int64_t);

// One activation row x 16-row blocks of several jobs at once (the streams of a ParallelForStreams
// group; kernel_table.h's MatmulStreamsFn): block step i of every stream together through the
// ISA's QuantDotStreamsFn, then each block's epilogue as MatmulTaskQuant writes it (the same bits).
template <QuantDotStreamsFn Streams, SwiGluRowFn SwiGlu>
void MatmulStreamsQuant(std::span<const MatmulStream> streams);
extern template void MatmulStreamsQuant<QuantDotStreamsAvx2, SwiGluRowAvx2>(std::span<const MatmulStream>);
extern template void MatmulStreamsQuant<QuantDotStreamsAvx2NoPrefetch, SwiGluRowAvx2>(
    std::span<const MatmulStream>);
extern template void MatmulStreamsQuant<QuantDotStreamsAvx512Vnni, SwiGluRowAvx512>(
    std::span<const MatmulStream>);
extern template void MatmulStreamsQuant<QuantDotStreamsAvx512VnniNoPrefetch, SwiGluRowAvx512>(
    std::span<const MatmulStream>);

// Output columns of stored block b: [col0, col0 + 16) clipped to out_features.
inline int64_t BlockCol0(const MatmulJob& job, int64_t b) {
  return job.epilogue == Epilogue::kSwiGlu ? (b / 2) * 16 : b * 16;
}

}  // namespace moerun::internal
