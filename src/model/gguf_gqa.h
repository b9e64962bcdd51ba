// llama.cpp GGUF files of the GQA MoE families <-> moerun's Hugging Face view (docs/gguf.md §3):
//
//   HF model_type  llama.cpp arch  rope (llama.cpp)  q/k rows in the file
//   qwen2_moe      qwen2moe        NEOX              as HF (rotate-half)
//   qwen3_moe      qwen3moe        NEOX              as HF
//   olmoe          olmoe           NEOX              as HF
//   mixtral        llama           NORM              permuted per head to interleaved pairs
//
// llama.cpp's `llama` arch rotates adjacent pairs (x[2i], x[2i+1]) where HF rotates halves
// (x[i], x[i + hd/2]), so convert_hf_to_gguf.py's LlamaModel.permute reorders each head's q and k
// rows: GGUF row h·hd + 2j + t = HF row h·hd + t·hd/2 + j (t in {0, 1}, j < hd/2). The scores
// q·k are the same either way; the writer applies the permutation and the reader undoes it, so
// moerun runs its rotate-half RoPE on HF-ordered rows (LlamaQkRowOrder).
//
// Writing refuses, naming the field, what llama.cpp cannot represent: dense layers
// (mlp_only_layers / decoder_sparse_step) for qwen2moe / qwen3moe, norm_topk_prob other than
// llama.cpp's fixed choice (qwen2moe, olmoe: false; qwen3moe, llama: true), a qwen2moe without a
// shared expert, an OLMoE with clip_qkv or num_key_value_heads != num_attention_heads (llama.cpp
// sizes olmoe's attn_k_norm and attn_output by n_embd), and qwen2moe / olmoe with
// num_attention_heads · head_dim != hidden_size.
//
// Thread safety: the returned objects are immutable; the functions are plain functions.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "io/gguf.h"
#include "io/tensor_source.h"
#include "model/gguf_model.h"
#include "model/model_config.h"

namespace moerun {

// The llama.cpp architecture of an HF model_type ("qwen2moe" for "qwen2_moe", ...), "" if none.
std::string_view GqaGgufArch(std::string_view model_type);
// True for qwen2moe, qwen3moe, olmoe and llama.
bool IsGqaGgufArch(std::string_view arch);

// The HF config.json text of a qwen2moe / qwen3moe / olmoe / llama (with experts) GGUF.
StatusOr<std::string> GqaConfigJsonFromGguf(const GgufFile& file);

// The HF-named view of such a file; q/k rows of a llama file come back in HF order (a copy in the
// stored type), everything else as row views. Every GGUF tensor must map to an HF name and have
// the shape `config` implies (InvalidArgument naming the GGUF tensor, its shape and the expected one).
StatusOr<std::unique_ptr<TensorSource>> MakeGqaTensorSource(std::shared_ptr<GgufFile> file,
                                                            const ModelConfig& config);

// Writes an HF checkpoint of a GQA family as its llama.cpp architecture (see the top comment).
Status WriteGqaGguf(const TensorSource& hf, const std::string& config_json, const std::string& tokenizer_json,
                    const std::string& tokenizer_config_json, const GgufWriteOptions& options,
                    const std::string& out_path);

// For `heads` heads of `head_dim` rows: to_gguf: GGUF row r = HF row result[r]; otherwise HF row r =
// GGUF row result[r] (convert_hf_to_gguf.py's LlamaModel.permute and its inverse).
std::vector<int64_t> LlamaQkRowOrder(int64_t heads, int64_t head_dim, bool to_gguf);

}  // namespace moerun
