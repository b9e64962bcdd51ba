#include "kernels/weight_format.h"

#include <array>
#include <cassert>

namespace moerun {
namespace {

constexpr std::array<WeightFormatTraits, 10> kFormats = {{
    {WeightFormat::kF32, "f32", DType::kF32, 1, PackedLayout::kLanes16, 32.0},
    {WeightFormat::kF16, "f16", DType::kF16, 1, PackedLayout::kLanes16, 16.0},
    {WeightFormat::kBF16, "bf16", DType::kBF16, 1, PackedLayout::kLanes16, 16.0},
    {WeightFormat::kQ8_0, "q8_0", DType::kQ8_0, 32, PackedLayout::kInterleaved16, 8.5},
    {WeightFormat::kQ4_0, "q4_0", DType::kQ4_0, 32, PackedLayout::kInterleaved16, 4.5},
    {WeightFormat::kQ5_0, "q5_0", DType::kQ5_0, 32, PackedLayout::kInterleaved16, 5.5},
    {WeightFormat::kQ5_1, "q5_1", DType::kQ5_1, 32, PackedLayout::kInterleaved16, 6.0},
    {WeightFormat::kQ4_K, "q4_k", DType::kQ4_K, 256, PackedLayout::kInterleaved16, 4.5},
    {WeightFormat::kQ5_K, "q5_k", DType::kQ5_K, 256, PackedLayout::kInterleaved16, 5.5},
    {WeightFormat::kQ6_K, "q6_k", DType::kQ6_K, 256, PackedLayout::kInterleaved16, 6.5625},
}};

}  // namespace

const WeightFormatTraits& Traits(WeightFormat f) {
  const auto& t = kFormats[static_cast<size_t>(f)];
  assert(t.format == f);
  return t;
}

std::span<const WeightFormatTraits> AllWeightFormats() { return kFormats; }

const char* WeightFormatName(WeightFormat f) { return Traits(f).name; }

std::optional<WeightFormat> ParseWeightFormat(std::string_view name) {
  for (const auto& t : kFormats) {
    if (name == t.name) return t.format;
  }
  return std::nullopt;
}

std::optional<WeightFormat> FormatOfDType(DType dtype) {
  for (const auto& t : kFormats) {
    if (t.storage == dtype) return t.format;
  }
  return std::nullopt;
}

WeightFormat ResolveWeightFormat(std::optional<WeightFormat> requested, DType stored, int64_t k) {
  // FP8 weights are dequantised at load; "auto" keeps them 16-bit, as DeepSeek's own bf16 cast does.
  const DType as_stored = stored == DType::kF8_E4M3 ? DType::kBF16 : stored;
  // Load-only block types (Q3_K, Q2_K, IQ4_NL, IQ4_XS) have no format of their own: Q8_0 keeps them closest.
  const WeightFormat fallback = IsBlockDType(stored) ? WeightFormat::kQ8_0 : WeightFormat::kF32;
  WeightFormat f = requested ? *requested : FormatOfDType(as_stored).value_or(fallback);
  while (k % Traits(f).k_alignment != 0) {
    // As llama.cpp's quantiser and the GGUF writer: a K type's 32-element stand-in, then bf16.
    const DType smaller = KQuantRowFallback(Traits(f).storage);
    f = smaller != Traits(f).storage ? *FormatOfDType(smaller) : WeightFormat::kBF16;
  }
  return f;
}

std::string WeightFormatChoices() {
  std::string s;
  for (const auto& t : kFormats) {
    if (!s.empty()) s += '|';
    s += t.name;
  }
  return s;
}

}  // namespace moerun
