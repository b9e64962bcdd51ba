// GqaKvCache: the grouped-query-attention cache of one sequence (CacheKind::kGqaKv, Qwen3-MoE):
// per layer and position, the roped key and the value of this rank's KV heads, f32.
// Layout: keys and values are separate [layers, capacity, kv_heads * head_dim] arrays, so the keys
// of one KV head over positions are rows of stride kv_heads * head_dim (what the attention GEMMs
// read). Qwen3-30B-A3B: 4 KV heads x 128 = 512 key + 512 value floats per token per layer on one
// rank. Positions [0, size) are filled; prefill and decode append.
// Thread safety: one sequence per cache; not shared between threads while written.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model.h"

namespace moerun {

class GqaKvCache : public ModelCache {
 public:
  // kv_heads: this rank's KV heads, e.g. 4; head_dim e.g. 128.
  GqaKvCache(int64_t layers, int64_t kv_heads, int64_t head_dim, int64_t capacity)
      : ModelCache(CacheKind::kGqaKv, capacity),
        width_(kv_heads * head_dim),
        keys_(static_cast<size_t>(layers * capacity * width_), 0.0f),
        values_(keys_.size(), 0.0f) {}

  // [kv_heads * head_dim] of (layer, pos); head g at offset g * head_dim.
  float* key(int64_t layer, int64_t pos) { return keys_.data() + (layer * capacity() + pos) * width_; }
  float* value(int64_t layer, int64_t pos) { return values_.data() + (layer * capacity() + pos) * width_; }
  const float* key(int64_t layer, int64_t pos) const {
    return keys_.data() + (layer * capacity() + pos) * width_;
  }
  const float* value(int64_t layer, int64_t pos) const {
    return values_.data() + (layer * capacity() + pos) * width_;
  }
  int64_t stride() const { return width_; }  // floats between positions

 private:
  int64_t width_;
  std::vector<float> keys_;    // [layers, capacity, kv_heads * head_dim]
  std::vector<float> values_;  // [layers, capacity, kv_heads * head_dim]
};

}  // namespace moerun
