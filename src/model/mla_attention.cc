#include "model/mla_attention.h"

#include "model/cached_attention.h"

namespace moerun {

void LatentAttention(const float* q_cat, int64_t n_rows, int64_t ldq, const int64_t* pos,
                     const LatentCacheView& cache, float scale, float* o_lat, int64_t ldo) {
  // Keys: whole entries [c_kv | k_pe]; values: their c_kv part.
  CachedAttention(q_cat, n_rows, ldq, pos, {cache.entries, cache.stride, cache.stride},
                  {cache.entries, cache.stride, cache.rank}, scale, o_lat, ldo);
}

}  // namespace moerun
