// JSON bodies of OpenAI responses: whole completions / chat completions, their streamed chunks
// (Server-Sent Events payloads), usage, and the logprobs objects of both endpoints. Token texts
// in logprobs are each id's own bytes: valid UTF-8 as is, otherwise "bytes:\xNN..." (as vLLM).
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "engine/logprobs.h"
#include "tokenizer/tokenizer.h"

namespace moerun {

// One choice as it stands (or as a streamed delta).
struct ChoiceState {
  int index = 0;
  std::string text;                          // completions: echo prompt + generated; chat: content
  std::vector<TokenLogprobs> logprobs;       // per reported id (echo: prompt ids first; entry 0 of
  std::vector<bool> logprob_known;           // the prompt has no logprob -> logprob_known false)
  std::optional<std::string> finish_reason;  // "stop" / "length"; none while running
};

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

struct ResponseHeader {
  std::string id;       // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;
};

// The token text of one id for logprobs.
std::string TokenText(const Tokenizer* tokenizer, int32_t id);

nlohmann::json CompletionLogprobs(const ChoiceState& c, const Tokenizer* tokenizer, size_t text_offset_base);
nlohmann::json ChatLogprobs(const ChoiceState& c, const Tokenizer* tokenizer);
nlohmann::json UsageJson(const Usage& u);

// Whole responses.
nlohmann::json CompletionResponse(const ResponseHeader& h, const std::vector<ChoiceState>& choices,
                                  const Usage& usage, bool with_logprobs, const Tokenizer* tokenizer);
nlohmann::json ChatResponse(const ResponseHeader& h, const std::vector<ChoiceState>& choices,
                            const Usage& usage, bool with_logprobs, const Tokenizer* tokenizer);
// Streamed chunks: `delta` holds only what is new since the last chunk of that choice.
nlohmann::json CompletionChunk(const ResponseHeader& h, const ChoiceState& delta, bool with_logprobs,
                               const Tokenizer* tokenizer, size_t text_offset_base);
nlohmann::json ChatChunk(const ResponseHeader& h, const ChoiceState& delta, bool first, bool with_logprobs,
                         const Tokenizer* tokenizer);
nlohmann::json UsageChunk(const ResponseHeader& h, bool chat, const Usage& usage);

// json.dump that never throws on invalid UTF-8 (replaced by U+FFFD).
std::string Dump(const nlohmann::json& j);

}  // namespace moerun
