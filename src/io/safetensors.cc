#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>
#include <tuple>

#include "core/checked_math.h"
#include "io/atomic_file.h"
#include "io/json_checks.h"
#include "io/ordered_object_builder.h"

namespace moerun {

// Tensor bytes are copied between files and memory without byte swapping.
static_assert(std::endian::native == std::endian::little, "moerun requires a little-endian host");

namespace {

using Json = nlohmann::json;

constexpr uint64_t kLengthPrefixBytes = 8;
constexpr std::string_view kMetadataKey = "__metadata__";
// A valid header nests at most: root object > tensor entry object > shape array.
constexpr size_t kMaxHeaderDepth = 3;
// Bounds the DOM built from a hostile header; no real tensor has rank > 64.
constexpr size_t kMaxHeaderArrayElements = 64;

// dtypes the safetensors format defines but moerun cannot represent (DType has no such member).
constexpr std::array<std::string_view, 9> kUnsupportedDTypes = {
    "U16", "U32", "U64", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"};

uint64_t ReadLittleEndianU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void AppendLittleEndianU64(uint64_t v, std::string* out) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xffu));
}

// A short description of a JSON value for messages: numbers print their value, others their type.
// (Never dump(): it throws on invalid UTF-8.)
std::string Describe(const Json& v) {
  if (v.is_number_unsigned()) return std::to_string(v.get<uint64_t>());
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number_float()) return fmt::format("the float {}", v.get<double>());
  return v.type_name();
}

// Context prefix "<label>: tensor '<name>'" for entry errors.
std::string TensorContext(const std::string& label, const std::string& name) {
  return fmt::format("{}: tensor '{}'", label, name);
}

StatusOr<DType> ParseEntryDType(const Json& v, const std::string& ctx) {
  if (!v.is_string()) return Corruption("{}: dtype must be a string, got {}", ctx, Describe(v));
  const std::string& name = v.get_ref<const std::string&>();
  if (std::optional<DType> t = ParseDType(name)) return *t;
  if (std::find(kUnsupportedDTypes.begin(), kUnsupportedDTypes.end(), name) != kUnsupportedDTypes.end()) {
    return Unimplemented("{}: dtype '{}' is not supported by moerun", ctx, name);
  }
  return Corruption("{}: unknown dtype '{}'", ctx, name);
}

// `field`[i] as a non-negative integer <= `max`.
StatusOr<uint64_t> ParseIndex(const Json& v, std::string_view field, size_t i, uint64_t max,
                              const std::string& ctx) {
  if (!v.is_number_unsigned() || v.get<uint64_t>() > max) {
    const std::string bound = max == std::numeric_limits<uint64_t>::max()
                                  ? std::string("a non-negative integer")
                                  : fmt::format("an integer in [0, {}]", max);
    return Corruption("{}: {}[{}] is {}, not {}", ctx, field, i, Describe(v), bound);
  }
  return v.get<uint64_t>();
}

StatusOr<Shape> ParseEntryShape(const Json& v, const std::string& ctx) {
  constexpr uint64_t kMaxDim = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (!v.is_array()) return Corruption("{}: shape must be an array, got {}", ctx, Describe(v));
  Shape shape;
  shape.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    ASSIGN_OR_RETURN(uint64_t d, ParseIndex(v[i], "shape", i, kMaxDim, ctx));
    shape.push_back(static_cast<int64_t>(d));
  }
  return shape;
}

Status ParseEntryOffsets(const Json& v, const std::string& ctx, SafetensorsEntry* entry) {
  if (!v.is_array() || v.size() != 2) {
    return Corruption("{}: data_offsets must be an array [BEGIN, END], got {}{}", ctx, Describe(v),
                      v.is_array() ? fmt::format(" of {} elements", v.size()) : "");
  }
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  ASSIGN_OR_RETURN(entry->begin, ParseIndex(v[0], "data_offsets", 0, kMax, ctx));
  ASSIGN_OR_RETURN(entry->end, ParseIndex(v[1], "data_offsets", 1, kMax, ctx));
  if (entry->end < entry->begin) {
    return Corruption("{}: data_offsets [{}, {}] end before they begin", ctx, entry->begin, entry->end);
  }
  return Status::Ok();
}

// Checks END - BEGIN == numel * itemsize, with overflow checks. Also requires the product of the
// nonzero dims to fit int64, so no partial product of the shape can overflow downstream (an empty
// tensor [0, 2^62, 2^62] has numel 0 but would overflow a row-size computation).
Status CheckEntrySize(const SafetensorsEntry& e, const std::string& ctx) {
  const std::string what = fmt::format("{}: shape {}", ctx, ShapeToString(e.shape));
  uint64_t nonzero_product = 1;
  for (int64_t d : e.shape) {
    ASSIGN_OR_RETURN(nonzero_product,
                     CheckedMul(nonzero_product, static_cast<uint64_t>(std::max<int64_t>(d, 1)), what));
  }
  if (nonzero_product > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return OutOfRange("{}: more than 2^63 elements", what);
  }
  ASSIGN_OR_RETURN(uint64_t numel, CheckedProduct(e.shape, what));
  ASSIGN_OR_RETURN(uint64_t nbytes, CheckedMul(numel, DTypeSize(e.dtype), what));
  if (e.end - e.begin != nbytes) {
    return Corruption("{}: data_offsets [{}, {}] hold {} bytes, but {} {} needs {}", ctx, e.begin, e.end,
                      e.end - e.begin, DTypeName(e.dtype), ShapeToString(e.shape), nbytes);
  }
  return Status::Ok();
}

