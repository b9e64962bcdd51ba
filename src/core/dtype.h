// Element types and scalar conversions between f32, bf16, f16 and FP8 (e4m3fn).
//
// Dense types store one element per DTypeSize() bytes. Block types (llama.cpp's GGUF formats
// Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K; layouts in docs/formats.md) store DTypeBlockSize()
// elements of a row in DTypeBlockBytes() bytes; a row's length must be a multiple of the block
// size. Their reference quantise/dequantise code is core/block_quant.h. The load-only block types
// (Q3_K, Q2_K, IQ4_NL: what llama.cpp's quantiser mixes into low-bit K-quant files; IQ4_XS, the
// type of its IQ4_XS files) can only be dequantised: no quantiser, no kernels; loaders convert them
// to a packed format.
//
// Dense DType names follow safetensors ("F32", "BF16", ...), block ones ggml ("Q4_K"). bf16 and f16 are
// stored as raw uint16_t bit patterns (little-endian, as in every supported file format). Conversions round
// to nearest even and keep NaN a NaN.
//
// F8_E4M3 is OCP / PyTorch float8_e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities;
// 0x7F / 0xFF are NaN; max finite +-448 (0x7E); subnormals m * 2^-9. Every code is exact in f32
// (F8E4M3ToF32). An FP8 tensor of a checkpoint is meaningful only with its per-block scales
// (core/stored_weight.h), so ConvertToF32 and Tensor::ToF32 refuse it: nothing decodes it unscaled
// by accident. Thread safety: pure functions over constant tables.
#pragma once

#include <array>
#include <bit>
#include <cassert>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace moerun {

enum class DType : uint8_t {
  kF32,
  kBF16,
  kF16,
  kF64,
  kI32,
  kI64,
  kI16,
  kI8,
  kU8,
  kBool,
  kF8_E4M3,  // float8_e4m3fn, 1 byte (see above)
  // Block types (GGUF / ggml):
  kQ8_0,  // 32 elements: f16 scale + 32 x int8                              = 34 bytes
  kQ4_0,  // 32 elements: f16 scale + 16 bytes of 4-bit values (offset 8)    = 18 bytes
  kQ4_K,  // 256 elements: f16 d, dmin, 12 bytes of 6-bit scales/mins, 128 B = 144 bytes
  kQ6_K,  // 256 elements: 128 B low 4 bits, 64 B high 2 bits, 16 int8 scales, f16 d = 210 bytes
  kQ5_0,  // 32 elements: f16 d, 4 B 5th bits, 16 B nibbles (offset 16)    = 22 bytes
  kQ5_1,  // 32 elements: f16 d, f16 m, 4 B 5th bits, 16 B nibbles          = 24 bytes
  kQ5_K,  // 256: f16 d, dmin, 12 B 6-bit scales/mins, 32 B 5th bits, 128 B = 176 bytes
  // Load-only block types (IsLoadOnlyDType; layouts in docs/formats.md):
  kQ3_K,    // 256: 32 B 3rd bits, 64 B 2-bit quants, 12 B 6-bit scales, f16 d = 110 bytes
  kQ2_K,    // 256: 16 B 4-bit scale|min, 64 B 2-bit quants, f16 d, dmin      = 84 bytes
  kIQ4_NL,  // 32 elements: f16 d, 16 B nibbles indexing a fixed 16-value table = 18 bytes
  kIQ4_XS,  // 256: f16 d, 2 + 4 B 6-bit sub-block scales, 128 B IQ4_NL nibbles = 136 bytes
};

// Bytes per element of a dense type, e.g. 2 for kBF16. REQUIRES: !IsBlockDType(t).
constexpr size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF64:
    case DType::kI64:
      return 8;
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kBF16:
    case DType::kF16:
    case DType::kI16:
      return 2;
    case DType::kI8:
    case DType::kU8:
    case DType::kBool:
    case DType::kF8_E4M3:
      return 1;
    default:
      assert(false && "DTypeSize: block type");
      return 0;
  }
}

