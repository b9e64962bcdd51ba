#include "model/cached_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace moerun {
namespace {

// Softmax weights under the smallest normal float (2^-126) are stored as exact zeros. The row's
// largest weight is at least 1 / ctx, so such a term reaches an f32 output only when its value row
// is some 2^100 times the others. Kept as subnormals, every multiply by them takes a microcode
// assist on Intel cores: with random-weight DeepSeek-V2-Lite on an Emerald Rapids Xeon, the value
// GEMM of a 512-token prefill took 35 % of the time, against 1 % for the score GEMM of the same
// size, and the whole prefill ran 2.2x slower.
constexpr float kMinNormal = std::numeric_limits<float>::min();
// ln(kMinNormal): below it the exp is skipped, so no subnormal enters expf or the double sum; the
// flush after normalisation catches the weights that 1 / sum takes under kMinNormal.
constexpr float kLogMinNormal = -87.33654f;

}  // namespace

void CachedAttention(const float* q, int64_t n_rows, int64_t ldq, const int64_t* pos, const CachedRows& keys,
                     const CachedRows& values, float scale, float* o, int64_t ldo, SmallGemmIsa isa) {
  if (n_rows == 0) return;
  const int64_t ctx = *std::max_element(pos, pos + n_rows) + 1;
  thread_local std::vector<float> s;  // [n_rows, ctx] scores, then probabilities
  s.resize(static_cast<size_t>(n_rows * ctx));
  // Scores: one GemmNT per contiguous run of keys (the whole context, or one block).
  const PagedRows& key_rows = keys.rows;
  for (int64_t j0 = 0; j0 < ctx;) {
    const int64_t len = key_rows.RunFrom(j0, ctx);
    GemmNT(isa, n_rows, len, keys.dim, q, ldq, key_rows.Row(j0), key_rows.ld, s.data() + j0, ctx);
    j0 += len;
  }
  for (int64_t i = 0; i < n_rows; ++i) {
    float* si = s.data() + i * ctx;
    const int64_t n = pos[i] + 1;
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; ++j) mx = std::max(mx, si[j] *= scale);
    double sum = 0;
    for (int64_t j = 0; j < n; ++j) {
      const float d = si[j] - mx;
      sum += si[j] = d < kLogMinNormal ? 0.0f : std::exp(d);
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t j = 0; j < n; ++j) {
      const float p = si[j] * inv;
      si[j] = p < kMinNormal ? 0.0f : p;
    }
    std::fill(si + n, si + ctx, 0.0f);
  }
  // One chain per element over all positions, block after block (GemmNNPaged).
  GemmNNPaged(isa, n_rows, values.dim, ctx, s.data(), ctx, values.rows, o, ldo);
}

}  // namespace moerun
