#include "model/mla_attention.h"

#include "model/cached_attention.h"

namespace moerun {

namespace {

// Keys: whole entries [c_kv | k_pe]; values: their c_kv part.
CachedRows Keys(const LatentCacheView& cache) {
  return {{cache.entries, cache.stride, cache.table, cache.block_rows, cache.block_stride}, cache.stride};
}
CachedRows Values(const LatentCacheView& cache) {
  CachedRows values = Keys(cache);
  values.dim = cache.rank;
  return values;
}

}  // namespace

void LatentAttention(const float* q_cat, int64_t n_rows, int64_t ldq, const int64_t* pos,
                     const LatentCacheView& cache, float scale, float* o_lat, int64_t ldo, SmallGemmIsa isa) {
  CachedAttention(q_cat, n_rows, ldq, pos, Keys(cache), Values(cache), scale, o_lat, ldo, isa);
}

void LatentAttentionSpread(ThreadPool* pool, const float* q_cat, int64_t n_rows, int64_t ldq,
                           const int64_t* pos, const LatentCacheView& cache, float scale, float* o_lat,
                           int64_t ldo, SmallGemmIsa isa) {
  CachedAttentionSpread(pool, q_cat, n_rows, ldq, pos, Keys(cache), Values(cache), scale, o_lat, ldo, isa);
}

}  // namespace moerun
