// AVX2 + FMA + F16C quantised dot tile (vpmaddubsw / vpmaddwd); body in quant_dot_x86_impl.h.
// Compiled with -mavx2 -mfma -mf16c; called only when GetCpuFeatures().HasAvx2Kernels().
#define MOERUN_QUANT_DOT_VNNI 0
#include "kernels/quant_dot_x86_impl.h"

namespace moerun {

void QuantDotTileAvx2(DType format, const uint8_t* w, size_t w_row_bytes, int n_rows, const Q8Activations& a,
                      int64_t m0, int64_t m1, int64_t kb0, int64_t kb1, float* out) {
  QuantDotTileX86<true>(format, w, w_row_bytes, n_rows, a, m0, m1, kb0, kb1, out);
}

void QuantDotTileAvx2NoPrefetch(DType format, const uint8_t* w, size_t w_row_bytes, int n_rows,
                                const Q8Activations& a, int64_t m0, int64_t m1, int64_t kb0, int64_t kb1,
                                float* out) {
  QuantDotTileX86<false>(format, w, w_row_bytes, n_rows, a, m0, m1, kb0, kb1, out);
}

void QuantDotStreamsAvx2(DType format, const QuantDotStream* streams, int n, int64_t kb0, int64_t kb1) {
  QuantDotStreamsX86<true>(format, streams, n, kb0, kb1);
}

void QuantDotStreamsAvx2NoPrefetch(DType format, const QuantDotStream* streams, int n, int64_t kb0,
                                   int64_t kb1) {
  QuantDotStreamsX86<false>(format, streams, n, kb0, kb1);
}

void QuantizeActivationRowAvx2(const float* x, int64_t k, int8_t* q, float* d, int32_t* sum) {
  QuantizeActivationRowX86(x, k, q, d, sum);
}

}  // namespace moerun
