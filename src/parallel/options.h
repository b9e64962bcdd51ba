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

inline constexpr int kDeterministicBlocks = 8;  // canonical K-blocks of every expert's down projection

// The sizes a layout splits. Zero means "not present" (a lone MoE block has no heads or vocabulary).
struct LayoutDims {
  int64_t routed_experts = 0;       // n_routed_experts
  int64_t moe_intermediate = 0;     // moe_intermediate_size
  int64_t shared_intermediate = 0;  // shared experts' total width (0: none)
  int64_t attention_heads = 0;      // num_attention_heads (whole models)
  int64_t v_head_dim = 0;           // deterministic o_proj K-blocks (whole models)
  int64_t vocab = 0;                // vocab_size (whole models)
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
  std::string ToString() const;  // "tp=2 dp=1 ep sp dispatch=alltoall deterministic"
};

}  // namespace moerun
