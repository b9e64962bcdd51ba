// GGUF (llama.cpp / ggml) reader (mmap, fully validated) and streaming writer (atomic).
//
// File layout (GGUF v3, little-endian; ggml/docs/gguf.md; docs/gguf.md here):
//   1. u32 magic "GGUF" (bytes 47 47 55 46), u32 version (2 or 3), u64 n_tensors, u64 n_kv.
//   2. n_kv key/value pairs: string key, u32 value type, value. A string is u64 length + bytes
//      (no NUL); an array is u32 element type, u64 count, elements (moerun rejects nested arrays).
//   3. n_tensors tensor infos: string name, u32 n_dims (1..4), u64 ne[n_dims] (ne[0] = the row
//      length, the fastest-varying dim), u32 ggml type, u64 offset into the data section.
//   4. Padding to general.alignment (u32, a power of two; 32 if absent), then the data section.
// Validation on open (each failure is a Corruption/OutOfRange status naming the file, the key or
// tensor and the bound): magic; version 2 or 3; n_tensors <= kMaxGgufTensors and n_kv <=
// kMaxGgufKvs; every string <= kMaxGgufStringBytes and inside the file; every array count inside
// the file; known value types; no duplicate keys or tensor names; names < 64 bytes (ggml's
// GGML_MAX_NAME); general.alignment a nonzero power of two of type u32; dims >= 0 with their
// product < 2^63; known ggml type ids whose block size divides ne[0]; sizes from block sizes with
// overflow checks; offsets multiples of the alignment; every tensor inside the file; no overlaps.
// ggml types moerun cannot read (Q4_1, IQ* but IQ4_NL / IQ4_XS, TQ*, Q8_1/Q8_K, MXFP4) parse, and Get() on
// such a tensor is Unimplemented naming the tensor and the type.
//
// Tensors come back as moerun Tensors: shape = the reversed ggml dims (row-major, last dim =
// ne[0]); block types (Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, and the load-only Q3_K, Q2_K,
// IQ4_NL, IQ4_XS that loaders convert) as the core block DTypes; views of the mapping.
//
// Thread safety: a GgufFile is immutable after Open; all const methods are thread-safe. A
// GgufWriter is single-threaded.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "io/tensor_source.h"

namespace moerun {

inline constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian u32
inline constexpr uint32_t kGgufDefaultAlignment = 32;
inline constexpr uint64_t kMaxGgufTensors = 1u << 20;
inline constexpr uint64_t kMaxGgufKvs = 1u << 20;
inline constexpr uint64_t kMaxGgufStringBytes = 1u << 30;
inline constexpr size_t kMaxGgufNameBytes = 63;  // ggml's GGML_MAX_NAME (64) minus the NUL
inline constexpr int kMaxGgufDims = 4;

enum class GgufType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
std::string_view GgufTypeName(GgufType t);  // "u32", "string", "array", ...

// One metadata value. Scalars keep their wire type: unsigned integers and bool in `u` (and in `i`
// when they fit), signed integers in `i`, floats in `f`, strings in `s`. Arrays of `elem` type keep
// their elements packed (a hostile count costs at most 8x the file's bytes): integers and bools in
// `ints` (u64 as its bit pattern), f32/f64 in `floats`, strings in `strings`.
struct GgufValue {
  GgufType type = GgufType::kU32;
  GgufType elem = GgufType::kU8;  // arrays only
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;

  static GgufValue U32(uint32_t v);
  static GgufValue I32(int32_t v);
  static GgufValue U64(uint64_t v);
  static GgufValue F32(float v);
  static GgufValue Bool(bool v);
  static GgufValue String(std::string v);
  static GgufValue StringArray(std::vector<std::string> v);
  static GgufValue I32Array(const std::vector<int32_t>& v);
  static GgufValue F32Array(const std::vector<float>& v);

  size_t ArraySize() const { return ints.size() + floats.size() + strings.size(); }
  bool IsInteger() const;
  bool IsFloat() const { return type == GgufType::kF32 || type == GgufType::kF64; }
  // The integer value as int64 (u64 above 2^63-1: nullopt).
  std::optional<int64_t> AsInt() const;
};

// ggml tensor types (ggml.h enum ggml_type). Only ids with a known block layout are listed.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
};
// Block size (elements) and bytes per block of a ggml type id; nullopt for unknown ids.
struct GgmlTypeTraits {
  std::string_view name;  // "Q4_K"
  int64_t block_size;
  uint64_t block_bytes;
};
std::optional<GgmlTypeTraits> GgmlTypeInfo(uint32_t type_id);

// Shared by the reader (gguf_reader.cc) and the writer (gguf_writer.cc).
inline constexpr uint64_t kGgufMaxAlignment = uint64_t{1} << 30;  // largest general.alignment
uint64_t GgufAlignUp(uint64_t x, uint64_t a);
// Bytes of a tensor of `ne` in ggml type `traits`, checked: also ne[0] % block size == 0 and an
// element count that fits int64; errors name `what`.
StatusOr<uint64_t> GgufTensorBytes(const std::vector<int64_t>& ne, const GgmlTypeTraits& traits,
                                   const std::string& what);
// The moerun DType of a ggml type, nullopt when moerun cannot read it.
std::optional<DType> DTypeFromGgml(uint32_t type_id);
// The ggml type of a moerun DType, nullopt for dtypes GGUF cannot hold (kBool, kU8).
std::optional<GgmlType> GgmlFromDType(DType t);

