// Log-probabilities of tokens under the model (the OpenAI `logprobs` / `top_logprobs` fields and
// `echo` prompt scoring). Raw model log-probabilities: log_softmax of the logits row in double,
// before temperature, top-k or top-p (as vLLM reports by default), so they do not depend on the
// sampling parameters. The top alternatives are sorted by log-probability, ties by lower id.
//
// LogprobRecord is the fixed-size form one sampled id and its logprobs travel in from a DP
// replica's root to world rank 0 (engine/engine.h); TokenLogprobs is what callers see.
// Thread safety: pure functions and value types.
#pragma once

#include <cstdint>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

namespace moerun {

inline constexpr int kMaxTopLogprobs = 20;  // OpenAI's bound on top_logprobs

struct TokenLogprobs {
  int32_t token = 0;
  float logprob = 0;                           // log p(token | prefix), e.g. -0.31
  std::vector<std::pair<int32_t, float>> top;  // the `top_n` most likely ids, best first
};

// logits: one row [vocab]; top_n in [0, kMaxTopLogprobs].
TokenLogprobs ComputeLogprobs(std::span<const float> logits, int32_t token, int top_n);

struct LogprobRecord {
  int32_t token = 0;
  float logprob = 0;
  int32_t n_top = 0;
  int32_t pad = 0;
  int32_t top_ids[kMaxTopLogprobs] = {};
  float top_logprobs[kMaxTopLogprobs] = {};

  static LogprobRecord From(const TokenLogprobs& t);
  TokenLogprobs ToLogprobs() const;
};
static_assert(std::is_trivially_copyable_v<LogprobRecord>);

}  // namespace moerun
