// GGUF type tables and values (io/gguf.h); the reader is gguf_reader.cc, the writer gguf_writer.cc.
#include "io/gguf.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

#include "core/checked_math.h"

namespace moerun {

static_assert(std::endian::native == std::endian::little, "moerun requires a little-endian host");

// ---------------------------------------------------------------------------------------------
// Types

std::string_view GgufTypeName(GgufType t) {
  switch (t) {
    case GgufType::kU8:
      return "u8";
    case GgufType::kI8:
      return "i8";
    case GgufType::kU16:
      return "u16";
    case GgufType::kI16:
      return "i16";
    case GgufType::kU32:
      return "u32";
    case GgufType::kI32:
      return "i32";
    case GgufType::kF32:
      return "f32";
    case GgufType::kBool:
      return "bool";
    case GgufType::kString:
      return "string";
    case GgufType::kArray:
      return "array";
    case GgufType::kU64:
      return "u64";
    case GgufType::kI64:
      return "i64";
    case GgufType::kF64:
      return "f64";
  }
  return "?";
}

GgufValue GgufValue::U32(uint32_t v) {
  GgufValue x;
  x.type = GgufType::kU32;
  x.u = v;
  x.i = v;
  return x;
}
GgufValue GgufValue::I32(int32_t v) {
  GgufValue x;
  x.type = GgufType::kI32;
  x.i = v;
  return x;
}
GgufValue GgufValue::U64(uint64_t v) {
  GgufValue x;
  x.type = GgufType::kU64;
  x.u = v;
  x.i = v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? 0 : static_cast<int64_t>(v);
  return x;
}
GgufValue GgufValue::F32(float v) {
  GgufValue x;
  x.type = GgufType::kF32;
  x.f = v;
  return x;
}
GgufValue GgufValue::Bool(bool v) {
  GgufValue x;
  x.type = GgufType::kBool;
  x.u = v ? 1 : 0;
  return x;
}
GgufValue GgufValue::String(std::string v) {
  GgufValue x;
  x.type = GgufType::kString;
  x.s = std::move(v);
  return x;
}
GgufValue GgufValue::StringArray(std::vector<std::string> v) {
  GgufValue x;
  x.type = GgufType::kArray;
  x.elem = GgufType::kString;
  x.strings = std::move(v);
  return x;
}
GgufValue GgufValue::I32Array(const std::vector<int32_t>& v) {
  GgufValue x;
  x.type = GgufType::kArray;
  x.elem = GgufType::kI32;
  x.ints.assign(v.begin(), v.end());
  return x;
}
GgufValue GgufValue::F32Array(const std::vector<float>& v) {
  GgufValue x;
  x.type = GgufType::kArray;
  x.elem = GgufType::kF32;
  x.floats.assign(v.begin(), v.end());
  return x;
}

bool GgufValue::IsInteger() const {
  switch (type) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kU16:
    case GgufType::kI16:
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kU64:
    case GgufType::kI64:
      return true;
    default:
      return false;
  }
}

std::optional<int64_t> GgufValue::AsInt() const {
  if (!IsInteger()) return std::nullopt;
  if (type == GgufType::kU64 && u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return std::nullopt;
  }
  return i;
}

std::optional<GgmlTypeTraits> GgmlTypeInfo(uint32_t id) {
  switch (static_cast<GgmlType>(id)) {
    case GgmlType::kF32:
      return GgmlTypeTraits{"F32", 1, 4};
    case GgmlType::kF16:
      return GgmlTypeTraits{"F16", 1, 2};
    case GgmlType::kQ4_0:
      return GgmlTypeTraits{"Q4_0", 32, 18};
    case GgmlType::kQ4_1:
      return GgmlTypeTraits{"Q4_1", 32, 20};
    case GgmlType::kQ5_0:
      return GgmlTypeTraits{"Q5_0", 32, 22};
    case GgmlType::kQ5_1:
      return GgmlTypeTraits{"Q5_1", 32, 24};
    case GgmlType::kQ8_0:
      return GgmlTypeTraits{"Q8_0", 32, 34};
    case GgmlType::kQ8_1:
      return GgmlTypeTraits{"Q8_1", 32, 36};
    case GgmlType::kQ2_K:
      return GgmlTypeTraits{"Q2_K", 256, 84};
    case GgmlType::kQ3_K:
      return GgmlTypeTraits{"Q3_K", 256, 110};
    case GgmlType::kQ4_K:
      return GgmlTypeTraits{"Q4_K", 256, 144};
    case GgmlType::kQ5_K:
      return GgmlTypeTraits{"Q5_K", 256, 176};
    case GgmlType::kQ6_K:
      return GgmlTypeTraits{"Q6_K", 256, 210};
    case GgmlType::kQ8_K:
      return GgmlTypeTraits{"Q8_K", 256, 292};
    case GgmlType::kIQ2_XXS:
      return GgmlTypeTraits{"IQ2_XXS", 256, 66};
    case GgmlType::kIQ2_XS:
      return GgmlTypeTraits{"IQ2_XS", 256, 74};
    case GgmlType::kIQ3_XXS:
      return GgmlTypeTraits{"IQ3_XXS", 256, 98};
    case GgmlType::kIQ1_S:
      return GgmlTypeTraits{"IQ1_S", 256, 50};
    case GgmlType::kIQ4_NL:
      return GgmlTypeTraits{"IQ4_NL", 32, 18};
    case GgmlType::kIQ3_S:
      return GgmlTypeTraits{"IQ3_S", 256, 110};
    case GgmlType::kIQ2_S:
      return GgmlTypeTraits{"IQ2_S", 256, 82};
    case GgmlType::kIQ4_XS:
      return GgmlTypeTraits{"IQ4_XS", 256, 136};
    case GgmlType::kI8:
      return GgmlTypeTraits{"I8", 1, 1};
    case GgmlType::kI16:
      return GgmlTypeTraits{"I16", 1, 2};
    case GgmlType::kI32:
      return GgmlTypeTraits{"I32", 1, 4};
    case GgmlType::kI64:
      return GgmlTypeTraits{"I64", 1, 8};
    case GgmlType::kF64:
      return GgmlTypeTraits{"F64", 1, 8};
    case GgmlType::kIQ1_M:
      return GgmlTypeTraits{"IQ1_M", 256, 56};
    case GgmlType::kBF16:
      return GgmlTypeTraits{"BF16", 1, 2};
    case GgmlType::kTQ1_0:
      return GgmlTypeTraits{"TQ1_0", 256, 54};
    case GgmlType::kTQ2_0:
      return GgmlTypeTraits{"TQ2_0", 256, 66};
    case GgmlType::kMXFP4:
      return GgmlTypeTraits{"MXFP4", 32, 17};
  }
  return std::nullopt;
}

