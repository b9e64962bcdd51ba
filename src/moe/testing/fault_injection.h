// Fault injection for the reduction-state demonstrations (docs/reduction-contract.md §9), as
// layer hooks (moe/layer_hook.h) outside the production layer:
//
//   ReduceSharedAgain  all-reduce the shared-expert output over TP once more, as vLLM did under SP
//                      (#40560). Installed by ParallelMoe::Create when the options ask for it
//                      (`--fault-reduce-shared`).
//   ReduceOutputAgain  all-reduce the finished output once more (the double reduction; under SP a
//                      sum of token shards). Tests install it with ParallelMoe::AddHook.
//
// Both ask the shared executor (AllReduceOrRefuse, parallel/transition.h), which refuses anything
// that is not Partial with the same message the layer would get, unless the layout's
// disable_state_checks (`--unsafe-disable-state-checks`) lets the wrong sum through.
// Thread safety: as the layer's (the rank's thread).
#pragma once

#include <memory>

#include "moe/layer_hook.h"

namespace moerun {

std::unique_ptr<MoeLayerHook> MakeReduceSharedAgain();
std::unique_ptr<MoeLayerHook> MakeReduceOutputAgain();

}  // namespace moerun
