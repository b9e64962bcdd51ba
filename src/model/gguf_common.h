// Internal to model/gguf_*.cc: the tensor and metadata plumbing the llama.cpp architecture mappings
// (deepseek2: model/gguf_deepseek2.h; qwen2moe, qwen3moe, olmoe, llama: model/gguf_gqa.h) share —
// the GGUF <-> HF names every architecture has, the writer's type rules, row encoder and tensor plan,
// the HF-named tensor view of a GGUF file and its tensor walk, the common config fields. (The
// vocabularies: model/gguf_vocab.h, model/gguf_spm.h.)
// Not part of the public API (model/gguf_model.h). Thread safety: constants, pure functions and
// an immutable TensorSource.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "io/gguf.h"
#include "io/ordered_object_builder.h"
#include "io/tensor_source.h"
#include "model/gguf_model.h"
#include "model/model_config.h"

namespace moerun::gguf_internal {

using Json = nlohmann::json;
using OJson = nlohmann::ordered_json;

using moerun::OrderedObjectBuilder;  // io/ordered_object_builder.h

inline bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

inline bool IsFloat(DType t) { return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16; }

// A GGUF tensor name (after "blk.N." for a layer's) <-> its HF name (after "model.layers.N.").
struct LayerName {
  std::string_view gguf;
  std::string_view hf;
};
constexpr LayerName kGlobalNames[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

// "blk.12.attn_q.weight" -> (12, "attn_q.weight").
std::optional<std::pair<int64_t, std::string_view>> SplitBlockName(std::string_view name);

// The value written to "<arch>.<suffix>".
inline std::string ArchKey(std::string_view arch, std::string_view suffix) {
  return fmt::format("{}.{}", arch, suffix);
}

// ---------------------------------------------------------------------------------------------
// Writing

// llama.cpp's llama_ftype for general.file_type.
uint32_t FileType(DType target);
// InvalidArgument naming out_path unless target is one of the writable types.
Status CheckTargetType(DType target, const std::string& out_path);
// The general.* keys every writer starts with.
Status AddGeneralKvs(GgufWriter* w, std::string_view arch, const GgufWriteOptions& options);

// Encodes one f32 row as `type` and appends it.
Status AppendRow(GgufWriter* w, DType type, const float* row, int64_t n, std::vector<uint8_t>* buf);
// Appends rows [begin, end) of `t` (F32/BF16/F16 or a block type, any rank, rows along the last
// dim; end < 0: all rows) converted to `type` (as stored when t already has it).
Status AppendTensor(GgufWriter* w, const Tensor& t, DType type, const std::string& name,
                    std::vector<float>* f32, std::vector<uint8_t>* buf, int64_t begin = 0, int64_t end = -1);

// One tensor of the output: its GGUF name, type, shape and how to produce its rows from the HF
// checkpoint.
struct PlannedTensor {
  std::string name;
  DType type = DType::kF32;
  Shape shape;
  // kCopy: the HF tensor `hf`; kExperts: hf is a pattern "...experts.{}.<proj>.weight" for the E
  // experts, stacked; kFusedGate / kFusedUp: the gate / up half of the transformers-v5
  // experts.gate_up_proj [E, 2I, H] (gate rows first); kRowOrder: the HF tensor with its rows
  // reordered (output row r = HF row rows[r]); kCustom: `custom` appends the rows.
  enum class Kind { kCopy, kExperts, kFusedGate, kFusedUp, kRowOrder, kCustom } kind = Kind::kCopy;
  std::string hf;
  std::vector<int64_t> rows;
  std::function<Status(GgufWriter*, std::vector<float>* row, std::vector<uint8_t>* buf)> custom;
};

// The tensors of one output file in llama.cpp's order, planned from an HF checkpoint: every HF
// tensor the plan reads is marked used, so leftovers can be refused.
class TensorPlan {
 public:
  TensorPlan(const TensorSource& hf, DType target) : hf_(hf), target_(target) {}

  // The HF tensor's meta, marked used; NotFound naming it.
  StatusOr<const TensorMeta*> Need(const std::string& hf_name);
  // gguf <- hf as stored (type by GgufTensorType).
  Status Copy(const std::string& gguf, const std::string& hf_name);
  // gguf <- hf with its rows reordered: output row r = HF row rows[r] (rows.size() = HF rows).
  Status CopyRowOrder(const std::string& gguf, const std::string& hf_name, std::vector<int64_t> rows);
  // blk.N.ffn_{gate,up,down}_exps.weight [E, rows, cols] from "<hf_prefix>experts.{e}.<name>.weight"
  // (names: the HF gate / up / down matrix names) or the fused "<hf_prefix>experts.gate_up_proj" /
  // "experts.down_proj".
  Status Experts(const std::string& gguf_prefix, const std::string& hf_prefix, const std::string& gate,
                 const std::string& up, const std::string& down, int64_t n_experts);
  void Add(PlannedTensor t) { plan_.push_back(std::move(t)); }
  DType TypeFor(const std::string& gguf, const Shape& shape) const {
    return GgufTensorType(gguf, shape, target_);
  }
  // InvalidArgument naming the first HF tensor the plan does not use.
  Status CheckAllUsed(std::string_view arch) const;
  // Declares every tensor, then streams their bytes.
  Status Write(GgufWriter* w) const;

 private:
  const TensorSource& hf_;
  DType target_;
  std::vector<PlannedTensor> plan_;
  std::set<std::string> used_;
};

// ---------------------------------------------------------------------------------------------
// Reading

// The fields every architecture has, from "<arch>.*" into `j`: vocab_size (GgufVocabSize),
// hidden_size (embedding_length), num_hidden_layers (block_count), rms_norm_eps
// (attention.layer_norm_rms_epsilon), rope_theta (rope.freq_base, default 10000) and
// max_position_embeddings (context_length, default 4096).
Status AddCommonHparams(const GgufFile& f, std::string_view arch, OJson* j);
// bos_token_id / eos_token_id (tokenizer.ggml.*_token_id, when present), tie_word_embeddings (no
// output.weight) and hidden_act silu into `j`.
Status AddTrailingFields(const GgufFile& f, OJson* j);
// The vocabulary size: "<arch>.vocab_size", else token_embd's rows, else the token count.
StatusOr<int64_t> GgufVocabSize(const GgufFile& f, std::string_view arch);

Status CheckShape(const GgufFile& f, const std::string& name, const Shape& got, const Shape& want);

// The HF-named view of a GGUF file: each entry serves one GGUF tensor as stored, one expert of a
// merged 3-D expert tensor (a row view), the stored rows in another order (same dtype, a copy), or
// whatever a function computes.
class GgufHfSource : public TensorSource {
 public:
  enum class Kind { kDirect, kExpert, kRowOrder, kComputed };
  struct Entry {
    TensorMeta meta;
    Kind kind = Kind::kDirect;
    std::string gguf;                           // the source tensor (kDirect, kExpert, kRowOrder)
    int64_t expert = 0;                         // kExpert
    std::vector<int64_t> rows;                  // kRowOrder: output row r = stored row rows[r]
    std::function<StatusOr<Tensor>()> compute;  // kComputed
  };
  using Map = std::map<std::string, Entry, std::less<>>;

  // `internal`: entries Get/Find serve but Names() does not list.
  GgufHfSource(std::shared_ptr<GgufFile> file, Map map, Map internal = {})
      : file_(std::move(file)), map_(std::move(map)), internal_(std::move(internal)) {}

  StatusOr<Tensor> Get(std::string_view name) const override;
  const TensorMeta* Find(std::string_view name) const override;
  std::vector<std::string> Names() const override;
  const std::string& path() const override { return file_->path(); }
  void ReleaseResidentPages() const override { file_->ReleaseResidentPages(); }

  // Adds a kDirect entry `hf` for GGUF tensor `gguf`.
  static void AddDirect(const GgufFile& f, const std::string& gguf, const std::string& hf, Map* map);
  // Adds one kExpert entry per expert of the merged GGUF tensor `gguf` [E, rows, cols] under
  // fmt::format(hf_pattern, e); InvalidArgument naming the tensor if it is not [n_experts, r, c].
  static Status AddExperts(const GgufFile& f, const std::string& gguf, const std::string& hf_pattern,
                           int64_t n_experts, Map* map);

 private:
  std::shared_ptr<GgufFile> file_;
  Map map_;
  Map internal_;
};

// Maps every tensor of `f` into `map`: the global names (kGlobalNames) directly, each layer tensor
// "blk.N.<part>" (N < n_layers) through `layer_tensor(gguf_name, N, part, "model.layers.N.")`,
// which adds its entries and returns whether it knew `part`. A tensor of a type moerun cannot read
// is Unimplemented naming it; one nothing maps is InvalidArgument naming it and `arch`.
using LayerTensorMapper = std::function<StatusOr<bool>(const std::string& gguf, int64_t layer,
                                                       std::string_view part, const std::string& hf_prefix)>;
Status MapGgufTensors(const GgufFile& f, int64_t n_layers, std::string_view arch, GgufHfSource::Map* map,
                      const LayerTensorMapper& layer_tensor);

}  // namespace moerun::gguf_internal
