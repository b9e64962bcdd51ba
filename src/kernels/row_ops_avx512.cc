// AVX-512 bodies of kernels/row_ops.h (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq
// -mfma -mf16c -ffp-contract=off; called only when cpu_features.h reports those features).
// GCC 12's own intrinsics headers trip -W(maybe-)uninitialized (_mm512_undefined_*) when inlined.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "kernels/row_ops_x86_impl.h"
#include "kernels/simd_f32_x86.h"

namespace moerun::internal {

void RowsAxpyAvx512(const StoredRowsView& w, const float* x, float* y, RowBatch batch) {
  row_ops::RowsAxpyT<F32x16>(w, x, y, batch);
}
void RowsDotAvx512(const StoredRowsView& w, const float* x, float* y, RowBatch batch) {
  row_ops::RowsDotT<F32x16>(w, x, y, batch);
}

}  // namespace moerun::internal
