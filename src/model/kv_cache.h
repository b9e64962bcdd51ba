// KvCache: the MLA cache of one sequence (CacheKind::kLatentMla, DeepSeek-V2/V3) — per layer and
// position, the normalised compressed latent c_kv [kv_lora_rank] and the roped shared key k_pe
// [qk_rope_head_dim] (576 values per token per layer for DeepSeek-V2-Lite), in f32, shared by all
// heads (so every TP rank holds the whole entry). The entries live in the blocks of a
// KvBlockStorage with one array (model/paged_kv.h: [block][layer][pos_in_block][rank + rope]) that
// the cache's block table lists. Positions [0, size) are filled; prefill and decode append.
// Thread safety: one sequence per cache; not shared between threads while written.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <new>
#include <vector>

#include "core/status.h"
#include "model/mla_attention.h"
#include "model/model.h"
#include "model/model_config.h"

namespace moerun {

class KvCache : public ModelCache {
 public:
  // Floats per position and layer: kv_lora_rank + qk_rope_head_dim.
  static int64_t Width(const ModelConfig& c) { return c.kv_lora_rank + c.qk_rope_head_dim; }
  // A storage for `n_blocks` blocks of `block_tokens` positions of this config's entries.
  static StatusOr<std::shared_ptr<KvBlockStorage>> NewStorage(const ModelConfig& c, int64_t n_blocks,
                                                              int64_t block_tokens) {
    return KvBlockStorage::Create(n_blocks, block_tokens, c.num_hidden_layers, Width(c), 1);
  }
  // Over blocks of `storage` (checked: CheckBlockTable).
  static StatusOr<std::unique_ptr<KvCache>> Create(const ModelConfig& c,
                                                   std::shared_ptr<KvBlockStorage> storage,
                                                   std::vector<int32_t> table, int64_t capacity) {
    RETURN_IF_ERROR(CheckBlockTable(*storage, table, capacity, c.num_hidden_layers, 1, Width(c)));
    return std::unique_ptr<KvCache>(new KvCache(c, std::move(storage), std::move(table), capacity));
  }
  // With a private storage of one block of `capacity` positions (contiguous entries).
  KvCache(const ModelConfig& c, int64_t capacity)
      : KvCache(c, NewStorageOrThrow(c, capacity), {0}, capacity) {}

  // [kv_lora_rank + rope] for (layer, pos): latent first, then k_pe.
  float* entry(int64_t layer, int64_t pos) { return Row(0, layer, pos); }
  const float* entry(int64_t layer, int64_t pos) const { return Row(0, layer, pos); }
  int64_t stride() const { return rank_ + rope_; }
  // Layer `layer`'s entries as LatentAttention reads them (paged through the block table).
  LatentCacheView View(int64_t layer) const {
    const KvBlockStorage& s = storage();
    return {.entries = s.row(0, 0, layer, 0),
            .stride = stride(),
            .rank = rank_,
            .table = block_table().data(),
            .block_rows = s.block_tokens(),
            .block_stride = s.block_floats()};
  }

 private:
  KvCache(const ModelConfig& c, std::shared_ptr<KvBlockStorage> storage, std::vector<int32_t> table,
          int64_t capacity)
      : ModelCache(CacheKind::kLatentMla, std::move(storage), std::move(table), capacity),
        rank_(c.kv_lora_rank),
        rope_(c.qk_rope_head_dim) {}
  static std::shared_ptr<KvBlockStorage> NewStorageOrThrow(const ModelConfig& c, int64_t capacity) {
    StatusOr<std::shared_ptr<KvBlockStorage>> s = NewStorage(c, 1, std::max<int64_t>(1, capacity));
    if (!s.ok()) throw std::bad_alloc();
    return std::move(*s);
  }

  int64_t rank_, rope_;
};

}  // namespace moerun