bool IsBlockDType(DType t);
// The load-only block types (Q3_K, Q2_K, IQ4_NL, IQ4_XS above): IsBlockDType, dequantised only.
bool IsLoadOnlyDType(DType t);
// The 32-element block type llama.cpp's quantiser writes when a row does not fit K type t's
// 256-element super-blocks: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0; t itself for other types.
DType KQuantRowFallback(DType t);
// Elements per block: 1 for dense types, 32 for Q8_0/Q4_0/Q5_0/Q5_1/IQ4_NL, 256 for the K types.
constexpr int64_t DTypeBlockSize(DType t) {
  switch (t) {
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ5_0:
    case DType::kQ5_1:
    case DType::kIQ4_NL:
      return 32;
    case DType::kQ4_K:
    case DType::kQ6_K:
    case DType::kQ5_K:
    case DType::kQ3_K:
    case DType::kQ2_K:
    case DType::kIQ4_XS:
      return 256;
    default:
      return 1;
  }
}

// Bytes per block: DTypeSize for dense types, the byte counts above for block types (constant
// expressions where t is, e.g. in kernels templated on the format).
constexpr size_t DTypeBlockBytes(DType t) {
  switch (t) {
    case DType::kQ8_0:
      return 34;
    case DType::kQ4_0:
      return 18;
    case DType::kQ4_K:
      return 144;
    case DType::kQ6_K:
      return 210;
    case DType::kQ5_0:
      return 22;
    case DType::kQ5_1:
      return 24;
    case DType::kQ5_K:
      return 176;
    case DType::kQ3_K:
      return 110;
    case DType::kQ2_K:
      return 84;
    case DType::kIQ4_NL:
      return 18;
    case DType::kIQ4_XS:
      return 136;
    default:
      return DTypeSize(t);
  }
}

// Bytes of a row of `cols` elements. REQUIRES: cols % DTypeBlockSize(t) == 0.
size_t DTypeRowBytes(DType t, int64_t cols);
// The safetensors spelling, e.g. "BF16", or ggml's for block types, e.g. "Q4_K".
std::string_view DTypeName(DType t);
// Parses a safetensors dtype string; nullopt for unknown or unsupported ones (F8_E5M2, F8_E8M0,
// sub-byte, block types, which safetensors cannot hold).
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

namespace internal {
// The f32 value of every F8_E4M3 code, built from the bit fields (sign, exponent - 7, 1.mantissa).
constexpr std::array<float, 256> MakeF8E4M3Table() {
  std::array<float, 256> t{};
  for (uint32_t code = 0; code < 256; ++code) {
    const uint32_t sign = (code & 0x80u) << 24, exp = (code >> 3) & 0xfu, mant = code & 0x7u;
    uint32_t bits;
    if (exp == 0xfu && mant == 0x7u) {
      bits = sign | 0x7fc00000u;  // NaN (e4m3fn has no infinity)
    } else if (exp == 0) {
      // Subnormal: mant * 2^-9, i.e. an f32 normal (or zero) with the mantissa's leading bit moved
      // into the exponent.
      bits = sign | std::bit_cast<uint32_t>(static_cast<float>(mant) * (1.0f / 512.0f));
    } else {
      bits = sign | ((exp + 127u - 7u) << 23) | (mant << 20);
    }
    t[code] = std::bit_cast<float>(bits);
  }
  return t;
}
inline constexpr std::array<float, 256> kF8E4M3ToF32 = MakeF8E4M3Table();
}  // namespace internal

// Exact: every e4m3fn value is an f32.
inline float F8E4M3ToF32(uint8_t code) { return internal::kF8E4M3ToF32[code]; }

float F16ToF32(uint16_t h);
uint16_t F32ToF16(float f);

// Converts n elements of `src` (of type `t`: f32/bf16/f16, or a block type with n a multiple of
// its block size, dequantised as core/block_quant.h specifies) to f32. Not F8_E4M3 (see above).
void ConvertToF32(DType t, const void* src, float* dst, size_t n);

}  // namespace moerun
