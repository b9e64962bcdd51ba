// Checkpoint: the tensors of a Hugging Face checkpoint, by name, across one or many files.
//
// Accepts (a) one .safetensors file; (b) a directory with model.safetensors; (c) a directory with
// model.safetensors.index.json ({"metadata": {...}, "weight_map": {"name": "shard file"}}) and the
// shards it names. If a directory has both, model.safetensors wins (as in transformers).
// Validation on open: every shard exists and validates; shard names are plain
// file names (no '/', no ".."), so nothing outside the directory is read; every name in the
// weight_map is in its shard's header and every header tensor is in the weight_map; no tensor
// appears in two shards. Every error names the file and tensor.
//
// Thread safety: immutable after Open; const methods are thread-safe.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "io/safetensors.h"
#include "io/tensor_source.h"

namespace moerun {

// Parses model.safetensors.index.json text: its "weight_map" (tensor name -> shard file name),
// every shard a plain file name. Reads no file; `index_path` names the index in errors.
StatusOr<std::map<std::string, std::string>> ParseCheckpointIndex(std::string_view text,
                                                                  const std::string& index_path);

class Checkpoint : public TensorSource {
 public:
  static StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& path);

  // The tensor `name` as stored (dtype and shape from the file). NotFound names the tensor and
  // the checkpoint path.
  StatusOr<Tensor> Get(std::string_view name) const override;
  // nullptr if absent.
  const SafetensorsEntry* Find(std::string_view name) const override;
  // All tensor names, sorted.
  std::vector<std::string> Names() const override;
  const std::string& path() const override { return path_; }
  void ReleaseResidentPages() const override;

 private:
  Checkpoint() = default;
  // Adds every tensor of one .safetensors file.
  Status AddWholeFile(const std::string& file);
  // Adds the shards named by the index at `index_path`, each opened once, and cross-checks them.
  Status AddShards(const std::string& dir, const std::string& index_path);

  std::string path_;  // the file or directory given to Open
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t, std::less<>> file_of_;  // tensor name -> files_ index
};

}  // namespace moerun
