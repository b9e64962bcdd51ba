// TensorSource: the tensors a loader asks for by (Hugging Face) name, whatever file format holds them.
//
// Implemented by Checkpoint (safetensors files, names as stored) and by Gguf-backed adapters that
// map the HF names onto another file's tensors (model/gguf_deepseek2.h). Loaders (MoeWeights,
// ParallelMoe, ReferenceMoe, DeepseekModel) take a `const TensorSource&`.
//
// Contract: Find(name) describes exactly what Get(name) returns (dtype, row-major shape); Names()
// lists every tensor, sorted (a raw GgufFile also lists tensors of ggml types moerun lacks, for
// which Find is nullptr and Get explains; the deepseek2 GGUF view also answers internal aliases of
// listed tensors that Names() omits, model/gguf_deepseek2.h); errors name the source's path() and
// the tensor.
// Thread safety: implementations are immutable after construction; const methods are thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace moerun {

// What a tensor is without its bytes.
struct TensorMeta {
  std::string name;  // e.g. "model.layers.1.mlp.gate.weight"
  DType dtype = DType::kF32;
  Shape shape;  // row-major, e.g. [64, 2048]
};

class TensorSource {
 public:
  virtual ~TensorSource() = default;

  // The tensor `name`. NotFound names the tensor and path().
  virtual StatusOr<Tensor> Get(std::string_view name) const = 0;
  // nullptr if absent.
  virtual const TensorMeta* Find(std::string_view name) const = 0;
  bool Has(std::string_view name) const { return Find(name) != nullptr; }
  // Every tensor name, sorted.
  virtual std::vector<std::string> Names() const = 0;
  // The file or directory the tensors come from (for messages).
  virtual const std::string& path() const = 0;
  // Drops the resident pages of file mappings once their bytes have been packed elsewhere, so a
  // loaded model does not hold the file twice (packed copy + page-mapped source). Views stay
  // valid: a later read faults the page back in from the page cache. Default: nothing to drop.
  virtual void ReleaseResidentPages() const {}
};

}  // namespace moerun
