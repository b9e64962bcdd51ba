// CachedAttention: causal softmax attention of query rows over cached key and value rows — the
// layer MLA (model/mla_attention.h, keys = values = latent entries) and GQA (Qwen3-MoE, one KV
// head's roped keys and values) share. For each query row i at position pos[i]:
//   s[i][j]  = scale * <q[i], key_j>,  j = 0 .. pos[i]          key_j: [dim_k]
//   p[i]     = softmax(s[i])      (row maximum subtracted, sum in double; a weight under the
//                                  smallest normal float, 1.2e-38, is stored as 0)
//   o[i]     = sum_j p[i][j] * value_j                            value_j: [dim_v]
// The cached rows are contiguous or paged (in blocks of block_rows rows listed by a block table,
// model/paged_kv.h). The scores are f32 GemmNT of all rows against keys [0, max pos] (one call, or
// one per block into that block's columns), the value sum one GemmNNPaged (each element one fma
// chain over the positions in order, block after block: kernels/small_gemm.h), so paged and
// contiguous rows give the same bits; entries past a row's own position get probability 0. Every element's
// arithmetic is fixed by the kernels, so a row's result does not depend on which other rows share
// the call (what makes results independent of the task split and of the TP layout).
//
// Thread safety: pure function over its arguments (scratch is thread-local).
#pragma once

#include <cstdint>

#include "kernels/small_gemm.h"

namespace moerun {

struct CachedRows {
  // Contiguous (table == nullptr): row j at data + j * ld.
  // Paged: row j at data + table[j / block_rows] * block_stride + (j % block_rows) * ld, i.e. data
  // points at the first row of block id 0 and blocks are block_stride floats apart.
  const float* data = nullptr;
  int64_t ld = 0;                  // floats between rows, e.g. 576 (MLA entry) or 512 (4 KV heads x 128)
  int64_t dim = 0;                 // elements used per row, e.g. 576 (MLA keys), 512 (MLA values), 128
  const int32_t* table = nullptr;  // block ids in position order; null: contiguous
  int64_t block_rows = 0;          // rows per block, e.g. 16
  int64_t block_stride = 0;        // floats between blocks
  PagedRows paged() const { return {data, ld, table, block_rows, block_stride}; }  // without dim
};

// q: [n_rows, ldq] (ldq >= keys.dim); pos: [n_rows] positions (rows 0..pos[i] of keys and values
// must be filled); o: [n_rows, ldo] f32 out (values.dim per row). `isa`: the small-GEMM path (tests
// force each one).
void CachedAttention(const float* q, int64_t n_rows, int64_t ldq, const int64_t* pos, const CachedRows& keys,
                     const CachedRows& values, float scale, float* o, int64_t ldo,
                     SmallGemmIsa isa = SmallGemmIsa::kAuto);

}  // namespace moerun
