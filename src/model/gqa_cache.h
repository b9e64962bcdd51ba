// GqaKvCache: the grouped-query-attention cache of one sequence (CacheKind::kGqaKv, Qwen3-MoE):
// per layer and position, the roped key and the value of this rank's KV heads, f32.
// Layout: the rows live in the blocks of a KvBlockStorage with two arrays (model/paged_kv.h:
// [block][0 = keys, 1 = values][layer][pos_in_block][kv_heads * head_dim]) that the cache's block
// table lists, so within a block the keys of one KV head over positions are rows of stride
// kv_heads * head_dim (what the attention GEMMs read). Qwen3-30B-A3B: 4 KV heads x 128 = 512 key +
// 512 value floats per token per layer on one rank. Positions [0, size) are filled; prefill and
// decode append.
// Thread safety: one sequence per cache; not shared between threads while written.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <new>
#include <vector>

#include "model/cached_attention.h"
#include "model/model.h"

namespace moerun {

class GqaKvCache : public ModelCache {
 public:
  // A storage for `n_blocks` blocks of `block_tokens` positions; kv_heads: this rank's KV heads,
  // e.g. 4; head_dim e.g. 128.
  static StatusOr<std::shared_ptr<KvBlockStorage>> NewStorage(int64_t layers, int64_t kv_heads,
                                                              int64_t head_dim, int64_t n_blocks,
                                                              int64_t block_tokens) {
    return KvBlockStorage::Create(n_blocks, block_tokens, layers, kv_heads * head_dim, 2);
  }
  // Over blocks of `storage` (checked: CheckBlockTable).
  static StatusOr<std::unique_ptr<GqaKvCache>> Create(int64_t layers, int64_t kv_heads, int64_t head_dim,
                                                      std::shared_ptr<KvBlockStorage> storage,
                                                      std::vector<int32_t> table, int64_t capacity) {
    RETURN_IF_ERROR(CheckBlockTable(*storage, table, capacity, layers, 2, kv_heads * head_dim));
    return std::unique_ptr<GqaKvCache>(new GqaKvCache(std::move(storage), std::move(table), capacity));
  }
  // With a private storage of one block of `capacity` positions (contiguous rows).
  GqaKvCache(int64_t layers, int64_t kv_heads, int64_t head_dim, int64_t capacity)
      : GqaKvCache(NewStorageOrThrow(layers, kv_heads, head_dim, capacity), {0}, capacity) {}

  // [kv_heads * head_dim] of (layer, pos); head g at offset g * head_dim.
  float* key(int64_t layer, int64_t pos) { return Row(0, layer, pos); }
  float* value(int64_t layer, int64_t pos) { return Row(1, layer, pos); }
  const float* key(int64_t layer, int64_t pos) const { return Row(0, layer, pos); }
  const float* value(int64_t layer, int64_t pos) const { return Row(1, layer, pos); }
  int64_t stride() const { return storage().width(); }  // floats between positions
  // Columns [col, col + dim) of layer `layer`'s keys / values as CachedAttention reads them.
  CachedRows Keys(int64_t layer, int64_t col, int64_t dim) const { return Rows(0, layer, col, dim); }
  CachedRows Values(int64_t layer, int64_t col, int64_t dim) const { return Rows(1, layer, col, dim); }

 private:
  GqaKvCache(std::shared_ptr<KvBlockStorage> storage, std::vector<int32_t> table, int64_t capacity)
      : ModelCache(CacheKind::kGqaKv, std::move(storage), std::move(table), capacity) {}
  CachedRows Rows(int64_t array, int64_t layer, int64_t col, int64_t dim) const {
    const KvBlockStorage& s = storage();
    return {.rows = {.data = s.row(0, array, layer, 0) + col,
                     .ld = s.width(),
                     .table = block_table().data(),
                     .block_rows = s.block_tokens(),
                     .block_stride = s.block_floats()},
            .dim = dim};
  }
  static std::shared_ptr<KvBlockStorage> NewStorageOrThrow(int64_t layers, int64_t kv_heads, int64_t head_dim,
                                                           int64_t capacity) {
    StatusOr<std::shared_ptr<KvBlockStorage>> s =
        NewStorage(layers, kv_heads, head_dim, 1, std::max<int64_t>(1, capacity));
    if (!s.ok()) throw std::bad_alloc();
    return std::move(*s);
  }
};

}  // namespace moerun
