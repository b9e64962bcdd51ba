// GgufFile: the GGUF reader of io/gguf.h (mmap, every size checked before use). About 500 lines:
// one parser, each bounds check next to the read it guards.
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
#include <map>
#include <set>

#include "core/checked_math.h"
#include "io/atomic_file.h"
#include "io/gguf.h"

namespace moerun {
namespace {

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

}  // namespace

// ---------------------------------------------------------------------------------------------
// GgufFile

GgufFile::~GgufFile() { UnmapReadOnly(mapping_, size_); }

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
    if (a->u == 0 || !std::has_single_bit(a->u) || a->u > kGgufMaxAlignment) {
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
    ASSIGN_OR_RETURN(info.nbytes, GgufTensorBytes(info.ne, *traits,
                                                  fmt::format("{} ({} {})", ctx, traits->name,
                                                              ShapeToString(info.shape()))));
    if (info.offset % alignment_ != 0) {
      return Corruption("{}: data offset {} is not a multiple of the alignment {}", ctx, info.offset,
                        alignment_);
    }
    tensor_index_.emplace(info.name, tensors_.size());
    tensors_.push_back(std::move(info));
  }
  data_start_ = GgufAlignUp(r.pos(), alignment_);
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
        "{}: {} has GGML type {} ({}), which moerun cannot read; requantise the file with llama.cpp's "
        "quantize to Q4_K_M or Q8_0",
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

std::string GgufFile::LoadOnlyTypesSummary() const {
  std::map<uint32_t, int> counts;  // ggml type id -> tensors
  for (const GgufTensorInfo& t : tensors_) {
    const std::optional<DType> dt = DTypeFromGgml(t.type);
    if (dt && IsLoadOnlyDType(*dt)) ++counts[t.type];
  }
  std::string s;
  for (const auto& [id, n] : counts) {
    if (!s.empty()) s += ", ";
    s += fmt::format("{} x {}", GgmlTypeInfo(id)->name, n);
  }
  return s;
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

void GgufFile::ReleaseResidentPages() const {
  if (mapping_ != nullptr) ::madvise(mapping_, size_, MADV_DONTNEED);
}

}  // namespace moerun
