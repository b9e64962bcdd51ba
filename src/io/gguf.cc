#include "io/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <system_error>

#include "core/checked_math.h"
#include "io/atomic_file.h"

namespace moerun {

static_assert(std::endian::native == std::endian::little, "moerun requires a little-endian host");

namespace {

std::string ErrnoMessage(int err) { return std::error_code(err, std::generic_category()).message(); }

constexpr uint64_t kAlignmentKeyMax = uint64_t{1} << 30;

// Bytes of one scalar of a fixed-size type; 0 for string/array.
uint64_t ScalarBytes(GgufType t) {
  switch (t) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kBool:
      return 1;
    case GgufType::kU16:
    case GgufType::kI16:
      return 2;
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kF32:
      return 4;
    case GgufType::kU64:
    case GgufType::kI64:
    case GgufType::kF64:
      return 8;
    case GgufType::kString:
    case GgufType::kArray:
      return 0;
  }
  return 0;
}

bool KnownType(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::kF64); }

// A bounds-checked little-endian cursor over the file image.
class Reader {
 public:
  Reader(const uint8_t* p, uint64_t size, const std::string& label) : p_(p), size_(size), label_(label) {}
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  Status Need(uint64_t n, std::string_view what) const {
    if (n > remaining()) {
      return Corruption("{}: {} needs {} bytes at offset {}, but the file has {} (truncated?)", label_, what,
                        n, pos_, size_);
    }
    return Status::Ok();
  }
  template <typename T>
  StatusOr<T> Read(std::string_view what) {
    RETURN_IF_ERROR(Need(sizeof(T), what));
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  StatusOr<std::string> ReadString(std::string_view what) {
    ASSIGN_OR_RETURN(uint64_t n, Read<uint64_t>(what));
    if (n > kMaxGgufStringBytes) {
      return OutOfRange("{}: {} has length {}, above the limit of {} bytes", label_, what, n,
                        kMaxGgufStringBytes);
    }
    if (n > remaining()) {
      return Corruption("{}: {} has length {}, but only {} bytes remain at offset {}", label_, what, n,
                        remaining(), pos_);
    }
    std::string s(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(n));
    pos_ += n;
    return s;
  }

 private:
  const uint8_t* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& label_;
};

// `what` names the value for the reader's messages (which add the file label).
StatusOr<GgufValue> ReadScalar(Reader* r, GgufType t, const std::string& what, const std::string& label) {
  GgufValue v;
  v.type = t;
  switch (t) {
    case GgufType::kU8: {
      ASSIGN_OR_RETURN(uint8_t x, r->Read<uint8_t>(what));
      v.u = x;
      v.i = x;
      break;
    }
    case GgufType::kI8: {
      ASSIGN_OR_RETURN(int8_t x, r->Read<int8_t>(what));
      v.i = x;
      break;
    }
    case GgufType::kU16: {
      ASSIGN_OR_RETURN(uint16_t x, r->Read<uint16_t>(what));
      v.u = x;
      v.i = x;
      break;
    }
    case GgufType::kI16: {
      ASSIGN_OR_RETURN(int16_t x, r->Read<int16_t>(what));
      v.i = x;
      break;
    }
    case GgufType::kU32: {
      ASSIGN_OR_RETURN(uint32_t x, r->Read<uint32_t>(what));
      v.u = x;
      v.i = x;
      break;
    }
    case GgufType::kI32: {
      ASSIGN_OR_RETURN(int32_t x, r->Read<int32_t>(what));
      v.i = x;
      break;
    }
    case GgufType::kU64: {
      ASSIGN_OR_RETURN(uint64_t x, r->Read<uint64_t>(what));
      v.u = x;
      v.i = x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? 0 : static_cast<int64_t>(x);
      break;
    }
    case GgufType::kI64: {
      ASSIGN_OR_RETURN(int64_t x, r->Read<int64_t>(what));
      v.i = x;
      break;
    }
    case GgufType::kF32: {
      ASSIGN_OR_RETURN(float x, r->Read<float>(what));
      v.f = x;
      break;
    }
    case GgufType::kF64: {
      ASSIGN_OR_RETURN(double x, r->Read<double>(what));
      v.f = x;
      break;
    }
    case GgufType::kBool: {
      ASSIGN_OR_RETURN(uint8_t x, r->Read<uint8_t>(what));
      if (x > 1) return Corruption("{}: {}: bool value {} is neither 0 nor 1", label, what, x);
      v.u = x;
      break;
    }
    case GgufType::kString: {
      ASSIGN_OR_RETURN(v.s, r->ReadString(what));
      break;
    }
    case GgufType::kArray:
      return Internal("{}: ReadScalar on an array", what);
  }
  return v;
}

StatusOr<GgufValue> ReadValue(Reader* r, uint32_t type_id, const std::string& label, const std::string& key) {
  const std::string what = fmt::format("key '{}'", key);
  if (!KnownType(type_id)) return Corruption("{}: {}: unknown value type {}", label, what, type_id);
  const auto t = static_cast<GgufType>(type_id);
  if (t != GgufType::kArray) return ReadScalar(r, t, what, label);
  ASSIGN_OR_RETURN(uint32_t elem_id, r->Read<uint32_t>(what + " array element type"));
  if (!KnownType(elem_id)) return Corruption("{}: {}: unknown array element type {}", label, what, elem_id);
  const auto elem = static_cast<GgufType>(elem_id);
  if (elem == GgufType::kArray) return Unimplemented("{}: {}: nested arrays are not supported", label, what);
  ASSIGN_OR_RETURN(uint64_t n, r->Read<uint64_t>(what + " array count"));
  // Every element takes at least 1 byte (8 for a string's length): bound the count by the bytes
  // left before allocating anything.
  const uint64_t min_bytes = elem == GgufType::kString ? 8 : ScalarBytes(elem);
  if (n > r->remaining() / min_bytes) {
    return Corruption(
        "{}: {}: array of {} {} elements needs at least {} bytes per element, but only {} remain", label,
        what, n, GgufTypeName(elem), min_bytes, r->remaining());
  }
  GgufValue v;
  v.type = GgufType::kArray;
  v.elem = elem;
  const bool is_string = elem == GgufType::kString;
  const bool is_float = elem == GgufType::kF32 || elem == GgufType::kF64;
  const bool is_unsigned = elem == GgufType::kU8 || elem == GgufType::kU16 || elem == GgufType::kU32 ||
                           elem == GgufType::kU64 || elem == GgufType::kBool;
  if (is_string) {
    v.strings.reserve(static_cast<size_t>(n));
  } else if (is_float) {
    v.floats.reserve(static_cast<size_t>(n));
  } else {
    v.ints.reserve(static_cast<size_t>(n));
  }
  for (uint64_t i = 0; i < n; ++i) {
    ASSIGN_OR_RETURN(GgufValue e, ReadScalar(r, elem, fmt::format("{}[{}]", what, i), label));
    if (is_string) {
      v.strings.push_back(std::move(e.s));
    } else if (is_float) {
      v.floats.push_back(e.f);
    } else {
      v.ints.push_back(is_unsigned ? static_cast<int64_t>(e.u) : e.i);
    }
  }
  return v;
}

void PutU32(uint32_t v, std::string* out) { out->append(reinterpret_cast<const char*>(&v), 4); }
void PutU64(uint64_t v, std::string* out) { out->append(reinterpret_cast<const char*>(&v), 8); }
void PutString(std::string_view s, std::string* out) {
  PutU64(s.size(), out);
  out->append(s);
}

void PutScalar(const GgufValue& v, GgufType t, std::string* out) {
  switch (t) {
    case GgufType::kU8:
    case GgufType::kBool:
      out->push_back(static_cast<char>(v.u));
      break;
    case GgufType::kI8:
      out->push_back(static_cast<char>(static_cast<int8_t>(v.i)));
      break;
    case GgufType::kU16: {
      const auto x = static_cast<uint16_t>(v.u);
      out->append(reinterpret_cast<const char*>(&x), 2);
      break;
    }
    case GgufType::kI16: {
      const auto x = static_cast<int16_t>(v.i);
      out->append(reinterpret_cast<const char*>(&x), 2);
      break;
    }
    case GgufType::kU32:
      PutU32(static_cast<uint32_t>(v.u), out);
      break;
    case GgufType::kI32: {
      const auto x = static_cast<int32_t>(v.i);
      out->append(reinterpret_cast<const char*>(&x), 4);
      break;
    }
    case GgufType::kF32: {
      const auto x = static_cast<float>(v.f);
      out->append(reinterpret_cast<const char*>(&x), 4);
      break;
    }
    case GgufType::kU64:
      PutU64(v.u, out);
      break;
    case GgufType::kI64: {
      const int64_t x = v.i;
      out->append(reinterpret_cast<const char*>(&x), 8);
      break;
    }
    case GgufType::kF64: {
      const double x = v.f;
      out->append(reinterpret_cast<const char*>(&x), 8);
      break;
    }
    case GgufType::kString:
      PutString(v.s, out);
      break;
    case GgufType::kArray:
      break;
  }
}

void PutValue(const GgufValue& v, std::string* out) {
  PutU32(static_cast<uint32_t>(v.type), out);
  if (v.type != GgufType::kArray) {
    PutScalar(v, v.type, out);
    return;
  }
  PutU32(static_cast<uint32_t>(v.elem), out);
  PutU64(v.ArraySize(), out);
  for (const std::string& e : v.strings) PutString(e, out);
  for (double e : v.floats) {
    GgufValue x;
    x.f = e;
    PutScalar(x, v.elem, out);
  }
  for (int64_t e : v.ints) {
    GgufValue x;
    x.u = static_cast<uint64_t>(e);
    x.i = e;
    PutScalar(x, v.elem, out);
  }
}

uint64_t AlignUp(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// Bytes of a tensor of `ne` in ggml type `traits`, checked. Also checks ne[0] % block == 0 and
// that the element count fits int64.
StatusOr<uint64_t> TensorBytes(const std::vector<int64_t>& ne, const GgmlTypeTraits& traits,
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

}  // namespace

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
      return std::nullopt;
  }
  return std::nullopt;
}

