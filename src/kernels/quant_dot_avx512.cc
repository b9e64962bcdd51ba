// AVX-512 (VL/BW/DQ) + VNNI quantised dot tile (vpdpbusd on zmm: one 32-bit lane per weight row of
// an interleaved 16-row column, up to 8 activation rows per unpacked column); body in
// quant_dot_x86_impl.h. Called only when GetCpuFeatures().HasAvx512VnniKernels().
#define MOERUN_QUANT_DOT_VNNI 1
#include "kernels/quant_dot_x86_impl.h"

namespace moerun {

void QuantDotTileAvx512Vnni(DType format, const uint8_t* w, size_t w_row_bytes, int n_rows,
                            const Q8Activations& a, int64_t m0, int64_t m1, int64_t kb0, int64_t kb1,
                            float* out) {
  QuantDotTileX86<true>(format, w, w_row_bytes, n_rows, a, m0, m1, kb0, kb1, out);
}

void QuantDotTileAvx512VnniNoPrefetch(DType format, const uint8_t* w, size_t w_row_bytes, int n_rows,
                                      const Q8Activations& a, int64_t m0, int64_t m1, int64_t kb0,
                                      int64_t kb1, float* out) {
  QuantDotTileX86<false>(format, w, w_row_bytes, n_rows, a, m0, m1, kb0, kb1, out);
}

void QuantDotStreamsAvx512Vnni(DType format, const QuantDotStream* streams, int n, int64_t kb0, int64_t kb1) {
  QuantDotStreamsX86<true>(format, streams, n, kb0, kb1);
}

void QuantDotStreamsAvx512VnniNoPrefetch(DType format, const QuantDotStream* streams, int n, int64_t kb0,
                                         int64_t kb1) {
  QuantDotStreamsX86<false>(format, streams, n, kb0, kb1);
}

void QuantizeActivationRowAvx512Vnni(const float* x, int64_t k, int8_t* q, float* d, int32_t* sum) {
  QuantizeActivationRowX86(x, k, q, d, sum);
}

}  // namespace moerun
