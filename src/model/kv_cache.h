// KvCache: the MLA cache of one sequence — per layer and position, the normalised compressed
// latent c_kv [kv_lora_rank] and the roped shared key k_pe [qk_rope_head_dim] (576 values per
// token per layer for DeepSeek-V2-Lite), in f32. Positions [0, size) are filled; prefill and
// decode append. Thread safety: one sequence per cache; not shared between threads while written.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "model/model_config.h"

namespace moerun {

class KvCache {
 public:
  KvCache(const ModelConfig& c, int64_t capacity)
      : layers_(c.num_hidden_layers),
        rank_(c.kv_lora_rank),
        rope_(c.qk_rope_head_dim),
        capacity_(capacity),
        data_(static_cast<size_t>(layers_ * capacity * (rank_ + rope_)), 0.0f) {}

  int64_t capacity() const { return capacity_; }
  int64_t size() const { return size_; }
  void set_size(int64_t n) { size_ = n; }
  // [kv_lora_rank + rope] for (layer, pos): latent first, then k_pe.
  float* entry(int64_t layer, int64_t pos) {
    return data_.data() + (layer * capacity_ + pos) * (rank_ + rope_);
  }
  const float* entry(int64_t layer, int64_t pos) const {
    return data_.data() + (layer * capacity_ + pos) * (rank_ + rope_);
  }
  int64_t stride() const { return rank_ + rope_; }

 private:
  int64_t layers_, rank_, rope_, capacity_;
  int64_t size_ = 0;
  std::vector<float> data_;  // [layers, capacity, rank + rope]
};

}  // namespace moerun
