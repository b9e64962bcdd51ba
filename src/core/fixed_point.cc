#include "core/fixed_point.h"

#include "core/cpu_features.h"

namespace moerun {

const char* FixedPathName(FixedPath path) {
  switch (path) {
    case FixedPath::kAuto:
      return "auto";
    case FixedPath::kScalar:
      return "scalar";
    case FixedPath::kAvx512:
      return "avx512";
    case FixedPath::kAvx2:
      return "avx2";
  }
  return "?";
}

bool FixedPathSupported(FixedPath path) {
  if (path == FixedPath::kAuto || path == FixedPath::kScalar) return true;
#if defined(__x86_64__)
  const CpuFeatures& f = GetCpuFeatures();
  if (path == FixedPath::kAvx512) return f.avx512f && f.avx512dq && f.avx512vl && f.os_saves_zmm;
  return f.avx2 && f.fma && f.os_saves_ymm;
#else
  return false;
#endif
}

namespace internal {

void AccumulateFixedScalar(Fixed128* dst, int64_t begin, int64_t end, const FixedTermRow* rows,
                           int64_t n_rows) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const float w = rows[r].weight;
    const float* y = rows[r].y;
    for (int64_t c = begin; c < end; ++c) dst[c] += ToFixed(w * y[c]);
  }
}

}  // namespace internal

void AccumulateFixed(Fixed128* dst, int64_t n, std::span<const FixedTermRow> rows, FixedPath path,
                     FixedLimbs limbs) {
  if (path == FixedPath::kAuto) {
    static const FixedPath best = FixedPathSupported(FixedPath::kAvx512) ? FixedPath::kAvx512
                                  : FixedPathSupported(FixedPath::kAvx2) ? FixedPath::kAvx2
                                                                         : FixedPath::kScalar;
    path = best;
  }
  const int64_t n_rows = static_cast<int64_t>(rows.size());
#if defined(__x86_64__)
  if (path == FixedPath::kAvx512) {
    internal::AccumulateFixedAvx512(dst, n, rows.data(), n_rows, limbs);
    return;
  }
  if (path == FixedPath::kAvx2) {
    internal::AccumulateFixedAvx2(dst, n, rows.data(), n_rows, limbs);
    return;
  }
#endif
  internal::AccumulateFixedScalar(dst, 0, n, rows.data(), n_rows);
}

void FlushFixedLimbs(Fixed128* dst, int64_t n, FixedLimbs limbs) {
  for (int64_t c = 0; c < n; ++c) {
    dst[c] += internal::FromLimbs(limbs.hi[c], limbs.lo[c]);
    limbs.hi[c] = 0;
    limbs.lo[c] = 0;
  }
}

}  // namespace moerun
