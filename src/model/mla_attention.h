// Attention of absorbed MLA queries over one sequence's latent cache (multi-head latent attention,
// DeepSeek-V2 paper arXiv:2405.04434 section 2.1 and its remark on absorbing W_UK / W_UV; HF
// modeling_deepseek.py computes the same in expanded form; docs/models.md §3.4): for each query
// row i (one token x one head) at position pos[i],
//   s[i][j] = scale * <q_cat[i], e_j>,  j = 0 .. pos[i]    (e_j = cache entry j = [c_kv (r) | k_pe (dr)])
//   p[i]    = softmax(s[i])
//   o_lat[i] = sum_j p[i][j] * c_kv_j                        [r]
// with q_cat[i] = [q_nope absorbed through kv_b's K rows (r) | roped q_pe (dr)]: the shared
// CachedAttention layer (model/cached_attention.h) with keys = whole entries, values = their c_kv
// part (score GemmNT and value GemmNN, per block when paged; a row's result does not depend on its call
// partners).
//
// Thread safety: pure functions over their arguments (scratch is the calling thread's).
#pragma once

#include <cstdint>

#include "kernels/small_gemm.h"

namespace moerun {

class ThreadPool;

struct LatentCacheView {
  // Contiguous (table == nullptr): entry j at entries + j * stride. Paged (one layer of a
  // KvBlockStorage, model/paged_kv.h): entry j at entries + table[j / block_rows] * block_stride +
  // (j % block_rows) * stride (as PagedRows).
  const float* entries = nullptr;
  int64_t stride = 0;  // r + dr, e.g. 576
  int64_t rank = 0;    // r = kv_lora_rank, e.g. 512
  const int32_t* table = nullptr;
  int64_t block_rows = 0;    // entries per block, e.g. 16
  int64_t block_stride = 0;  // floats between blocks
};

// q_cat: [n_rows, ldq] (ldq >= r + dr); pos: [n_rows] positions (each entry 0..pos[i] must be
// filled); o_lat: [n_rows, ldo] f32 out. `isa`: the small-GEMM path (SelectSmallGemmIsa).
void LatentAttention(const float* q_cat, int64_t n_rows, int64_t ldq, const int64_t* pos,
                     const LatentCacheView& cache, float scale, float* o_lat, int64_t ldo,
                     SmallGemmIsa isa = SmallGemmIsa::kAuto);
// The same bits, one call's work spread over `pool` (CachedAttentionSpread): for a decode step's
// heads at a long context, so the threads read the cache once between them.
void LatentAttentionSpread(ThreadPool* pool, const float* q_cat, int64_t n_rows, int64_t ldq,
                           const int64_t* pos, const LatentCacheView& cache, float scale, float* o_lat,
                           int64_t ldo, SmallGemmIsa isa = SmallGemmIsa::kAuto);

}  // namespace moerun
