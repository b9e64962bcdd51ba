// safetensors reader (mmap, fully validated) and writer (atomic).
//
// File layout (huggingface/safetensors):
//   1. 8 bytes: N, little-endian u64, the header length.
//   2. N bytes: UTF-8 JSON object starting with '{', right-padded with spaces:
//        {"NAME": {"dtype": "BF16", "shape": [d0, d1], "data_offsets": [BEGIN, END]}, ...,
//         "__metadata__": {"key": "value"}}   (metadata optional, string -> string)
//   3. The data buffer. Offsets are relative to its start (file offset 8 + N), END is one past.
// Validation on open (each failure is a Corruption/OutOfRange status naming the tensor and bound):
//   N <= kMaxHeaderBytes and 8 + N <= file size; JSON parses and has the shape above; dtype is
//   known; no duplicate names; numel * itemsize computed with overflow checks and equal to
//   END - BEGIN; tensors sorted by BEGIN tile the buffer contiguously from 0 with no gap and no
//   overlap; the last END equals the buffer length. Also (moerun limits): the JSON nests at most
//   3 deep and no array has more than 64 elements (so rank <= 64), every key of every object is
//   unique, and the product of the nonzero dims fits int64. dtypes the format defines but moerun
//   lacks (U16, F8_E5M2, ...) fail with Unimplemented rather than Corruption. F8_E4M3 (DeepSeek-V3's
//   FP8 weights) is read as stored, one byte per element; its scales are separate tensors.
//
// Thread safety: a SafetensorsFile is immutable after Open; all const methods are thread-safe.
// Tensors returned by Get() keep the mapping alive.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "io/tensor_source.h"

namespace moerun {

inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// name (e.g. "experts.3.up_proj.weight"), dtype (e.g. DType::kBF16), shape (e.g. [1408, 2048]).
struct SafetensorsEntry : TensorMeta {
  uint64_t begin = 0;  // byte offset in the data buffer
  uint64_t end = 0;    // one past the last byte
};

class SafetensorsFile : public std::enable_shared_from_this<SafetensorsFile> {
 public:
  // Maps and validates `path`. NotFound if it does not exist.
  static StatusOr<std::shared_ptr<SafetensorsFile>> Open(const std::string& path);
  // Validates an in-memory image (tests, fuzzing). `label` names it in errors.
  static StatusOr<std::shared_ptr<SafetensorsFile>> FromBytes(std::string bytes, std::string label);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return label_; }
  // madvise(MADV_DONTNEED) over the mapping (see TensorSource::ReleaseResidentPages).
  void ReleaseResidentPages() const;
  // Entries in file (offset) order.
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // nullptr if absent.
  const SafetensorsEntry* Find(std::string_view name) const;
  // A read-only view of the tensor's bytes (copied into aligned memory if the file offset is
  // not aligned for the dtype). NotFound naming the tensor and file if absent.
  StatusOr<Tensor> Get(std::string_view name) const;

 private:
  SafetensorsFile() = default;
  Status Parse();

  std::string label_;
  const uint8_t* base_ = nullptr;  // whole file image
  uint64_t size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data buffer
  void* mapping_ = nullptr;        // mmap address, or nullptr for an in-memory image
  std::string owned_bytes_;        // in-memory image
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> entries_ index
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: its name and (f32/bf16/f16/i32/...) contents.
using NamedTensor = std::pair<std::string, Tensor>;

// Serialises `tensors` (in the given order, names must be unique) to a safetensors image. The
// header is space-padded to a multiple of 8; a tensor is naturally aligned (so it reads back as a
// zero-copy view) only if the bytes before it are a multiple of its dtype size, so put wide
// dtypes first when that matters.
StatusOr<std::string> SerializeSafetensors(const std::vector<NamedTensor>& tensors,
                                           const std::map<std::string, std::string>& metadata = {});
// Writes the image atomically: to a temporary file beside `path`, then rename. On any error
// nothing is left at `path` (an existing file there is untouched).
Status WriteSafetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                        const std::map<std::string, std::string>& metadata = {});

}  // namespace moerun
