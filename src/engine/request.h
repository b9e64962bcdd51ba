// Request and Sequence: what a client submits to the Engine (engine/engine.h) and the engine's
// world-rank-0 record of it while it runs.
//
// A Request is a prompt, sampling parameters, stop criteria and callbacks. Generation stops after
// a stop id (kept in the ids, e.g. EOS), when the text contains a stop string (the text is cut
// before it: the stop string and anything after are never reported), after max_tokens generated
// ids, or when the sequence fills its context (at least one id is generated whenever
// max_tokens > 0, as a model can sample from the logits of a full cache), or when it is cancelled
// (Engine::Cancel). max_tokens == 0 runs the prompt only (prefill, logits).
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
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/detokenizer.h"
#include "engine/logprobs.h"
#include "engine/sampler.h"

namespace moerun {

enum class FinishReason : uint8_t {
  kNone,       // still running
  kLength,     // max_tokens generated (or the prompt run, for max_tokens == 0)
  kStop,       // a stop id was generated (it is the last id)
  kContext,    // the cache is full
  kCancelled,  // Engine::Cancel (e.g. the client went away), or the engine is draining
};
const char* FinishReasonName(FinishReason r);

class Sequence;

// One generated id, reported on world rank 0.
struct TokenEvent {
  uint64_t sequence = 0;
  int32_t token = 0;
  std::string text;                           // text that became final (UTF-8; may be empty)
  FinishReason finish = FinishReason::kNone;  // set on the sequence's last id
  std::optional<TokenLogprobs> logprobs;      // when the request asked for top_logprobs >= 0
};

struct Request {
  std::vector<int32_t> prompt;  // at least one id
  SamplingParams sampling;
  int64_t max_tokens = 16;                // generated ids at most; 0: run the prompt only
  std::vector<int32_t> stop_ids;          // e.g. {eos}; empty: never stop early
  std::vector<std::string> stop_strings;  // e.g. {"\n\n"}: the text ends before the first match
  int top_logprobs = -1;  // -1: no logprobs; 0..20: each generated id's logprob and that many top ids
  // Logprobs of every prompt token given its prefix (`echo` scoring; the first has none), with
  // top_logprobs alternatives each. Needs replica 0 (rank 0 computes them from its logits).
  bool prompt_logprobs = false;
  int64_t context = 0;  // cache positions; 0: prompt + max_tokens
  int replica = -1;     // DP replica to run on; -1: the engine deals round-robin
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
  // The text so far (complete UTF-8; cut before a stop string), and ids without text.
  const std::string& text() const { return text_; }
  // Prompt logprobs (Request::prompt_logprobs): entry i for prompt id i >= 1 once run; entry 0
  // is empty (the first id has no prefix).
  const std::vector<TokenLogprobs>& prompt_logprobs() const { return prompt_logprobs_; }
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
  size_t emitted_ = 0;             // bytes of text_ reported in events (the rest may start a stop string)
  bool cancel_requested_ = false;  // guarded by the engine's mutex
  std::vector<TokenLogprobs> prompt_logprobs_;
};

}  // namespace moerun