Shape GgufTensorInfo::shape() const { return Shape(ne.rbegin(), ne.rend()); }

// ---------------------------------------------------------------------------------------------
// GgufFile

GgufFile::~GgufFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
}

StatusOr<std::shared_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(const ReadOnlyMapping m, MapReadOnly(path));
  std::shared_ptr<GgufFile> file(new GgufFile());
  file->label_ = path;
  file->size_ = m.size;
  file->mapping_ = m.addr;
  file->base_ = static_cast<const uint8_t*>(m.addr);
  RETURN_IF_ERROR(file->Parse());
  return file;
}

StatusOr<std::shared_ptr<GgufFile>> GgufFile::FromBytes(std::string bytes, std::string label) {
  std::shared_ptr<GgufFile> file(new GgufFile());
  file->label_ = std::move(label);
  file->owned_bytes_ = std::move(bytes);
  file->base_ = reinterpret_cast<const uint8_t*>(file->owned_bytes_.data());
  file->size_ = file->owned_bytes_.size();
  RETURN_IF_ERROR(file->Parse());
  return file;
}

Status GgufFile::Parse() {
  Reader r(base_, size_, label_);
  ASSIGN_OR_RETURN(uint32_t magic, r.Read<uint32_t>("the magic"));
  if (magic != kGgufMagic) {
    return Corruption("{}: bad magic 0x{:08x}, expected 0x{:08x} (\"GGUF\"): not a GGUF file", label_, magic,
                      kGgufMagic);
  }
  ASSIGN_OR_RETURN(version_, r.Read<uint32_t>("the version"));
  if (version_ != 2 && version_ != 3) {
    return Unimplemented("{}: GGUF version {} is not supported (only 2 and 3)", label_, version_);
  }
  ASSIGN_OR_RETURN(uint64_t n_tensors, r.Read<uint64_t>("the tensor count"));
  ASSIGN_OR_RETURN(uint64_t n_kv, r.Read<uint64_t>("the key/value count"));
  if (n_tensors > kMaxGgufTensors) {
    return OutOfRange("{}: {} tensors, above the limit of {}", label_, n_tensors, kMaxGgufTensors);
  }
  if (n_kv > kMaxGgufKvs) {
    return OutOfRange("{}: {} key/value pairs, above the limit of {}", label_, n_kv, kMaxGgufKvs);
  }
  // Each kv takes >= 8 + 4 + 1 bytes, each tensor info >= 8 + 4 + 8 + 4 + 8.
  if (n_kv > r.remaining() / 13 || n_tensors > r.remaining() / 32) {
    return Corruption("{}: {} key/value pairs and {} tensors cannot fit in the {} bytes left (truncated?)",
                      label_, n_kv, n_tensors, r.remaining());
  }
  for (uint64_t k = 0; k < n_kv; ++k) {
    ASSIGN_OR_RETURN(std::string key, r.ReadString(fmt::format("key #{}", k)));
    if (key.empty()) return Corruption("{}: key #{} is empty", label_, k);
    if (kv_index_.count(key)) return Corruption("{}: duplicate key '{}'", label_, key);
    ASSIGN_OR_RETURN(uint32_t type_id, r.Read<uint32_t>(fmt::format("the type of key '{}'", key)));
    ASSIGN_OR_RETURN(GgufValue value, ReadValue(&r, type_id, label_, key));
    kv_index_.emplace(key, kvs_.size());
    kvs_.emplace_back(std::move(key), std::move(value));
  }
  if (const GgufValue* a = FindKey("general.alignment")) {
    if (a->type != GgufType::kU32) {
      return Corruption("{}: key 'general.alignment' has type {}, expected u32", label_,
                        GgufTypeName(a->type));
    }
    if (a->u == 0 || !std::has_single_bit(a->u) || a->u > kAlignmentKeyMax) {
      return Corruption("{}: key 'general.alignment' = {} is not a power of two in [1, 2^30]", label_, a->u);
    }
    alignment_ = static_cast<uint32_t>(a->u);
  }
  tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t t = 0; t < n_tensors; ++t) {
    GgufTensorInfo info;
    ASSIGN_OR_RETURN(info.name, r.ReadString(fmt::format("the name of tensor #{}", t)));
    const std::string ctx = fmt::format("{}: tensor '{}'", label_, info.name);
    if (info.name.empty()) return Corruption("{}: tensor #{} has an empty name", label_, t);
    if (info.name.size() > kMaxGgufNameBytes) {
      return Corruption("{}: name of {} bytes exceeds ggml's limit of {}", ctx, info.name.size(),
                        kMaxGgufNameBytes);
    }
    if (tensor_index_.count(info.name)) return Corruption("{}: duplicate tensor name", ctx);
    ASSIGN_OR_RETURN(uint32_t n_dims, r.Read<uint32_t>(ctx + " n_dims"));
    if (n_dims < 1 || n_dims > kMaxGgufDims) {
      return Corruption("{}: n_dims {} is outside [1, {}]", ctx, n_dims, kMaxGgufDims);
    }
    for (uint32_t d = 0; d < n_dims; ++d) {
      ASSIGN_OR_RETURN(uint64_t ne, r.Read<uint64_t>(ctx + " ne"));
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Corruption("{}: ne[{}] = {} exceeds 2^63 - 1", ctx, d, ne);
      }
      info.ne.push_back(static_cast<int64_t>(ne));
    }
    ASSIGN_OR_RETURN(info.type, r.Read<uint32_t>(ctx + " type"));
    ASSIGN_OR_RETURN(info.offset, r.Read<uint64_t>(ctx + " offset"));
    const std::optional<GgmlTypeTraits> traits = GgmlTypeInfo(info.type);
    if (!traits) return Corruption("{}: unknown ggml type id {}", ctx, info.type);
    ASSIGN_OR_RETURN(info.nbytes,
                     TensorBytes(info.ne, *traits,
                                 fmt::format("{} ({} {})", ctx, traits->name, ShapeToString(info.shape()))));
    if (info.offset % alignment_ != 0) {
      return Corruption("{}: data offset {} is not a multiple of the alignment {}", ctx, info.offset,
                        alignment_);
    }
    tensor_index_.emplace(info.name, tensors_.size());
    tensors_.push_back(std::move(info));
  }
  data_start_ = AlignUp(r.pos(), alignment_);
  if (data_start_ > size_) {
    if (!tensors_.empty() || data_start_ - size_ >= alignment_) {
      return Corruption(
          "{}: the data section starts at {} (header end {} aligned to {}), past the end of the {}-byte file",
          label_, data_start_, r.pos(), alignment_, size_);
    }
    data_start_ = size_;  // a tensor-less file may omit the final padding
  }
  const uint64_t data_len = size_ - data_start_;
  std::vector<const GgufTensorInfo*> order;
  order.reserve(tensors_.size());
  for (const GgufTensorInfo& t : tensors_) {
    if (t.offset > data_len || t.nbytes > data_len - t.offset) {
      return Corruption(
          "{}: tensor '{}': data at offset {} + {} bytes extends past the data section of {} bytes (file "
          "truncated?)",
          label_, t.name, t.offset, t.nbytes, data_len);
    }
    if (t.nbytes > 0) order.push_back(&t);  // empty tensors occupy no bytes
  }
  std::sort(order.begin(), order.end(), [](const GgufTensorInfo* a, const GgufTensorInfo* b) {
    return a->offset != b->offset ? a->offset < b->offset : a->name < b->name;
  });
  for (size_t i = 1; i < order.size(); ++i) {
    const GgufTensorInfo& prev = *order[i - 1];
    const GgufTensorInfo& cur = *order[i];
    if (cur.offset < prev.offset + prev.nbytes) {
      return Corruption("{}: tensor '{}' at [{}, {}) overlaps tensor '{}' at [{}, {})", label_, cur.name,
                        cur.offset, cur.offset + cur.nbytes, prev.name, prev.offset,
                        prev.offset + prev.nbytes);
    }
  }
  for (const GgufTensorInfo& t : tensors_) {
    const std::optional<DType> dt = DTypeFromGgml(t.type);
    if (dt) meta_.emplace(t.name, TensorMeta{t.name, *dt, t.shape()});
  }
  return Status::Ok();
}

