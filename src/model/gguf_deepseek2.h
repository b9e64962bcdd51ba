// llama.cpp `deepseek2` GGUF files <-> moerun's Hugging Face view of DeepSeek-V2/V3 models (the
// deepseek2 mapping behind model/gguf_model.h, which model commands use).
//
// Reading (OpenGgufDeepseek2): the deepseek2.* metadata become the HF config.json that
// ModelConfig::FromJson reads; a TensorSource serves the HF tensor names the loaders ask for from
// the GGUF tensors (per-expert names are row views of the merged 3-D expert tensors; kv_b_proj is
// rebuilt from attn_k_b / attn_v_b when the file has no attn_kv_b); the tokenizer.ggml.* keys
// become a tokenizer.json + tokenizer_config.json that tokenizer/tokenizer.h loads.
// Writing (WriteDeepseek2Gguf): the reverse, with llama.cpp's key names, value types, tensor names
// and layouts as convert_hf_to_gguf.py writes them today (docs/gguf.md lists every rule and its
// source), streamed tensor by tensor through GgufWriter.
//
// Thread safety: the returned objects are immutable; WriteDeepseek2Gguf is a plain function.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"
#include "io/gguf.h"
#include "io/tensor_source.h"
#include "kernels/weight_format.h"
#include "model/gguf_model.h"
#include "model/model_config.h"

namespace moerun {

// (a) The HF config.json text equivalent to a deepseek2 GGUF's metadata. InvalidArgument naming
// the key if general.architecture is not "deepseek2" or a required key is missing or mistyped.
StatusOr<std::string> Deepseek2ConfigJsonFromGguf(const GgufFile& file);

// (c) tokenizer.json and tokenizer_config.json texts from tokenizer.ggml.* (model "gpt2" only;
// pre "deepseek-llm", "deepseek-v3", "qwen2", "olmo", "gpt-2"; others are Unimplemented naming them).
StatusOr<HfTokenizerText> Deepseek2TokenizerFromGguf(const GgufFile& file);

// (b) The HF-named view of a deepseek2 GGUF. Every GGUF tensor must map to an HF name (an
// unknown one is InvalidArgument naming it; one of a ggml type moerun lacks is Unimplemented
// naming it and the type), and every merged/split tensor must have the shape `config` implies.
// A file with attn_k_b / attn_v_b (any type, block-quantised too) serves kv_b_proj rebuilt from
// them in F32 (exact: a permutation of the dequantised values), and also serves the two halves as
// stored under the internal names below, which Get/Find answer but Names() does not list (they
// duplicate kv_b_proj, so converters and validators that walk Names() never see them).
StatusOr<std::unique_ptr<TensorSource>> MakeDeepseek2TensorSource(std::shared_ptr<GgufFile> file,
                                                                  const ModelConfig& config);

// Internal names of a split file's halves, in the stored dtype and bytes (DeepseekModel keeps
// them so, see AttentionWeights): "model.layers.N.self_attn.k_b_proj.weight" = attn_k_b
// [nh, r, dn] (K transposed per head), "...v_b_proj.weight" = attn_v_b [nh, dv, r].
std::string Deepseek2SplitKbName(int64_t layer);
std::string Deepseek2SplitVbName(int64_t layer);
// True for a tensor of `f` the deepseek2 loader never reads: a layer's attn_k_b / attn_v_b when the
// same layer also has attn_kv_b (then kv_b_proj is served as stored), e.g. for `moerun inspect`'s
// resident total, which would otherwise count that layer's kv_b twice. The loader skips them by
// this same function.
bool Deepseek2TensorUnused(const GgufFile& f, std::string_view gguf_name);

// Everything at once.
using GgufDeepseek2 = GgufModel;
StatusOr<GgufDeepseek2> OpenGgufDeepseek2(const std::string& path);

// (d) Writes `hf` (HF names, e.g. a Checkpoint) as a llama.cpp deepseek2 GGUF at `out_path`,
// atomically. `target` is the type of the 2-D+ weight matrices: kF32, kF16, kBF16 or a native
// block type (kQ8_0 ... kQ6_K). Kept in F32 as llama.cpp does: 1-D tensors, norms, ffn_gate_inp
// (router), exp_probs_b. A matrix whose row length is not a multiple of the target's block size
// falls back as llama.cpp (GgufMatrixType: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, then F16).
// tokenizer_config_json may be empty.
using Deepseek2GgufOptions = GgufWriteOptions;
Status WriteDeepseek2Gguf(const TensorSource& hf, const std::string& config_json,
                          const std::string& tokenizer_json, const std::string& tokenizer_config_json,
                          const Deepseek2GgufOptions& options, const std::string& out_path);

// DeepSeek LLM's pre-tokenizer in tokenizer.json form (what tokenizer.ggml.pre "deepseek-llm" means).
std::string_view DeepseekLlmPreTokenizerJson();

// The GGUF type a tensor gets under `target` (the rules above); exposed for tests and docs.
DType Deepseek2GgufTensorType(const std::string& gguf_name, const Shape& shape, DType target);

}  // namespace moerun