// Parses one `"NAME": {"dtype": ..., "shape": [...], "data_offsets": [B, E]}` entry.
StatusOr<SafetensorsEntry> ParseEntry(const std::string& label, const std::string& name, const Json& v) {
  const std::string ctx = TensorContext(label, name);
  if (!v.is_object()) return Corruption("{}: entry must be an object, got {}", ctx, Describe(v));
  for (const auto& [key, unused] : v.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return Corruption("{}: unknown field '{}'", ctx, key);
    }
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!v.contains(key)) return Corruption("{}: missing field '{}'", ctx, key);
  }
  SafetensorsEntry e;
  e.name = name;
  ASSIGN_OR_RETURN(e.dtype, ParseEntryDType(*v.find("dtype"), ctx));
  ASSIGN_OR_RETURN(e.shape, ParseEntryShape(*v.find("shape"), ctx));
  RETURN_IF_ERROR(ParseEntryOffsets(*v.find("data_offsets"), ctx, &e));
  RETURN_IF_ERROR(CheckEntrySize(e, ctx));
  return e;
}

Status ParseMetadata(const std::string& label, const Json& v, std::map<std::string, std::string>* out) {
  if (!v.is_object()) {
    return Corruption("{}: __metadata__ must be an object of strings, got {}", label, Describe(v));
  }
  for (const auto& [key, value] : v.items()) {
    if (!value.is_string()) {
      return Corruption("{}: __metadata__ '{}' must be a string, got {}", label, key, Describe(value));
    }
    (*out)[key] = value.get_ref<const std::string&>();
  }
  return Status::Ok();
}

