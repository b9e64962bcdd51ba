#include "engine/step_plan.h"

#include <cstring>

namespace moerun {

const char* StepKindName(StepKind k) {
  switch (k) {
    case StepKind::kRun:
      return "run";
    case StepKind::kIdle:
      return "idle";
    case StepKind::kShutdown:
      return "shutdown";
    case StepKind::kAbort:
      return "abort";
  }
  return "?";
}

namespace {

template <typename T>
void Put(std::vector<char>* out, const std::vector<T>& v) {
  const size_t at = out->size();
  out->resize(at + v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(out->data() + at, v.data(), v.size() * sizeof(T));
}

template <typename T>
void Get(const std::vector<char>& in, size_t* at, size_t n, std::vector<T>* v) {
  v->resize(n);
  if (n > 0) std::memcpy(v->data(), in.data() + *at, n * sizeof(T));
  *at += n * sizeof(T);
}

}  // namespace

Status BroadcastPlan(Communicator& world, StepPlan* plan) {
  StepHeader& h = plan->header;
  const bool root = world.rank() == 0;
  if (root) {
    h.n_entries = static_cast<uint32_t>(plan->entries.size());
    h.n_tokens = static_cast<uint32_t>(plan->tokens.size());
    h.n_starts = static_cast<uint32_t>(plan->starts.size());
    h.n_releases = static_cast<uint32_t>(plan->releases.size());
    h.n_block_ids = static_cast<uint32_t>(plan->block_ids.size());
  }
  if (world.size() == 1) return Status::Ok();
  // Named in deadline errors and signal reports ("[collective #N of this rank: engine step plan]").
  CollectiveLabel label(world.log(), "engine step plan");
  RETURN_IF_ERROR(world.Broadcast(&h, sizeof h, 0));
  if (h.magic != StepHeader{}.magic) {
    return Internal("engine step plan from rank 0 has magic {:#x}, expected {:#x}", h.magic,
                    StepHeader{}.magic);
  }
  const size_t bytes = h.n_entries * sizeof(PlanEntry) + h.n_tokens * sizeof(int32_t) +
                       h.n_starts * sizeof(SequenceStart) + h.n_releases * sizeof(uint64_t) +
                       h.n_block_ids * sizeof(int32_t);
  if (bytes == 0) return Status::Ok();
  std::vector<char> payload;
  if (root) {
    payload.reserve(bytes);
    Put(&payload, plan->entries);
    Put(&payload, plan->starts);
    Put(&payload, plan->releases);
    Put(&payload, plan->tokens);
    Put(&payload, plan->block_ids);
  } else {
    payload.resize(bytes);
  }
  RETURN_IF_ERROR(world.Broadcast(payload.data(), bytes, 0));
  if (root) return Status::Ok();
  size_t at = 0;
  Get(payload, &at, h.n_entries, &plan->entries);
  Get(payload, &at, h.n_starts, &plan->starts);
  Get(payload, &at, h.n_releases, &plan->releases);
  Get(payload, &at, h.n_tokens, &plan->tokens);
  Get(payload, &at, h.n_block_ids, &plan->block_ids);
  return Status::Ok();
}

}  // namespace moerun