const GgufTensorInfo* GgufFile::FindInfo(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufValue* GgufFile::FindKey(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kvs_[it->second].second;
}

StatusOr<int64_t> GgufFile::GetInt(std::string_view key) const {
  const GgufValue* v = FindKey(key);
  if (v == nullptr) return NotFound("{}: missing key '{}'", label_, key);
  const std::optional<int64_t> x = v->AsInt();
  if (!x) {
    return InvalidArgument("{}: key '{}' has type {}{}, expected an integer", label_, key,
                           GgufTypeName(v->type), v->IsInteger() ? " with a value above 2^63" : "");
  }
  return *x;
}

StatusOr<int64_t> GgufFile::GetIntOr(std::string_view key, int64_t fallback) const {
  if (FindKey(key) == nullptr) return fallback;
  return GetInt(key);
}

StatusOr<double> GgufFile::GetFloat(std::string_view key) const {
  const GgufValue* v = FindKey(key);
  if (v == nullptr) return NotFound("{}: missing key '{}'", label_, key);
  if (v->IsFloat()) return v->f;
  if (std::optional<int64_t> x = v->AsInt()) return static_cast<double>(*x);
  return InvalidArgument("{}: key '{}' has type {}, expected a number", label_, key, GgufTypeName(v->type));
}

StatusOr<double> GgufFile::GetFloatOr(std::string_view key, double fallback) const {
  if (FindKey(key) == nullptr) return fallback;
  return GetFloat(key);
}

StatusOr<bool> GgufFile::GetBoolOr(std::string_view key, bool fallback) const {
  const GgufValue* v = FindKey(key);
  if (v == nullptr) return fallback;
  if (v->type != GgufType::kBool) {
    return InvalidArgument("{}: key '{}' has type {}, expected bool", label_, key, GgufTypeName(v->type));
  }
  return v->u != 0;
}

StatusOr<std::string> GgufFile::GetString(std::string_view key) const {
  const GgufValue* v = FindKey(key);
  if (v == nullptr) return NotFound("{}: missing key '{}'", label_, key);
  if (v->type != GgufType::kString) {
    return InvalidArgument("{}: key '{}' has type {}, expected string", label_, key, GgufTypeName(v->type));
  }
  return v->s;
}

StatusOr<std::string> GgufFile::GetStringOr(std::string_view key, std::string fallback) const {
  if (FindKey(key) == nullptr) return fallback;
  return GetString(key);
}

StatusOr<std::vector<std::string>> GgufFile::GetStringArray(std::string_view key) const {
  const GgufValue* v = FindKey(key);
  if (v == nullptr) return NotFound("{}: missing key '{}'", label_, key);
  if (v->type != GgufType::kArray || v->elem != GgufType::kString) {
    return InvalidArgument("{}: key '{}' has type {}{}, expected an array of strings", label_, key,
                           GgufTypeName(v->type),
                           v->type == GgufType::kArray ? fmt::format(" of {}", GgufTypeName(v->elem)) : "");
  }
  return v->strings;
}

StatusOr<std::vector<int64_t>> GgufFile::GetIntArray(std::string_view key) const {
  const GgufValue* v = FindKey(key);
  if (v == nullptr) return NotFound("{}: missing key '{}'", label_, key);
  GgufValue probe;
  probe.type = v->elem;
  if (v->type != GgufType::kArray || !probe.IsInteger()) {
    return InvalidArgument("{}: key '{}' has type {}{}, expected an array of integers", label_, key,
                           GgufTypeName(v->type),
                           v->type == GgufType::kArray ? fmt::format(" of {}", GgufTypeName(v->elem)) : "");
  }
  if (v->elem == GgufType::kU64) {
    for (size_t i = 0; i < v->ints.size(); ++i) {
      if (v->ints[i] < 0) return InvalidArgument("{}: key '{}'[{}] exceeds 2^63 - 1", label_, key, i);
    }
  }
  return v->ints;
}

StatusOr<Tensor> GgufFile::Get(std::string_view name) const {
  const GgufTensorInfo* info = FindInfo(name);
  if (info == nullptr) return NotFound("{}: no tensor '{}'", label_, name);
  const std::optional<DType> dt = DTypeFromGgml(info->type);
  if (!dt) {
    const std::optional<GgmlTypeTraits> traits = GgmlTypeInfo(info->type);
    return Unimplemented(
        "{}: tensor '{}' has ggml type {} ({}), which moerun does not support "
        "(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K, I8-I64, F64)",
        label_, name, traits ? traits->name : "?", info->type);
  }
  const uint8_t* p = base_ + data_start_ + info->offset;
  const size_t align = IsBlockDType(*dt) ? 2 : DTypeSize(*dt);
  if (info->nbytes == 0 || reinterpret_cast<uintptr_t>(p) % align == 0) {
    return Tensor::View(*dt, info->shape(), const_cast<uint8_t*>(p),
                        std::shared_ptr<const void>(shared_from_this()));
  }
  ASSIGN_OR_RETURN(Tensor copy, Tensor::Zeros(*dt, info->shape()));
  std::memcpy(copy.raw(), p, static_cast<size_t>(info->nbytes));
  return copy;
}

const TensorMeta* GgufFile::Find(std::string_view name) const {
  auto it = meta_.find(name);
  return it == meta_.end() ? nullptr : &it->second;
}

std::vector<std::string> GgufFile::Names() const {
  std::vector<std::string> names;
  names.reserve(tensor_index_.size());
  for (const auto& [name, unused] : tensor_index_) names.push_back(name);
  return names;
}

// ---------------------------------------------------------------------------------------------
// GgufWriter

StatusOr<std::unique_ptr<GgufWriter>> GgufWriter::Create(const std::string& path, uint32_t alignment) {
  if (alignment == 0 || !std::has_single_bit(alignment) || alignment > kAlignmentKeyMax) {
    return InvalidArgument("{}: alignment {} is not a power of two in [1, 2^30]", path, alignment);
  }
  std::unique_ptr<GgufWriter> w(new GgufWriter());
  w->path_ = path;
  w->tmp_path_ = path + ".tmp." + std::to_string(::getpid());
  w->alignment_ = alignment;
  errno = 0;
  std::FILE* f = std::fopen(w->tmp_path_.c_str(), "wbe");
  if (f == nullptr) {
    return IOError("cannot write '{}': cannot create temporary file '{}': {}", path, w->tmp_path_,
                   ErrnoMessage(errno));
  }
  w->file_ = f;
  if (alignment != kGgufDefaultAlignment)
    w->kvs_.emplace_back("general.alignment", GgufValue::U32(alignment));
  return w;
}

GgufWriter::~GgufWriter() {
  if (file_ != nullptr) std::fclose(static_cast<std::FILE*>(file_));
  if (!finished_) std::remove(tmp_path_.c_str());
}

Status GgufWriter::AddKv(std::string key, GgufValue value) {
  if (header_written_) return InvalidArgument("{}: key '{}' added after tensor data started", path_, key);
  if (key.empty()) return InvalidArgument("{}: empty key", path_);
  for (const auto& [k, unused] : kvs_) {
    if (k == key) return InvalidArgument("{}: duplicate key '{}'", path_, key);
  }
  if (value.type == GgufType::kArray && value.elem == GgufType::kArray) {
    return InvalidArgument("{}: key '{}': nested arrays are not supported", path_, key);
  }
  kvs_.emplace_back(std::move(key), std::move(value));
  return Status::Ok();
}

Status GgufWriter::AddTensor(std::string name, DType dtype, Shape shape) {
  const std::string ctx = fmt::format("{}: tensor '{}'", path_, name);
  if (header_written_) return InvalidArgument("{} added after tensor data started", ctx);
  if (name.empty() || name.size() > kMaxGgufNameBytes) {
    return InvalidArgument("{}: name length {} is outside [1, {}]", ctx, name.size(), kMaxGgufNameBytes);
  }
  for (const Decl& d : decls_) {
    if (d.name == name) return InvalidArgument("{}: duplicate tensor name", ctx);
  }
  const std::optional<GgmlType> type = GgmlFromDType(dtype);
  if (!type) return InvalidArgument("{}: dtype {} cannot be stored in GGUF", ctx, DTypeName(dtype));
  if (shape.empty() || shape.size() > static_cast<size_t>(kMaxGgufDims)) {
    return InvalidArgument("{}: rank {} is outside [1, {}]", ctx, shape.size(), kMaxGgufDims);
  }
  const GgmlTypeTraits traits = *GgmlTypeInfo(static_cast<uint32_t>(*type));
  std::vector<int64_t> ne(shape.rbegin(), shape.rend());
  StatusOr<uint64_t> nbytes =
      TensorBytes(ne, traits, fmt::format("{} ({} {})", ctx, traits.name, ShapeToString(shape)));
  if (!nbytes.ok()) return InvalidArgument("{}", nbytes.status().message());
  uint64_t offset = 0;
  if (!decls_.empty()) offset = decls_.back().offset + AlignUp(decls_.back().nbytes, alignment_);
  decls_.push_back(Decl{std::move(name), *type, std::move(ne), *nbytes, offset});
  return Status::Ok();
}

Status GgufWriter::WriteRaw(const void* data, size_t n) {
  if (n == 0) return Status::Ok();
  if (std::fwrite(data, 1, n, static_cast<std::FILE*>(file_)) != n) {
    const int err = errno != 0 ? errno : EIO;
    failed_ = IOError("cannot write '{}' ({} bytes at offset {} of '{}'): {}", path_, n, written_, tmp_path_,
                      ErrnoMessage(err));
    return failed_;
  }
  written_ += n;
  return Status::Ok();
}

Status GgufWriter::PadTo(uint64_t multiple) {
  static const char kZeros[256] = {};
  uint64_t pad = AlignUp(written_, multiple) - written_;
  while (pad > 0) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(pad, sizeof kZeros));
    RETURN_IF_ERROR(WriteRaw(kZeros, n));
    pad -= n;
  }
  return Status::Ok();
}

