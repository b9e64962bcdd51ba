// Synthetic DeepSeek-V2-family checkpoints with real shapes (e.g. DeepSeek-V2-Lite with fewer
// layers) and random weights, for benchmarks: generated in parallel, written as one
// model.safetensors plus config.json. Deterministic given the seed. (The tiny test models with a
// float64 reference come from tools/make_test_model.py.)
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"
#include "core/thread_pool.h"

namespace moerun {

// Writes DIR/config.json and DIR/model.safetensors for the DeepSeek-V2-Lite architecture with
// `layers` layers (layer 0 dense, the rest MoE) in bf16.
Status WriteSyntheticV2Lite(const std::string& dir, int64_t layers, uint64_t seed, ThreadPool* pool);

}  // namespace moerun
