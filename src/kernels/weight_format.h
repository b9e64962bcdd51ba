// WeightFormat: how a linear layer's weight is stored for the matmul kernels, and its traits
// (ggml's type_traits idea): the storage dtype, the K alignment a row needs, the packed layout
// and bytes per packed 16-row block.
//
// Two packed layouts exist (see kernels/packed_weight.h):
//   kLanes16  dense f32 / f16 / bf16: 16 output rows interleaved per k (one SIMD load = 16 lanes);
//   kInterleaved16  every GGUF block format: the GGUF bytes of 16 rows regrouped per block
//             column, scales first (kernels/block_interleave.h, docs/formats.md).
// Thread safety: pure functions over constant tables.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "core/dtype.h"

namespace moerun {

enum class WeightFormat : uint8_t { kF32, kF16, kBF16, kQ8_0, kQ4_0, kQ5_0, kQ5_1, kQ4_K, kQ5_K, kQ6_K };

enum class PackedLayout : uint8_t { kLanes16, kInterleaved16 };

struct WeightFormatTraits {
  WeightFormat format;
  const char* name;     // "q4_k": the spelling of --weight-format and --type
  DType storage;        // the element/block dtype of a row, e.g. DType::kQ4_K
  int64_t k_alignment;  // a row's length (or a K slice of it) must be a multiple: 1, 32 or 256
  PackedLayout layout;
  double bits_per_weight;  // 32, 16, 16, 8.5, 4.5, 5.5, 6, 4.5, 5.5, 6.5625
};

const WeightFormatTraits& Traits(WeightFormat f);
std::span<const WeightFormatTraits> AllWeightFormats();
const char* WeightFormatName(WeightFormat f);
// "q4_k" -> kQ4_K; nullopt for an unknown name ("auto" is handled by callers).
std::optional<WeightFormat> ParseWeightFormat(std::string_view name);
// The format a tensor of `dtype` is stored in (f64/int dtypes: nullopt).
std::optional<WeightFormat> FormatOfDType(DType dtype);
// The format to pack a weight of row length k in: `requested`, or the stored format when
// requested is nullopt ("auto"); if k is not a multiple of its K alignment, the nearest format
// that fits, as llama.cpp's quantiser falls back (q4_k -> q5_0, q5_k -> q5_1, q6_k -> q8_0, the
// 32-element formats -> bf16), the same rule as the GGUF writer.
// Stored F8_E4M3 resolves to bf16; stored load-only block dtypes (Q3_K, Q2_K, IQ4_NL, IQ4_XS:
// dequantised at load) to q8_0; other non-float dtypes (ints) to f32.
WeightFormat ResolveWeightFormat(std::optional<WeightFormat> requested, DType stored, int64_t k);
// "f32|f16|bf16|q8_0|q4_0|q5_0|q5_1|q4_k|q5_k|q6_k", for help texts and errors.
std::string WeightFormatChoices();

}  // namespace moerun
