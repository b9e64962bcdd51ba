// Request and Sequence: what a client submits to the Engine (engine/engine.h) and the engine's
// world-rank-0 record of it while it runs.
//
// A Request is a prompt, sampling parameters, stop criteria and callbacks. Generation stops after
// a stop id (kept in the output, e.g. EOS), after max_tokens generated ids, or when the sequence
// fills its context (at least one id is generated whenever max_tokens > 0, as a model can sample
// from the logits of a full cache). max_tokens == 0 runs the prompt only (prefill, logits).
//
// A Sequence lives on world rank 0: all its ids, its incremental detokenizer and status. Its
// model cache and sampler live on the ranks of the DP replica that runs it (the engine's per-rank
// state), since under a parallel layout those may be other threads or processes.
//
// Thread safety: callbacks run on world rank 0's thread inside Engine::Step.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/detokenizer.h"
#include "engine/sampler.h"

namespace moerun {

enum class FinishReason : uint8_t {
  kNone,     // still running
  kLength,   // max_tokens generated (or the prompt run, for max_tokens == 0)
  kStop,     // a stop id was generated (it is the last id)
  kContext,  // the cache is full
};
const char* FinishReasonName(FinishReason r);

class Sequence;

// One generated id, reported on world rank 0.
struct TokenEvent {
  uint64_t sequence = 0;
  int32_t token = 0;
  std::string text;                           // text that became complete (UTF-8; may be empty)
  FinishReason finish = FinishReason::kNone;  // set on the sequence's last id
};

struct Request {
  std::vector<int32_t> prompt;  // at least one id
  SamplingParams sampling;
  int64_t max_tokens = 16;        // generated ids at most; 0: run the prompt only
  std::vector<int32_t> stop_ids;  // e.g. {eos}; empty: never stop early
  int64_t context = 0;            // cache positions; 0: prompt + max_tokens
  int replica = -1;               // DP replica to run on; -1: the engine deals round-robin
  // Logits of this sequence (rows x vocab), on world rank 0: every prompt row when all_logits,
  // otherwise the row each id is sampled from. Needs replica 0 (its logits are on rank 0).
  bool all_logits = false;
  std::function<void(std::span<const float> rows, int64_t n_rows)> on_logits;
  std::function<void(const TokenEvent&)> on_token;
  std::function<void(const Sequence&)> on_finish;
};

class Sequence {
 public:
  Sequence(uint64_t id, Request request, int replica, int64_t capacity, const Tokenizer* tokenizer)
      : id_(id),
        request_(std::move(request)),
        replica_(replica),
        capacity_(capacity),
        ids_(request_.prompt),
        detokenizer_(tokenizer) {}

  uint64_t id() const { return id_; }
  const Request& request() const { return request_; }
  int replica() const { return replica_; }
  int64_t capacity() const { return capacity_; }
  // Prompt then generated ids.
  const std::vector<int32_t>& ids() const { return ids_; }
  std::span<const int32_t> generated() const {
    return std::span<const int32_t>(ids_).subspan(request_.prompt.size());
  }
  int64_t num_generated() const { return static_cast<int64_t>(ids_.size() - request_.prompt.size()); }
  // Positions the replica's caches hold (ids [0, cached) have been run).
  int64_t cached() const { return cached_; }
  bool running() const { return running_; }
  bool finished() const { return finish_ != FinishReason::kNone; }
  FinishReason finish_reason() const { return finish_; }
  // All text emitted so far (complete UTF-8), and ids without text.
  const std::string& text() const { return text_; }
  int64_t textless() const { return detokenizer_.textless(); }

 private:
  friend class Engine;
  uint64_t id_;
  Request request_;
  int replica_;
  int64_t capacity_;
  std::vector<int32_t> ids_;
  int64_t cached_ = 0;
  bool running_ = false;  // admitted: its cache exists on the replica
  FinishReason finish_ = FinishReason::kNone;
  Detokenizer detokenizer_;
  std::string text_;
};

}  // namespace moerun
