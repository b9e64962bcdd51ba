// ParallelOptions: the layout flags of a run (--tp --dp --ep --sp --dispatch --deterministic
// --shared-replicated and the fault-injection switches), and LayoutDims, the model sizes a layout
// is checked against. Validate() is the one place a layout is accepted or refused (the runner,
// the model and `moerun plan` all call it through ParallelLayout); each error names the flag and
// the bound it breaks, e.g. "--ep: 3 ranks do not divide 64 routed experts".
// Layouts and who reduces what: docs/reduction-contract.md.
// Thread safety: value types.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"

namespace moerun {

enum class DispatchKind { kAllGather, kAllToAll };
const char* DispatchName(DispatchKind d);

// Deterministic mode cuts the K dimension (the intermediate width) of every down projection into a
// canonical number of K-blocks, the same on every layout: the largest of 8, 4, 2, 1 whose blocks
// have an even width that is a whole multiple of the weight format's K alignment `align` (1 for
// float formats, 32 for q8_0/q4_0, 256 for q4_k/q6_k). DeepSeek-V2-Lite's 1408-wide experts: 8
// blocks of 176 in bf16, 4 of 352 in q8_0/q4_0. Returns 0 when no count fits (an odd width, or
// one that is not a multiple of `align`).
inline constexpr int kMaxDeterministicBlocks = 8;
int64_t DeterministicBlocks(int64_t width, int64_t align);

// The sizes a layout splits. Zero means "not present" (a lone MoE block has no heads or vocabulary).
struct LayoutDims {
  int64_t routed_experts = 0;       // n_routed_experts
  int64_t moe_intermediate = 0;     // moe_intermediate_size
  int64_t shared_intermediate = 0;  // shared experts' total width (0: none)
  // K alignment of the formats the routed / shared down projections are packed in (resolved on the
  // full width, see ResolveWeightFormat): 1 (f32/f16/bf16), 32 (q8_0/q4_0) or 256 (q4_k/q6_k).
  // Only deterministic mode uses them (DeterministicBlocks).
  int64_t routed_down_align = 1;
  int64_t shared_down_align = 1;
  int64_t attention_heads = 0;  // num_attention_heads (whole models)
  int64_t v_head_dim = 0;       // deterministic o_proj K-blocks (whole models)
  int64_t vocab = 0;            // vocab_size (whole models)
};

struct ParallelOptions {
  int tp = 1;       // tensor-parallel ranks per replica, e.g. 2
  int dp = 1;       // data-parallel replicas, e.g. 2
  bool ep = false;  // expert parallel over all tp x dp ranks
  bool sp = false;  // sequence-parallel MoE (needs tp > 1 and ep)
  DispatchKind dispatch = DispatchKind::kAllGather;
  bool deterministic = false;      // bitwise identical across layouts (fixed-point sums)
  bool shared_replicated = false;  // replicate shared experts (always under sp or tp = 1)
  // Fault injection (tests and demonstrations only): all-reduce the shared-expert output over TP
  // once more, as vLLM did under SP (#40560). The state checks refuse it unless they are disabled,
  // in which case the wrong sum is computed, as in the original bug.
  bool fault_reduce_shared = false;
  bool disable_state_checks = false;

  int world() const { return tp * dp; }
  bool SharedSharded() const { return tp > 1 && !sp && !shared_replicated; }
  // Checks the flags against the sizes and the world size; each error names the flag and bound.
  Status Validate(const LayoutDims& dims, int world_size) const;
  // The --deterministic part of Validate: canonical K-blocks exist and the sliced ranks divide them.
  Status ValidateDeterministic(const LayoutDims& dims) const;
  std::string ToString() const;  // "tp=2 dp=1 ep sp dispatch=alltoall deterministic"
};

}  // namespace moerun
