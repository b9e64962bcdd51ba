// llama.cpp GGUF model files <-> moerun's Hugging Face view, for every architecture moerun maps
// (docs/gguf.md): `deepseek2` (DeepSeek-V2/V3, model/gguf_deepseek2.h) and the GQA families
// `qwen2moe`, `qwen3moe`, `olmoe` and `llama` with experts (Mixtral) (model/gguf_gqa.h).
//
// Reading (OpenGgufModel): general.architecture picks the mapping; its metadata become the HF
// config.json that ModelConfig::FromJson reads, a TensorSource serves the HF tensor names the
// loaders ask for, and tokenizer.ggml.* become a tokenizer.json + tokenizer_config.json.
// Writing (WriteGgufModel): config.json's model_type picks the llama.cpp architecture.
//
// Thread safety: the returned objects are immutable; the functions are plain functions.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "core/dtype.h"
#include "core/status.h"
#include "io/gguf.h"
#include "io/tensor_source.h"
#include "kernels/weight_format.h"
#include "model/model_config.h"

namespace moerun {

// tokenizer.json and tokenizer_config.json texts rebuilt from tokenizer.ggml.*.
struct HfTokenizerText {
  std::string tokenizer_json;
  std::string tokenizer_config_json;
};

// What a writer needs besides the checkpoint. `target` is the type of the 2-D+ weight matrices:
// kF32, kF16, kBF16 or a native block type (kQ8_0 ... kQ6_K) (GgufTensorType gives the per-tensor rule).
struct GgufWriteOptions {
  DType target = DType::kF16;
  std::string name;  // general.name, written when not empty
};

// Everything a model command needs from one file.
struct GgufModel {
  std::shared_ptr<GgufFile> file;
  std::string config_json;
  ModelConfig config;
  std::unique_ptr<TensorSource> tensors;
  HfTokenizerText tokenizer;  // empty texts if the file has no tokenizer.ggml.tokens
};

// The HF config.json text of a file of any mapped architecture; Unimplemented naming
// general.architecture for others, InvalidArgument naming a missing or mistyped key.
StatusOr<std::string> GgufConfigJson(const GgufFile& file);
// The tokenizer texts of a file (tokenizer.ggml.model gpt2 or llama).
StatusOr<HfTokenizerText> GgufTokenizerText(const GgufFile& file);
// Opens `path` and maps it (config, tensors, tokenizer when present).
StatusOr<GgufModel> OpenGgufModel(const std::string& path);

// Writes the HF checkpoint `hf` (config.json text, tokenizer texts; tokenizer_config_json may be
// empty) as the llama.cpp architecture of its model_type, atomically at `out_path`. Unimplemented
// naming the model_type or the config field llama.cpp cannot represent.
Status WriteGgufModel(const TensorSource& hf, const std::string& config_json,
                      const std::string& tokenizer_json, const std::string& tokenizer_config_json,
                      const GgufWriteOptions& options, const std::string& out_path);

// The one stderr line a model load prints when `file` holds load-only block types (core/dtype.h),
// e.g. "moerun: m.gguf: Q3_K x 26, IQ4_NL x 52 tensors are not native here: dequantised at load
// into q8_0" (the requested --weight-format's name instead of q8_0 when one is given); "" when
// every tensor is of a native type.
std::string GgufConversionWarning(const GgufFile& file, std::optional<WeightFormat> requested);

// The type a matrix of rows of `cols` elements gets under `target`: target itself, or when its
// blocks do not fit llama.cpp's fallback (Q4_K -> Q5_0; Q5_K -> Q5_1; Q6_K -> Q8_0;
// then F16).
DType GgufMatrixType(DType target, int64_t cols);

// The GGUF type a tensor gets under `target`, as convert_hf_to_gguf.py: 1-D tensors, norms
// (*_norm.weight), the routers (ffn_gate_inp, ffn_gate_inp_shexp) and tensors not named *.weight
// stay F32; other matrices get GgufMatrixType(target, row length).
DType GgufTensorType(const std::string& gguf_name, const Shape& shape, DType target);

}  // namespace moerun