// Sorts `entries` by offset and checks they tile [0, buffer_len) with no gap and no overlap.
Status CheckTiling(const std::string& label, uint64_t buffer_len, std::vector<SafetensorsEntry>* entries) {
  std::sort(entries->begin(), entries->end(), [](const auto& a, const auto& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t expected = 0;
  const SafetensorsEntry* prev = nullptr;
  for (const SafetensorsEntry& e : *entries) {
    if (e.begin != expected) {
      const std::string after = prev ? fmt::format("tensor '{}' ends at {}", prev->name, prev->end)
                                     : std::string("the data buffer starts at 0");
      return Corruption("{}: data_offsets [{}, {}] {}: {}", TensorContext(label, e.name), e.begin, e.end,
                        e.begin > expected ? "leave a gap" : "overlap", after);
    }
    expected = e.end;
    prev = &e;
  }
  if (expected == buffer_len) return Status::Ok();
  if (prev == nullptr) {
    return Corruption("{}: the header declares no tensors, but the data buffer holds {} bytes", label,
                      buffer_len);
  }
  if (expected < buffer_len) {
    return Corruption(
        "{}: data_offsets [{}, {}] end the last tensor, but the data buffer holds "
        "{} bytes ({} trailing bytes)",
        TensorContext(label, prev->name), prev->begin, prev->end, buffer_len, buffer_len - expected);
  }
  return Corruption(
      "{}: data_offsets [{}, {}] extend past the data buffer of {} bytes (file "
      "truncated?)",
      TensorContext(label, prev->name), prev->begin, prev->end, buffer_len);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(const ReadOnlyMapping m, MapReadOnly(path));
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->label_ = path;
  file->size_ = m.size;
  file->mapping_ = m.addr;
  file->base_ = static_cast<const uint8_t*>(m.addr);
  RETURN_IF_ERROR(file->Parse());
  return file;
}

StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::FromBytes(std::string bytes, std::string label) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->label_ = std::move(label);
  file->owned_bytes_ = std::move(bytes);
  file->base_ = reinterpret_cast<const uint8_t*>(file->owned_bytes_.data());
  file->size_ = file->owned_bytes_.size();
  RETURN_IF_ERROR(file->Parse());
  return file;
}

SafetensorsFile::~SafetensorsFile() { UnmapReadOnly(mapping_, size_); }

// Layout: [u64 N][N bytes of header JSON][data buffer]; see safetensors.h for the rules.
Status SafetensorsFile::Parse() {
  if (size_ < kLengthPrefixBytes) {
    return Corruption("{}: file is {} bytes, too small for the 8-byte header length", label_, size_);
  }
  const uint64_t n = ReadLittleEndianU64(base_);
  if (n > kMaxSafetensorsHeaderBytes) {
    return OutOfRange("{}: header length {} exceeds the limit of {} bytes", label_, n,
                      kMaxSafetensorsHeaderBytes);
  }
  if (n > size_ - kLengthPrefixBytes) {
    return Corruption("{}: header length {} exceeds the {} bytes after the length prefix", label_, n,
                      size_ - kLengthPrefixBytes);
  }
  const std::string_view header(reinterpret_cast<const char*>(base_ + kLengthPrefixBytes), n);
  if (header.empty() || header.front() != '{') {
    return Corruption("{}: header does not start with '{{'", label_);
  }
  RETURN_IF_ERROR(internal::CheckJsonStructure(header, {kMaxHeaderDepth, kMaxHeaderArrayElements},
                                               fmt::format("{}: header", label_)));
  const Json root = Json::parse(header.begin(), header.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return Corruption("{}: header is not a JSON object", label_);
  }

  data_ = base_ + kLengthPrefixBytes + n;
  const uint64_t buffer_len = size_ - kLengthPrefixBytes - n;
  std::vector<SafetensorsEntry> entries;
  entries.reserve(root.size());
  for (const auto& [key, value] : root.items()) {
    if (key == kMetadataKey) {
      RETURN_IF_ERROR(ParseMetadata(label_, value, &metadata_));
      continue;
    }
    ASSIGN_OR_RETURN(SafetensorsEntry e, ParseEntry(label_, key, value));
    entries.push_back(std::move(e));
  }
  RETURN_IF_ERROR(CheckTiling(label_, buffer_len, &entries));
  entries_ = std::move(entries);
  for (size_t i = 0; i < entries_.size(); ++i) index_.emplace(entries_[i].name, i);
  return Status::Ok();
}

const SafetensorsEntry* SafetensorsFile::Find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

StatusOr<Tensor> SafetensorsFile::Get(std::string_view name) const {
  const SafetensorsEntry* e = Find(name);
  if (e == nullptr) return NotFound("{}: no tensor '{}'", label_, name);
  // Parse() checked [begin, end) lies inside the data buffer.
  const uint8_t* p = data_ + e->begin;
  const size_t nbytes = static_cast<size_t>(e->end - e->begin);
  if (reinterpret_cast<uintptr_t>(p) % DTypeSize(e->dtype) == 0) {
    // Read-only by contract: the mapping is PROT_READ.
    return Tensor::View(e->dtype, e->shape, const_cast<uint8_t*>(p),
                        std::shared_ptr<const void>(shared_from_this()));
  }
  ASSIGN_OR_RETURN(Tensor copy, Tensor::Zeros(e->dtype, e->shape));
  if (nbytes > 0) std::memcpy(copy.raw(), p, nbytes);
  return copy;
}

// ---------------------------------------------------------------------------------------------
// Writer

StatusOr<std::string> SerializeSafetensors(const std::vector<NamedTensor>& tensors,
                                           const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps the header in data order, which is easier to read.
  OrderedObjectBuilder header;
  if (!metadata.empty()) header.Put(std::string(kMetadataKey), metadata);
  std::set<std::string_view> seen;
  std::vector<uint64_t> sizes;
  sizes.reserve(tensors.size());
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == kMetadataKey) return InvalidArgument("tensor name '{}' is reserved", name);
    if (!seen.insert(name).second) return InvalidArgument("duplicate tensor name '{}'", name);
    const std::string what = fmt::format("tensor '{}' shape {}", name, ShapeToString(t.shape()));
    ASSIGN_OR_RETURN(uint64_t numel, CheckedProduct(t.shape(), what));
    ASSIGN_OR_RETURN(uint64_t nbytes, CheckedMul(numel, DTypeSize(t.dtype()), what));
    if (nbytes > 0 && t.raw() == nullptr) {
      return InvalidArgument("tensor '{}' {} {} has no data", name, DTypeName(t.dtype()),
                             ShapeToString(t.shape()));
    }
    ASSIGN_OR_RETURN(uint64_t end, CheckedAdd(offset, nbytes, what));
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = std::string(DTypeName(t.dtype()));
    entry["shape"] = t.shape();
    entry["data_offsets"] = nlohmann::ordered_json::array({offset, end});
    header.Put(name, std::move(entry));
    sizes.push_back(nbytes);
    offset = end;
  }
  std::string text;
  try {
    text = std::move(header).Take().dump();
  } catch (const nlohmann::json::exception& ex) {  // invalid UTF-8 in a name or metadata
    return InvalidArgument("cannot encode safetensors header: {}", ex.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // data buffer starts 8-byte aligned

  std::string out;
  out.reserve(kLengthPrefixBytes + text.size() + offset);
  AppendLittleEndianU64(text.size(), &out);
  out += text;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (sizes[i] > 0) out.append(static_cast<const char*>(tensors[i].second.raw()), sizes[i]);
  }
  return out;
}

Status WriteSafetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  ASSIGN_OR_RETURN(std::string image, SerializeSafetensors(tensors, metadata));
  return WriteFileAtomically(path, image);
}

void SafetensorsFile::ReleaseResidentPages() const {
  if (mapping_ != nullptr) ::madvise(mapping_, size_, MADV_DONTNEED);
}

}  // namespace moerun
