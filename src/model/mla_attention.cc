#include "model/mla_attention.h"

#include "model/cached_attention.h"

namespace moerun {

void LatentAttention(const float* q_cat, int64_t n_rows, int64_t ldq, const int64_t* pos,
                     const LatentCacheView& cache, float scale, float* o_lat, int64_t ldo, SmallGemmIsa isa) {
  // Keys: whole entries [c_kv | k_pe]; values: their c_kv part.
  const PagedRows entries{cache.entries, cache.stride, cache.table, cache.block_rows, cache.block_stride};
  const CachedRows keys{entries, cache.stride}, values{entries, cache.rank};
  CachedAttention(q_cat, n_rows, ldq, pos, keys, values, scale, o_lat, ldo, isa);
}

}  // namespace moerun
