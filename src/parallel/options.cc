#include "parallel/options.h"

namespace moerun {

const char* DispatchName(DispatchKind d) { return d == DispatchKind::kAllGather ? "allgather" : "alltoall"; }

int64_t DeterministicBlocks(int64_t width, int64_t align) {
  for (int64_t b = kMaxDeterministicBlocks; b >= 1; b /= 2) {
    if (width % b != 0) continue;
    const int64_t block = width / b;
    if (block % 2 == 0 && block % align == 0) return b;
  }
  return 0;
}

Status ParallelOptions::ValidateDeterministic(const LayoutDims& dims) const {
  const int64_t w = world(), i = dims.moe_intermediate, s = dims.shared_intermediate;
  const int64_t b = DeterministicBlocks(i, dims.routed_down_align);
  if (b == 0) {
    return InvalidArgument(
        "--deterministic needs moe_intermediate_size {} to be even and a multiple of the down projections' "
        "{}-column format blocks (use --weight-format bf16)",
        i, dims.routed_down_align);
  }
  if (!ep && b % w != 0) {
    return InvalidArgument(
        "--deterministic with sharded experts needs tp x dp to divide the {} K-blocks of the {}-wide down "
        "projections ({}-column format blocks), got {} (use --ep or fewer ranks)",
        b, i, dims.routed_down_align, w);
  }
  if (s == 0) return Status::Ok();
  const int64_t bs = DeterministicBlocks(s, dims.shared_down_align);
  if (bs == 0) {
    return InvalidArgument(
        "--deterministic needs the shared expert width {} to be even and a multiple of its down projection's "
        "{}-column format blocks (use --weight-format bf16)",
        s, dims.shared_down_align);
  }
  if (SharedSharded() && bs % tp != 0) {
    return InvalidArgument(
        "--deterministic with TP-sharded shared experts needs --tp to divide the {} K-blocks of the {}-wide "
        "shared down projection, got {} (use --shared-replicated)",
        bs, s, tp);
  }
  return Status::Ok();
}

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
  if (deterministic) RETURN_IF_ERROR(ValidateDeterministic(dims));
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
