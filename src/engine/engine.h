// Engine: the one SPMD step protocol every model command runs on (generate, eval, logits, bench).
//
// Every rank of the world constructs an Engine with the same options and calls Step in lockstep.
// World rank 0 owns the work: Submit queues a Request (engine/request.h) and deals it to a DP
// replica. Each Step, rank 0 plans (which sequences run, how many tokens each: decode ids first,
// then prefill chunks, within max_step_tokens per replica and max_chunk per sequence), broadcasts
// the plan (engine/step_plan.h), and every rank runs Model::ForwardBatch on its replica's chunks
// (empty on a replica without work, so collectives still match). The root of each replica (its TP
// rank 0, where the logits are gathered) samples with the sequence's sampler; under DP the ids go
// to rank 0 by one all-gather. Rank 0 then appends ids, streams text (engine/detokenizer.h),
// applies the stop criteria and releases finished sequences in the next plan.
//
// With nothing to do rank 0 broadcasts kIdle, so ranks waiting for work return from Step well
// inside their collective deadline (comm/communicator.h). RunUntilIdle steps until no work is
// left (one final kIdle step); Shutdown sends kShutdown; Abort(status) makes every other rank's
// Step fail (use it when rank 0 fails between steps, e.g. on Submit).
//
// Cancel(id) (any thread) ends a queued or running sequence at the next step with kCancelled.
// Logprobs (Request::top_logprobs) are computed at the replica root from the row the id was
// sampled from and travel to rank 0 with the id; prompt logprobs on rank 0 (replica 0).
//
// Admission: up to max_batch running sequences per replica, first come first served; with
// admit_when_idle new sequences join only when nothing runs anywhere (batch rounds: every step of
// a round batches the same sequences as a fixed batch would, as `eval` needs).
//
// KV blocks: each replica's caches live in a pool of kv_blocks blocks of block_tokens positions
// (every rank of the replica holds its rows of the same blocks in its KvBlockStorage,
// model/paged_kv.h; rank 0 keeps the books in a KvBlockManager per replica,
// engine/kv_block_manager.h). At admission a sequence reserves blocks for its whole capacity
// (prompt + max_tokens, or its context); one that does not fit waits at the head of its queue
// until blocks are released; Submit refuses a request needing more blocks than the pool has. With
// prefix caching, full blocks of a sequence's ids are registered once cached and a later prompt
// starting with the same ids reuses them (all but its last prompt id, whose logits are needed;
// never for all_logits requests, which want every prompt row): it starts with cached = the hit
// positions. The plan's SequenceStart carries the block table and hit count to the replica.
// kv_blocks = 0 (auto): the pool grows to max_batch sequences of the largest capacity submitted
// to the replica so far (each rank's storage grows with the block ids it is handed). Memory is
// committed as blocks are first written, not when reserved.
//
// Thread safety: Step, RunUntilIdle, Shutdown, Abort on each rank's own thread; Submit on world
// rank 0, from any thread (the queue is locked; a waiting Step wakes up).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "comm/communicator.h"
#include "core/status.h"
#include "engine/kv_block_manager.h"
#include "engine/request.h"
#include "engine/sampler.h"
#include "engine/step_plan.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace moerun {

struct EngineOptions {
  int tp = 1;                                     // ranks per DP replica; replicas = world size / tp
  int max_batch = 32;                             // running sequences per replica, e.g. 32
  int64_t max_step_tokens = 0;                    // tokens per replica per step; 0: unlimited
  int64_t max_chunk = 0;                          // prompt tokens per sequence per step; 0: the whole prompt
  bool admit_when_idle = false;                   // batch rounds (see above)
  int64_t max_queue = 0;                          // queued (not running) requests at most; 0: no bound
  std::chrono::milliseconds max_idle_wait{1000};  // Step(wait) waits at most this for work
  int64_t kv_blocks = 0;                          // KV pool per replica, in blocks; 0: auto (see above)
  int64_t block_tokens = 16;                      // positions per KV block
  bool prefix_cache = true;                       // reuse cached full blocks of earlier sequences
};

