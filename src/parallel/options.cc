#include "parallel/options.h"

namespace moerun {

const char* DispatchName(DispatchKind d) { return d == DispatchKind::kAllGather ? "allgather" : "alltoall"; }

Status ParallelOptions::Validate(const LayoutDims& dims, int world_size) const {
  if (tp < 1) return InvalidArgument("--tp {} must be >= 1", tp);
  if (dp < 1) return InvalidArgument("--dp {} must be >= 1", dp);
  if (world_size != tp * dp) {
    return InvalidArgument("world size {} != --tp {} x --dp {} (start {} ranks)", world_size, tp, dp,
                           tp * dp);
  }
  if (sp && tp < 2) return InvalidArgument("--sp needs --tp > 1 (got --tp {})", tp);
  if (sp && !ep)
    return InvalidArgument("--sp needs --ep (sequence-parallel MoE dispatches tokens to expert ranks)");
  if (dispatch == DispatchKind::kAllToAll && !ep) {
    return InvalidArgument(
        "--dispatch alltoall needs --ep (without it every rank holds a slice of every expert)");
  }
  const int64_t w = world(), e = dims.routed_experts, i = dims.moe_intermediate, s = dims.shared_intermediate;
  if (ep && e % w != 0) return InvalidArgument("--ep: {} ranks do not divide {} routed experts", w, e);
  if (!ep && i % w != 0) {
    return InvalidArgument("--tp {} x --dp {} = {} ranks do not divide moe_intermediate_size {}", tp, dp, w,
                           i);
  }
  if (SharedSharded() && s % tp != 0) {
    return InvalidArgument("--tp {} does not divide the shared expert width {} (use --shared-replicated)", tp,
                           s);
  }
  if (deterministic) {
    constexpr int b = kDeterministicBlocks;
    if (!ep && b % w != 0) {
      return InvalidArgument("--deterministic with sharded experts needs tp x dp to divide {}, got {}", b, w);
    }
    if (i % (2 * b) != 0) {
      return InvalidArgument("--deterministic needs moe_intermediate_size {} divisible by {}", i, 2 * b);
    }
    if (s > 0 && s % (2 * b) != 0) {
      return InvalidArgument("--deterministic needs the shared expert width {} divisible by {}", s, 2 * b);
    }
    if (SharedSharded() && b % tp != 0) {
      return InvalidArgument("--deterministic with TP-sharded shared experts needs --tp to divide {}, got {}",
                             b, tp);
    }
  }
  // Whole models: attention heads split over TP (row-parallel o_proj).
  if (dims.attention_heads > 0 && dims.attention_heads % tp != 0) {
    return InvalidArgument("--tp {} does not divide num_attention_heads {}", tp, dims.attention_heads);
  }
  if (deterministic && dims.attention_heads > 0 && dims.v_head_dim % 2 != 0) {
    return InvalidArgument("--deterministic needs an even v_head_dim, got {}", dims.v_head_dim);
  }
  return Status::Ok();
}

std::string ParallelOptions::ToString() const {
  return fmt::format("tp={} dp={}{}{} dispatch={}{}{}", tp, dp, ep ? " ep" : "", sp ? " sp" : "",
                     DispatchName(dispatch), deterministic ? " deterministic" : "",
                     SharedSharded() ? " shared=sharded" : " shared=replicated");
}

}  // namespace moerun
