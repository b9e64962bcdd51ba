// FP8 weights in a TensorSource: how a block-scaled F8_E4M3 tensor finds its scales, how they are
// validated, and the lookup that returns any weight as a StoredWeight (core/stored_weight.h).
//
// Layout (DeepSeek-V3 and transformers' fine-grained FP8, docs/models.md §2.3): beside each FP8
// weight "X.weight" [R, C] (F8_E4M3) the checkpoint holds "X.weight_scale_inv" (F32)
// [ceil(R / 128), ceil(C / 128)]; W = fp8 * scale_inv per 128 x 128 block. moerun reads 128 x 128
// blocks only, the weight_block_size of every release (ModelConfig refuses another one).
// Errors name the source path, the tensor and the expected bound.
// Thread safety: plain functions over an immutable TensorSource.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"
#include "core/stored_weight.h"
#include "io/tensor_source.h"

namespace moerun {

inline constexpr int64_t kFp8BlockSize = 128;  // weight_block_size [128, 128]

// "X.weight" -> "X.weight_scale_inv".
std::string ScaleInvName(std::string_view weight);
// The weight a "<X>_scale_inv" tensor of `src` scales, if X is an F8_E4M3 tensor of `src`; else
// nullopt (not such a name, or X absent or not FP8: validators then report it as unexpected).
std::optional<std::string> Fp8WeightOfScale(const TensorSource& src, std::string_view name);
// For an F8_E4M3 `weight` of `src`: 2-D, and its scale_inv present, F32/BF16/F16, shaped
// [ceil(R / 128), ceil(C / 128)]. Reads headers only.
Status CheckFp8Scale(const TensorSource& src, const TensorMeta& weight);
// The weight `name` as stored, a zero-copy view; an F8_E4M3 one with its scale_inv (checked as
// above). NotFound names the tensor.
StatusOr<StoredWeight> GetStoredWeight(const TensorSource& src, const std::string& name);
// The flat index of the first NaN code (0x7F / 0xFF) of an F8_E4M3 tensor, or -1.
int64_t FindF8NaN(const Tensor& t);

}  // namespace moerun
