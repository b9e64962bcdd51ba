// GgufWriter: the streaming, atomic GGUF writer of io/gguf.h.
#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

#include "core/checked_math.h"
#include "io/atomic_file.h"
#include "io/gguf.h"

namespace moerun {
namespace {

void PutU32(uint32_t v, std::string* out) { out->append(reinterpret_cast<const char*>(&v), 4); }
void PutU64(uint64_t v, std::string* out) { out->append(reinterpret_cast<const char*>(&v), 8); }

std::string ErrnoMessage(int err) { return std::error_code(err, std::generic_category()).message(); }

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

}  // namespace

// ---------------------------------------------------------------------------------------------
// GgufWriter

StatusOr<std::unique_ptr<GgufWriter>> GgufWriter::Create(const std::string& path, uint32_t alignment) {
  if (alignment == 0 || !std::has_single_bit(alignment) || alignment > kGgufMaxAlignment) {
    return InvalidArgument("{}: alignment {} is not a power of two in [1, 2^30]", path, alignment);
  }
  std::unique_ptr<GgufWriter> w(new GgufWriter());
  w->path_ = path;
  RemoveStaleTemporaries(path);
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
      GgufTensorBytes(ne, traits, fmt::format("{} ({} {})", ctx, traits.name, ShapeToString(shape)));
  if (!nbytes.ok()) return InvalidArgument("{}", nbytes.status().message());
  uint64_t offset = 0;
  if (!decls_.empty()) offset = decls_.back().offset + GgufAlignUp(decls_.back().nbytes, alignment_);
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
  uint64_t pad = GgufAlignUp(written_, multiple) - written_;
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

}  // namespace moerun