Status GgufWriter::WriteHeader() {
  std::string h;
  PutU32(kGgufMagic, &h);
  PutU32(3, &h);
  PutU64(decls_.size(), &h);
  PutU64(kvs_.size(), &h);
  for (const auto& [key, value] : kvs_) {
    PutString(key, &h);
    PutValue(value, &h);
  }
  for (const Decl& d : decls_) {
    PutString(d.name, &h);
    PutU32(static_cast<uint32_t>(d.ne.size()), &h);
    for (int64_t x : d.ne) PutU64(static_cast<uint64_t>(x), &h);
    PutU32(static_cast<uint32_t>(d.type), &h);
    PutU64(d.offset, &h);
  }
  RETURN_IF_ERROR(WriteRaw(h.data(), h.size()));
  RETURN_IF_ERROR(PadTo(alignment_));
  data_start_ = written_;
  header_written_ = true;
  return Status::Ok();
}

uint64_t GgufWriter::RemainingInCurrentTensor() const {
  if (current_ >= decls_.size()) return 0;
  return decls_[current_].nbytes - current_done_;
}

std::string GgufWriter::CurrentTensorName() const {
  return current_ < decls_.size() ? decls_[current_].name : std::string();
}

Status GgufWriter::Append(const void* data, size_t n) {
  RETURN_IF_ERROR(failed_);
  if (!header_written_) RETURN_IF_ERROR(WriteHeader());
  const auto* p = static_cast<const uint8_t*>(data);
  while (true) {
    // Skip (and pad) completed tensors, including empty ones.
    while (current_ < decls_.size() && current_done_ == decls_[current_].nbytes) {
      RETURN_IF_ERROR(PadTo(alignment_));
      ++current_;
      current_done_ = 0;
    }
    if (n == 0) return Status::Ok();
    if (current_ >= decls_.size()) {
      failed_ = InvalidArgument("{}: {} bytes appended past the last declared tensor", path_, n);
      return failed_;
    }
    const uint64_t take = std::min<uint64_t>(n, decls_[current_].nbytes - current_done_);
    RETURN_IF_ERROR(WriteRaw(p, static_cast<size_t>(take)));
    p += take;
    n -= static_cast<size_t>(take);
    current_done_ += take;
  }
}