std::optional<DType> DTypeFromGgml(uint32_t id) {
  switch (static_cast<GgmlType>(id)) {
    case GgmlType::kF32:
      return DType::kF32;
    case GgmlType::kF16:
      return DType::kF16;
    case GgmlType::kBF16:
      return DType::kBF16;
    case GgmlType::kQ4_0:
      return DType::kQ4_0;
    case GgmlType::kQ8_0:
      return DType::kQ8_0;
    case GgmlType::kQ4_K:
      return DType::kQ4_K;
    case GgmlType::kQ6_K:
      return DType::kQ6_K;
    case GgmlType::kQ5_0:
      return DType::kQ5_0;
    case GgmlType::kQ5_1:
      return DType::kQ5_1;
    case GgmlType::kQ5_K:
      return DType::kQ5_K;
    case GgmlType::kQ3_K:
      return DType::kQ3_K;
    case GgmlType::kQ2_K:
      return DType::kQ2_K;
    case GgmlType::kIQ4_NL:
      return DType::kIQ4_NL;
    case GgmlType::kIQ4_XS:
      return DType::kIQ4_XS;
    case GgmlType::kI8:
      return DType::kI8;
    case GgmlType::kI16:
      return DType::kI16;
    case GgmlType::kI32:
      return DType::kI32;
    case GgmlType::kI64:
      return DType::kI64;
    case GgmlType::kF64:
      return DType::kF64;
    default:
      return std::nullopt;
  }
}

std::optional<GgmlType> GgmlFromDType(DType t) {
  switch (t) {
    case DType::kF32:
      return GgmlType::kF32;
    case DType::kF16:
      return GgmlType::kF16;
    case DType::kBF16:
      return GgmlType::kBF16;
    case DType::kQ4_0:
      return GgmlType::kQ4_0;
    case DType::kQ8_0:
      return GgmlType::kQ8_0;
    case DType::kQ4_K:
      return GgmlType::kQ4_K;
    case DType::kQ6_K:
      return GgmlType::kQ6_K;
    case DType::kQ5_0:
      return GgmlType::kQ5_0;
    case DType::kQ5_1:
      return GgmlType::kQ5_1;
    case DType::kQ5_K:
      return GgmlType::kQ5_K;
    case DType::kQ3_K:
      return GgmlType::kQ3_K;
    case DType::kQ2_K:
      return GgmlType::kQ2_K;
    case DType::kIQ4_NL:
      return GgmlType::kIQ4_NL;
    case DType::kIQ4_XS:
      return GgmlType::kIQ4_XS;
    case DType::kI8:
      return GgmlType::kI8;
    case DType::kI16:
      return GgmlType::kI16;
    case DType::kI32:
      return GgmlType::kI32;
    case DType::kI64:
      return GgmlType::kI64;
    case DType::kF64:
      return GgmlType::kF64;
    case DType::kU8:
    case DType::kBool:
    case DType::kF8_E4M3:
      return std::nullopt;
  }
  return std::nullopt;
}

Shape GgufTensorInfo::shape() const { return Shape(ne.rbegin(), ne.rend()); }

uint64_t GgufAlignUp(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

StatusOr<uint64_t> GgufTensorBytes(const std::vector<int64_t>& ne, const GgmlTypeTraits& traits,
                                   const std::string& what) {
  uint64_t nonzero = 1;
  for (int64_t d : ne) {
    if (d < 0) return Corruption("{}: negative dimension {}", what, d);
    ASSIGN_OR_RETURN(nonzero, CheckedMul(nonzero, static_cast<uint64_t>(std::max<int64_t>(d, 1)), what));
  }
  if (nonzero > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return OutOfRange("{}: more than 2^63 elements", what);
  }
  if (ne[0] % traits.block_size != 0) {
    return Corruption("{}: row length ne[0] = {} is not a multiple of {}'s block size {}", what, ne[0],
                      traits.name, traits.block_size);
  }
  uint64_t rows = 1;
  for (size_t i = 1; i < ne.size(); ++i) rows *= static_cast<uint64_t>(ne[i]);  // bounded above
  const uint64_t row_bytes = static_cast<uint64_t>(ne[0] / traits.block_size) * traits.block_bytes;
  return CheckedMul(row_bytes, rows, what);
}

}  // namespace moerun
