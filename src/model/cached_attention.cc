#include "model/cached_attention.h"

#include <algorithm>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/attention_softmax.h"

namespace moerun {
namespace {

// Scores of positions [j0, j1) into columns j0.. of s ([n_rows, lds]): GemmNTPaged, one contiguous
// run of keys after another (the whole range, or block by block). Each element's arithmetic is
// GemmNT's whatever the runs (kernels/small_gemm.h), so any split of the positions gives the same bits.
void Scores(const float* q, int64_t n_rows, int64_t ldq, const CachedRows& keys, int64_t j0, int64_t j1,
            float* s, int64_t lds, SmallGemmIsa isa) {
  GemmNTPaged(isa, n_rows, j0, j1, keys.dim, q, ldq, keys.rows, s, lds);
}

// Row si ([ctx] scores) scaled and made the probabilities of positions 0 .. n - 1, in place
// (kernels/attention_softmax.h); the positions past them get 0.
void SoftmaxRow(float* si, int64_t n, int64_t ctx, float scale, SmallGemmIsa isa) {
  AttentionSoftmaxRow(si, n, scale, isa);
  std::fill(si + n, si + ctx, 0.0f);
}

// Output columns [c0, c1) of every row: one chain per element over all ctx positions, block after
// block (GemmNNPaged), reading only those columns of the value rows. Each element's chain is the
// same whatever the columns around it.
void Values(const float* p, int64_t n_rows, int64_t ctx, const CachedRows& values, int64_t c0, int64_t c1,
            float* o, int64_t ldo, SmallGemmIsa isa) {
  PagedRows cols = values.rows;
  cols.data += c0;
  GemmNNPaged(isa, n_rows, c1 - c0, ctx, p, ctx, cols, o + c0, ldo);
}

}  // namespace

void CachedAttention(const float* q, int64_t n_rows, int64_t ldq, const int64_t* pos, const CachedRows& keys,
                     const CachedRows& values, float scale, float* o, int64_t ldo, SmallGemmIsa isa) {
  if (n_rows == 0) return;
  const int64_t ctx = *std::max_element(pos, pos + n_rows) + 1;
  thread_local std::vector<float> s;  // [n_rows, ctx] scores, then probabilities
  s.resize(static_cast<size_t>(n_rows * ctx));
  Scores(q, n_rows, ldq, keys, 0, ctx, s.data(), ctx, isa);
  for (int64_t i = 0; i < n_rows; ++i) SoftmaxRow(s.data() + i * ctx, pos[i] + 1, ctx, scale, isa);
  Values(s.data(), n_rows, ctx, values, 0, values.dim, o, ldo, isa);
}

void CachedAttentionSpread(ThreadPool* pool, const float* q, int64_t n_rows, int64_t ldq, const int64_t* pos,
                           const CachedRows& keys, const CachedRows& values, float scale, float* o,
                           int64_t ldo, SmallGemmIsa isa) {
  if (n_rows == 0) return;
  const int64_t ctx = *std::max_element(pos, pos + n_rows) + 1;
  thread_local std::vector<float> s;  // the calling thread's: [n_rows, ctx], written by every thread
  s.resize(static_cast<size_t>(n_rows * ctx));
  float* sp = s.data();
  const int64_t score_tasks = (ctx + kSpreadPositions - 1) / kSpreadPositions;
  ParallelForOn(pool, score_tasks, [&](int64_t c, int) {
    Scores(q, n_rows, ldq, keys, c * kSpreadPositions, std::min(ctx, (c + 1) * kSpreadPositions), sp, ctx,
           isa);
  });
  ParallelForOn(pool, n_rows, [&](int64_t i, int) { SoftmaxRow(sp + i * ctx, pos[i] + 1, ctx, scale, isa); });
  const int64_t value_tasks = (values.dim + kSpreadColumns - 1) / kSpreadColumns;
  ParallelForOn(pool, value_tasks, [&](int64_t c, int) {
    Values(sp, n_rows, ctx, values, c * kSpreadColumns, std::min(values.dim, (c + 1) * kSpreadColumns), o,
           ldo, isa);
  });
}

}  // namespace moerun