struct GgufTensorInfo {
  std::string name;         // e.g. "blk.0.attn_q.weight"
  std::vector<int64_t> ne;  // ggml dims, ne[0] = row length, e.g. [2048, 3072]
  uint32_t type = 0;        // ggml type id
  uint64_t offset = 0;      // byte offset in the data section
  uint64_t nbytes = 0;      // bytes of data
  Shape shape() const;      // row-major: reversed ne, e.g. [3072, 2048]
};

class GgufFile : public TensorSource, public std::enable_shared_from_this<GgufFile> {
 public:
  // Maps and validates `path`. NotFound if it does not exist.
  static StatusOr<std::shared_ptr<GgufFile>> Open(const std::string& path);
  // Validates an in-memory image (tests, fuzzing). `label` names it in errors.
  static StatusOr<std::shared_ptr<GgufFile>> FromBytes(std::string bytes, std::string label);

  ~GgufFile() override;
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  // Tensor infos in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* FindInfo(std::string_view name) const;
  // Key/value pairs in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kvs_; }
  const GgufValue* FindKey(std::string_view key) const;

  // Typed metadata access. NotFound naming the key if absent (the *Or forms return `fallback`);
  // InvalidArgument naming the key, its type and the wanted one on a type mismatch. Integer
  // getters accept any integer type whose value fits; float getters accept f32, f64 and integers.
  StatusOr<int64_t> GetInt(std::string_view key) const;
  StatusOr<int64_t> GetIntOr(std::string_view key, int64_t fallback) const;
  StatusOr<double> GetFloat(std::string_view key) const;
  StatusOr<double> GetFloatOr(std::string_view key, double fallback) const;
  StatusOr<bool> GetBoolOr(std::string_view key, bool fallback) const;
  StatusOr<std::string> GetString(std::string_view key) const;
  StatusOr<std::string> GetStringOr(std::string_view key, std::string fallback) const;
  // An array of strings / of integers (any integer element type).
  StatusOr<std::vector<std::string>> GetStringArray(std::string_view key) const;
  StatusOr<std::vector<int64_t>> GetIntArray(std::string_view key) const;

  // The load-only block types (core/dtype.h) the tensors use and how many of each, in ggml type
  // id order, e.g. "Q3_K x 26, IQ4_NL x 52"; "" when every tensor is of a native type.
  std::string LoadOnlyTypesSummary() const;

  // TensorSource, under the GGUF names. Get: a read-only view of the mapping (copied if the data
  // is not aligned for the dtype); Unimplemented for ggml types moerun cannot read.
  StatusOr<Tensor> Get(std::string_view name) const override;
  const TensorMeta* Find(std::string_view name) const override;
  std::vector<std::string> Names() const override;
  const std::string& path() const override { return label_; }
  void ReleaseResidentPages() const override;

 private:
  GgufFile() = default;
  Status Parse();

  std::string label_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint64_t data_start_ = 0;
  void* mapping_ = nullptr;
  std::string owned_bytes_;
  uint32_t version_ = 0;
  uint32_t alignment_ = kGgufDefaultAlignment;
  std::vector<std::pair<std::string, GgufValue>> kvs_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
  std::map<std::string, TensorMeta, std::less<>> meta_;  // moerun-typed tensors only
};

// Streaming GGUF v3 writer. Declare every key/value and every tensor (name, dtype, row-major
// shape) first, then append each tensor's bytes in declaration order, in as many pieces as
// wanted (a multi-GB file is never held in memory). Finish() checks that every byte arrived,
// syncs and renames the temporary file over `path`; if Finish is never reached (an error, or the
// writer is destroyed early) the temporary file is removed and `path` is untouched.
// Layout written: header, kvs, tensor infos, padding to the alignment, then each tensor padded
// with zeros to the alignment (also after the last), as llama.cpp's gguf-py writes it.
class GgufWriter {
 public:
  static StatusOr<std::unique_ptr<GgufWriter>> Create(const std::string& path,
                                                      uint32_t alignment = kGgufDefaultAlignment);
  ~GgufWriter();
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;

  // InvalidArgument on a duplicate key, or once tensor data has started. general.alignment is
  // written by the writer itself when the alignment is not 32.
  Status AddKv(std::string key, GgufValue value);
  // InvalidArgument on a duplicate or too long name, a dtype GGUF cannot hold, a rank outside
  // 1..4, or a last dim not a multiple of the dtype's block size.
  Status AddTensor(std::string name, DType dtype, Shape shape);
  // Appends bytes of the current tensor (the first declared one not yet complete). Writes the
  // header on the first call. InvalidArgument if the bytes run past the declared tensors.
  Status Append(const void* data, size_t n);
  // Bytes still expected for the current tensor (0 once all are complete).
  uint64_t RemainingInCurrentTensor() const;
  // Name of the current tensor ("" once all are complete).
  std::string CurrentTensorName() const;
  Status Finish();

 private:
  struct Decl {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    uint64_t nbytes;
    uint64_t offset;
  };
  GgufWriter() = default;
  Status WriteHeader();
  Status WriteRaw(const void* data, size_t n);
  Status PadTo(uint64_t alignment_multiple_of);

  std::string path_, tmp_path_;
  void* file_ = nullptr;  // std::FILE*
  uint32_t alignment_ = kGgufDefaultAlignment;
  std::vector<std::pair<std::string, GgufValue>> kvs_;
  std::vector<Decl> decls_;
  bool header_written_ = false;
  bool finished_ = false;
  Status failed_;            // sticky first error
  uint64_t written_ = 0;     // bytes written so far (whole file)
  uint64_t data_start_ = 0;  // file offset of the data section
  size_t current_ = 0;       // index of the tensor being written
  uint64_t current_done_ = 0;
};

}  // namespace moerun
