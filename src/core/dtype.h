// Element types and scalar conversions between f32, bf16 and f16.
//
// DType names follow safetensors ("F32", "BF16", ...). bf16 and f16 are stored as raw uint16_t
// bit patterns (little-endian, as in every supported file format). Conversions round to nearest
// even and keep NaN a NaN. Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace moerun {

enum class DType : uint8_t { kF32, kBF16, kF16, kF64, kI32, kI64, kI16, kI8, kU8, kBool };

// Bytes per element, e.g. 2 for kBF16.
size_t DTypeSize(DType t);
// The safetensors spelling, e.g. "BF16".
std::string_view DTypeName(DType t);
// Parses a safetensors dtype string; nullopt for unknown or unsupported ones (F8_*, sub-byte).
std::optional<DType> ParseDType(std::string_view name);

inline float Bf16ToF32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint16_t F32ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);  // quiet NaN
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float F16ToF32(uint16_t h);
uint16_t F32ToF16(float f);

// Converts n elements of `src` (of type `t`, one of f32/bf16/f16) to f32.
void ConvertToF32(DType t, const void* src, float* dst, size_t n);

}  // namespace moerun
