// CachedAttention: causal softmax attention of query rows over cached key and value rows — the
// layer MLA (model/mla_attention.h, keys = values = latent entries) and GQA (Qwen3-MoE, one KV
// head's roped keys and values) share. For each query row i at position pos[i]:
//   s[i][j]  = scale * <q[i], key_j>,  j = 0 .. pos[i]          key_j: [dim_k]
//   p[i]     = softmax(s[i])      (kernels/attention_softmax.h: row maximum subtracted, a
//                                  vectorised exp, sum in double; weights under e^-87 of the
//                                  largest or under the smallest normal float are stored as 0)
//   o[i]     = sum_j p[i][j] * value_j                            value_j: [dim_v]
// The cached rows are contiguous or paged (in blocks of block_rows rows listed by a block table,
// model/paged_kv.h). The scores are f32 GemmNT of all rows against keys [0, max pos] (one
// GemmNTPaged, run by run), the value sum one GemmNNPaged (each element one fma
// chain over the positions in order, block after block: kernels/small_gemm.h), so paged and
// contiguous rows give the same bits; entries past a row's own position get probability 0. Every element's
// arithmetic is fixed by the kernels, so a row's result does not depend on which other rows share
// the call (what makes results independent of the task split and of the TP layout).
//
// CachedAttentionSpread gives the same bits with one call's work spread over a thread pool.
//
// Thread safety: pure functions over their arguments (scratch is the calling thread's).
#pragma once

#include <cstdint>

#include "kernels/small_gemm.h"

namespace moerun {

class ThreadPool;

// The cached keys or values of one attention: where position j's row is, and how much of it is used.
struct CachedRows {
  // Row j, contiguous or paged (kernels/small_gemm.h); paged: data points at the first row of block
  // id 0. ld e.g. 576 (an MLA entry) or 512 (4 KV heads x 128).
  PagedRows rows;
  int64_t dim = 0;  // elements used per row, e.g. 576 (MLA keys), 512 (MLA values), 128
};

// q: [n_rows, ldq] (ldq >= keys.dim); pos: [n_rows] positions (rows 0..pos[i] of keys and values
// must be filled); o: [n_rows, ldo] f32 out (values.dim per row). `isa`: the small-GEMM path (tests
// force each one).
void CachedAttention(const float* q, int64_t n_rows, int64_t ldq, const int64_t* pos, const CachedRows& keys,
                     const CachedRows& values, float scale, float* o, int64_t ldo,
                     SmallGemmIsa isa = SmallGemmIsa::kAuto);

// CachedAttention's result, bit for bit, with one call's work spread over `pool` (null: the calling
// thread) in three parallel loops: the scores of chunks of kSpreadPositions positions, each row's
// softmax, then chunks of kSpreadColumns output columns (each reads only its columns of the cached
// values). So the cache is read once across the threads, where calls on each thread for its own
// rows (a decode step's heads) would each read all of it. Every element's arithmetic is
// CachedAttention's (the small GEMMs fix it per element whatever the split), so the result does not
// depend on the pool either. Call it from outside the pool's tasks.
inline constexpr int64_t kSpreadPositions = 256, kSpreadColumns = 64;
void CachedAttentionSpread(ThreadPool* pool, const float* q, int64_t n_rows, int64_t ldq, const int64_t* pos,
                           const CachedRows& keys, const CachedRows& values, float scale, float* o,
                           int64_t ldo, SmallGemmIsa isa = SmallGemmIsa::kAuto);

}  // namespace moerun
