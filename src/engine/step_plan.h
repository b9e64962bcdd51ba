// StepPlan: what world rank 0 tells every rank before an engine step (engine/engine.h).
//
// A fixed-size POD header is broadcast over the world communicator every step; when it announces
// entries, sequence starts or releases, a second broadcast carries them (PODs, token ids and the
// started sequences' KV block tables).
// Every rank therefore takes the same steps and calls the same collectives: kRun runs
// Model::ForwardBatch on each replica's entries (a replica with none runs it empty), kIdle does
// nothing (it keeps ranks waiting for work inside their collective deadline), kShutdown ends a
// serving loop, kAbort tells the other ranks that rank 0 failed.
//
// Invariants: entries of one replica appear in the order their chunks are batched; an entry's
// tokens are the next n_tokens of `tokens`; a start's block table is the next n_blocks of
// `block_ids`. Thread safety: plain data.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "comm/communicator.h"
#include "core/status.h"
#include "engine/sampler.h"

namespace moerun {

enum class StepKind : uint32_t { kRun = 1, kIdle = 2, kShutdown = 3, kAbort = 4 };
const char* StepKindName(StepKind k);

struct StepHeader {
  uint32_t magic = 0x4d52534b;  // "MRSK": a mismatched peer fails loudly
  StepKind kind = StepKind::kIdle;
  uint64_t step = 0;
  uint32_t n_entries = 0, n_tokens = 0, n_starts = 0, n_releases = 0, n_block_ids = 0, pad = 0;
};

enum PlanFlags : uint32_t {
  kPlanSample = 1,     // the replica root samples from this chunk's last row
  kPlanAllLogits = 2,  // the chunk's every row is wanted (logits callbacks, prompt logprobs)
  kPlanLogprobs = 4,   // the sampled id travels with its logprob and top_n alternatives
};

struct PlanEntry {
  uint64_t sequence = 0;
  int32_t replica = 0;
  int32_t n_tokens = 0;
  uint32_t flags = 0;
  uint32_t top_n = 0;  // kPlanLogprobs: alternatives per sampled id, <= kMaxTopLogprobs
};

// A sequence admitted this step: its replica creates the cache over its KV blocks (and its root
// the sampler).
struct SequenceStart {
  uint64_t sequence = 0;
  int64_t capacity = 0;
  int64_t cached = 0;  // positions already in the cache through shared prefix blocks
  int32_t replica = 0;
  uint32_t n_blocks = 0;  // its block table: the next n_blocks ids of StepPlan::block_ids
  SamplingParams sampling;
};

struct StepPlan {
  StepHeader header;
  std::vector<PlanEntry> entries;
  std::vector<int32_t> tokens;
  std::vector<SequenceStart> starts;
  std::vector<uint64_t> releases;  // finished sequences whose caches and samplers are freed
  std::vector<int32_t> block_ids;  // the starts' block tables, in start order
};

static_assert(std::is_trivially_copyable_v<StepHeader> && std::is_trivially_copyable_v<PlanEntry> &&
              std::is_trivially_copyable_v<SequenceStart>);

// Root 0 sends `plan` (its counts set from the vectors); other ranks receive into it.
Status BroadcastPlan(Communicator& world, StepPlan* plan);

}  // namespace moerun
