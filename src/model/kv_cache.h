// KvCache: the MLA cache of one sequence (CacheKind::kLatentMla, DeepSeek-V2/V3) — per layer and
// position, the normalised compressed latent c_kv [kv_lora_rank] and the roped shared key k_pe
// [qk_rope_head_dim] (576 values per token per layer for DeepSeek-V2-Lite), in f32, shared by all
// heads (so every TP rank holds the whole entry). Positions [0, size) are filled; prefill and
// decode append. Thread safety: one sequence per cache; not shared between threads while written.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "model/model.h"
#include "model/model_config.h"

namespace moerun {

class KvCache : public ModelCache {
 public:
  KvCache(const ModelConfig& c, int64_t capacity)
      : ModelCache(CacheKind::kLatentMla, capacity),
        layers_(c.num_hidden_layers),
        rank_(c.kv_lora_rank),
        rope_(c.qk_rope_head_dim),
        data_(static_cast<size_t>(layers_ * capacity * (rank_ + rope_)), 0.0f) {}

  // [kv_lora_rank + rope] for (layer, pos): latent first, then k_pe.
  float* entry(int64_t layer, int64_t pos) {
    return data_.data() + (layer * capacity() + pos) * (rank_ + rope_);
  }
  const float* entry(int64_t layer, int64_t pos) const {
    return data_.data() + (layer * capacity() + pos) * (rank_ + rope_);
  }
  int64_t stride() const { return rank_ + rope_; }

 private:
  int64_t layers_, rank_, rope_;
  std::vector<float> data_;  // [layers, capacity, rank + rope]
};

}  // namespace moerun
