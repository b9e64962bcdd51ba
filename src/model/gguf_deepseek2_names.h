// Internal to model/gguf_deepseek2*.cc: the deepseek2 GGUF vocabulary both the reader and the writer
// use (architecture key prefix, gating enum, the GGUF <-> HF tensor-name tables; what every
// architecture shares is in model/gguf_common.h). Not part of the public API (model/gguf_deepseek2.h).
// Thread safety: constants and pure functions.
#pragma once

#include <string>
#include <string_view>

#include "model/gguf_common.h"
#include "model/gguf_vocab.h"

namespace moerun::gguf_deepseek2_internal {

using namespace gguf_internal;  // NOLINT(build/namespaces,google-build-using-namespace)

constexpr std::string_view kArch = "deepseek2";

// gguf-py ExpertGatingFuncType.
constexpr int64_t kGatingSoftmax = 1, kGatingSigmoid = 2;

inline std::string Key(std::string_view suffix) { return ArchKey(kArch, suffix); }

constexpr LayerName kLayerNames[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_q_a.weight", "self_attn.q_a_proj.weight"},
    {"attn_q_a_norm.weight", "self_attn.q_a_layernorm.weight"},
    {"attn_q_b.weight", "self_attn.q_b_proj.weight"},
    {"attn_kv_a_mqa.weight", "self_attn.kv_a_proj_with_mqa.weight"},
    {"attn_kv_a_norm.weight", "self_attn.kv_a_layernorm.weight"},
    {"attn_kv_b.weight", "self_attn.kv_b_proj.weight"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
    {"ffn_gate_inp.weight", "mlp.gate.weight"},
    {"exp_probs_b.bias", "mlp.gate.e_score_correction_bias"},
    {"ffn_gate_shexp.weight", "mlp.shared_experts.gate_proj.weight"},
    {"ffn_up_shexp.weight", "mlp.shared_experts.up_proj.weight"},
    {"ffn_down_shexp.weight", "mlp.shared_experts.down_proj.weight"},
};
// Merged 3-D expert tensors [E, rows, cols] <-> HF "mlp.experts.{e}.<proj>.weight".
constexpr LayerName kExpertNames[] = {
    {"ffn_gate_exps.weight", "gate_proj"},
    {"ffn_up_exps.weight", "up_proj"},
    {"ffn_down_exps.weight", "down_proj"},
};
}  // namespace moerun::gguf_deepseek2_internal
