#include "model/cached_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/small_gemm.h"

namespace moerun {

void CachedAttention(const float* q, int64_t n_rows, int64_t ldq, const int64_t* pos, const CachedRows& keys,
                     const CachedRows& values, float scale, float* o, int64_t ldo) {
  if (n_rows == 0) return;
  const int64_t ctx = *std::max_element(pos, pos + n_rows) + 1;
  thread_local std::vector<float> s;
  s.resize(static_cast<size_t>(n_rows * ctx));
  GemmNT(n_rows, ctx, keys.dim, q, ldq, keys.data, keys.ld, s.data(), ctx);
  for (int64_t i = 0; i < n_rows; ++i) {
    float* si = s.data() + i * ctx;
    const int64_t n = pos[i] + 1;
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; ++j) mx = std::max(mx, si[j] *= scale);
    double sum = 0;
    for (int64_t j = 0; j < n; ++j) sum += si[j] = std::exp(si[j] - mx);
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t j = 0; j < n; ++j) si[j] *= inv;
    std::fill(si + n, si + ctx, 0.0f);
  }
  GemmNN(n_rows, values.dim, ctx, s.data(), ctx, values.data, values.ld, o, ldo);
}

}  // namespace moerun
