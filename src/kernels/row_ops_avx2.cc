// AVX2 + FMA + F16C bodies of kernels/row_ops.h (compiled with -mavx2 -mfma -mf16c
// -ffp-contract=off; called only when cpu_features.h reports HasAvx2Kernels()).
#include <immintrin.h>

#include "kernels/row_ops_x86_impl.h"
#include "kernels/simd_f32_x86.h"

namespace moerun::internal {

void RowsAxpyAvx2(const StoredRowsView& w, const float* x, float* y, RowBatch batch) {
  row_ops::RowsAxpyT<F32x8>(w, x, y, batch);
}
void RowsDotAvx2(const StoredRowsView& w, const float* x, float* y, RowBatch batch) {
  row_ops::RowsDotT<F32x8>(w, x, y, batch);
}

}  // namespace moerun::internal
