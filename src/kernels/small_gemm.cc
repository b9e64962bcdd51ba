// Portable reference and run-time dispatch of kernels/small_gemm.h.
#include "kernels/small_gemm.h"

#include <cmath>

#include "core/cpu_features.h"
#include "kernels/kernel_table.h"

namespace moerun {
namespace {

void GemmNTRef(int64_t m, int64_t j0, int64_t j1, int64_t k, const float* a, int64_t lda, const PagedRows& b,
               float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = j0; j < j1; ++j) {
      const float* bj = b.Row(j);
      float acc = 0.0f;
      for (int64_t p = 0; p < k; ++p) acc = std::fma(a[i * lda + p], bj[p], acc);
      c[i * ldc + j] = acc;
    }
  }
}

void GemmNTDispatch(SmallGemmIsa isa, int64_t m, int64_t j0, int64_t j1, int64_t k, const float* a,
                    int64_t lda, const PagedRows& b, float* c, int64_t ldc) {
  switch (ResolveSmallGemmIsa(isa)) {
    case SmallGemmIsa::kAvx512:
      return internal::GemmNTAvx512(m, j0, j1, k, a, lda, b, c, ldc);
    case SmallGemmIsa::kAvx2:
      return internal::GemmNTAvx2(m, j0, j1, k, a, lda, b, c, ldc);
    default:
      return GemmNTRef(m, j0, j1, k, a, lda, b, c, ldc);
  }
}

void GemmNNRef(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const PagedRows& b, float* c,
               int64_t ldc, bool accumulate) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      float acc = accumulate ? c[i * ldc + j] : 0.0f;
      for (int64_t p = 0; p < k; ++p) acc = std::fma(a[i * lda + p], b.Row(p)[j], acc);
      c[i * ldc + j] = acc;
    }
  }
}

void GemmNNDispatch(SmallGemmIsa isa, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                    const PagedRows& b, float* c, int64_t ldc, bool accumulate) {
  switch (ResolveSmallGemmIsa(isa)) {
    case SmallGemmIsa::kAvx512:
      return internal::GemmNNAvx512(m, n, k, a, lda, b, c, ldc, accumulate);
    case SmallGemmIsa::kAvx2:
      return internal::GemmNNAvx2(m, n, k, a, lda, b, c, ldc, accumulate);
    default:
      return GemmNNRef(m, n, k, a, lda, b, c, ldc, accumulate);
  }
}

}  // namespace

bool SmallGemmIsaSupported(SmallGemmIsa isa) {
  const CpuFeatures& f = GetCpuFeatures();
  switch (isa) {
    case SmallGemmIsa::kAuto:
    case SmallGemmIsa::kRef:
      return true;
    case SmallGemmIsa::kAvx2:
      return f.HasAvx2Kernels();
    case SmallGemmIsa::kAvx512:
      return f.avx512f && f.os_saves_zmm;
  }
  return false;
}

SmallGemmIsa ResolveSmallGemmIsa(SmallGemmIsa isa) {
  if (isa != SmallGemmIsa::kAuto) return isa;
  static const SmallGemmIsa best = SmallGemmIsaSupported(SmallGemmIsa::kAvx512) ? SmallGemmIsa::kAvx512
                                   : SmallGemmIsaSupported(SmallGemmIsa::kAvx2) ? SmallGemmIsa::kAvx2
                                                                                : SmallGemmIsa::kRef;
  return best;
}

SmallGemmIsa SelectSmallGemmIsa(std::string_view forced) {
  const std::optional<IsaLevel> level = ForcedIsaLevel(forced);
  if (!level) return SmallGemmIsa::kAuto;
  SmallGemmIsa want = *level == IsaLevel::kRef    ? SmallGemmIsa::kRef
                      : *level == IsaLevel::kAvx2 ? SmallGemmIsa::kAvx2
                                                  : SmallGemmIsa::kAvx512;
  if (want == SmallGemmIsa::kAvx512 && !SmallGemmIsaSupported(want)) want = SmallGemmIsa::kAvx2;
  if (want == SmallGemmIsa::kAvx2 && !SmallGemmIsaSupported(want)) want = SmallGemmIsa::kRef;
  return want;
}

void GemmNT(SmallGemmIsa isa, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
            int64_t ldb, float* c, int64_t ldc) {
  GemmNTDispatch(isa, m, 0, n, k, a, lda, PagedRows{b, ldb}, c, ldc);
}

void GemmNTPaged(SmallGemmIsa isa, int64_t m, int64_t j0, int64_t j1, int64_t k, const float* a, int64_t lda,
                 const PagedRows& b, float* c, int64_t ldc) {
  GemmNTDispatch(isa, m, j0, j1, k, a, lda, b, c, ldc);
}

void GemmNN(SmallGemmIsa isa, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
            int64_t ldb, float* c, int64_t ldc) {
  GemmNNDispatch(isa, m, n, k, a, lda, PagedRows{b, ldb}, c, ldc, false);
}

void GemmNNAccumulate(SmallGemmIsa isa, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                      const float* b, int64_t ldb, float* c, int64_t ldc) {
  GemmNNDispatch(isa, m, n, k, a, lda, PagedRows{b, ldb}, c, ldc, true);
}

void GemmNNPaged(SmallGemmIsa isa, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                 const PagedRows& b, float* c, int64_t ldc) {
  GemmNNDispatch(isa, m, n, k, a, lda, b, c, ldc, false);
}

void GemmNT(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
            float* c, int64_t ldc) {
  GemmNT(SmallGemmIsa::kAuto, m, n, k, a, lda, b, ldb, c, ldc);
}

void GemmNN(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
            float* c, int64_t ldc) {
  GemmNN(SmallGemmIsa::kAuto, m, n, k, a, lda, b, ldb, c, ldc);
}

void GemmNNAccumulate(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                      int64_t ldb, float* c, int64_t ldc) {
  GemmNNAccumulate(SmallGemmIsa::kAuto, m, n, k, a, lda, b, ldb, c, ldc);
}

}  // namespace moerun