class Engine {
 public:
  // `tokenizer` (may be null: no text) is used on rank 0 only. All must outlive the engine.
  Engine(Communicator& world, Model& model, const Tokenizer* tokenizer, EngineOptions options);
  ~Engine();

  // World rank 0: validates and queues; returns the sequence id. ResourceExhausted when
  // max_queue requests are already waiting.
  StatusOr<uint64_t> Submit(Request request);
  // World rank 0, any thread: the sequence ends with kCancelled at the next step (its cache is
  // freed then). False if it is unknown or already finished.
  bool Cancel(uint64_t id);
  // World rank 0, any thread: Cancel every queued and running sequence; returns how many.
  int CancelAll();
  // All ranks, in lockstep: one step. Rank 0 with no work waits up to `wait` (capped by
  // max_idle_wait and a quarter of the collective timeout) for a Submit, then sends kIdle.
  StatusOr<StepKind> Step(std::chrono::milliseconds wait = std::chrono::milliseconds(0));
  // All ranks: Step until rank 0 has no work left.
  Status RunUntilIdle();
  // World rank 0: every rank's Step returns kShutdown.
  Status Shutdown();
  // World rank 0: every other rank's Step fails; returns `status`.
  Status Abort(Status status);

  // Rank 0: queued or running sequences.
  bool HasWork() const;
  // Rank 0, any thread: sequences waiting for admission and running (all replicas).
  struct Load {
    int64_t queued = 0, running = 0;
  };
  Load CurrentLoad() const;
  // Rank 0: a queued or running sequence, or null: a finished one is freed after its on_finish, so
  // the pointer is safe only on the thread that calls Step (or while no Step runs).
  const Sequence* Find(uint64_t id) const;
  // Rank 0: the KV pool of DP replica `replica` (blocks, prefix-cache hits).
  KvBlockStats KvStats(int replica = 0) const;
  int replicas() const { return replicas_; }

 private:
  struct Local;  // this rank's caches and samplers, by sequence
  StepPlan Plan();
  Status Run(const StepPlan& plan);
  // Rank 0: ends a running sequence (its caches are released with the next plan); flush_text
  // appends the detokenizer's held-back tail to its text.
  Status Finish(Sequence* s, FinishReason reason, bool flush_text);
  // Rank 0: a chunk's logits to the request's callback, and its prompt logprobs.
  void DeliverLogits(Sequence* s, const PlanEntry& e, std::span<const float> block, int64_t rows);
  void ApplyCancellations();
  // Rank 0: appends a sampled id to its sequence, streams its text and applies the stop criteria.
  Status Accept(Sequence* s, const LogprobRecord& sample, bool with_logprobs);
  void Forget(const Sequence* s);  // rank 0: frees a finished sequence's record

  Communicator& world_;
  Model& model_;
  const Tokenizer* tokenizer_;
  EngineOptions options_;
  int replicas_, replica_;
  bool root_of_replica_;
  uint64_t step_ = 0, next_id_ = 1, dealt_ = 0;

  mutable std::mutex mu_;
  std::condition_variable submitted_;
  std::vector<std::deque<Sequence*>> queued_;    // per replica, not yet admitted (guarded by mu_)
  std::vector<std::vector<Sequence*>> running_;  // per replica, admission order
  // Queued and running sequences; a finished one is freed after its on_finish (guarded by mu_).
  std::map<uint64_t, std::unique_ptr<Sequence>> sequences_;
  // Rank 0: per replica, the books of its KV pool (guarded by mu_).
  std::vector<KvBlockManager> kv_;
  std::vector<uint64_t> releases_;  // finished since the last plan
  std::vector<uint64_t> cancels_;   // Cancel()ed since the last plan (guarded by mu_)
  std::unique_ptr<Local> local_;
};

}  // namespace moerun