Status GgufWriter::Finish() {
  RETURN_IF_ERROR(failed_);
  RETURN_IF_ERROR(Append(nullptr, 0));  // writes the header and pads trailing empty tensors
  if (current_ < decls_.size()) {
    return InvalidArgument("{}: tensor '{}' has {} of {} bytes (and {} tensors after it are missing)", path_,
                           decls_[current_].name, current_done_, decls_[current_].nbytes,
                           decls_.size() - current_ - 1);
  }
  auto* f = static_cast<std::FILE*>(file_);
  int err = 0;
  if (std::fflush(f) != 0) err = errno != 0 ? errno : EIO;
  if (err == 0 && ::fsync(::fileno(f)) != 0) err = errno;
  if (std::fclose(f) != 0 && err == 0) err = errno != 0 ? errno : EIO;
  file_ = nullptr;
  if (err != 0) {
    failed_ = IOError("cannot write '{}' (flushing '{}'): {}", path_, tmp_path_, ErrnoMessage(err));
    return failed_;
  }
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    err = errno;
    failed_ = IOError("cannot write '{}': rename from '{}' failed: {}", path_, tmp_path_, ErrnoMessage(err));
    return failed_;
  }
  finished_ = true;
  return Status::Ok();
}

void GgufFile::ReleaseResidentPages() const {
  if (mapping_ != nullptr) ::madvise(mapping_, size_, MADV_DONTNEED);
}

}  // namespace moerun
