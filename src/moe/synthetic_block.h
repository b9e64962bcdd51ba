// Synthetic MoE blocks: random weights with the exact HF names and shapes of a config, for
// tests, benchmarks and the example the README runs. Deterministic given the seed.
// Presets mirror real models' MoE fields (shrunk where `small` is set) for every router variant.
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "moe/moe_config.h"

namespace moerun {

// "v2-lite" (DeepSeek-V2-Lite: greedy softmax, 64 experts, top-6, 2 shared), "v2"
// (group_limited_greedy 8/3, x16), "v3" (noaux_tc sigmoid + bias, 8/4 groups, norm, x2.5),
// "qwen2" (gated shared expert), "qwen3" (no shared, norm). `small` shrinks H/I/E for tests.
// Returns the config.json text.
StatusOr<std::string> PresetConfigJson(const std::string& preset, bool small);
std::vector<std::string> PresetNames();

// Random block weights for `config`: router ~ N(0, router_std), experts ~ N(0, 0.02), stored as
// `dtype` (kF32 or kBF16). `fused` writes transformers-v5 experts.gate_up_proj/down_proj.
StatusOr<std::vector<NamedTensor>> MakeSyntheticMoeTensors(const MoeConfig& config, uint64_t seed,
                                                           DType dtype, bool fused = false);

// Random hidden states [tokens, H] ~ N(0, 1) stored as `dtype`.
StatusOr<Tensor> MakeSyntheticInput(int64_t tokens, int64_t hidden, uint64_t seed, DType dtype);

}  // namespace moerun
