// The OpenAI request bodies moerun serves — POST /v1/completions and /v1/chat/completions —
// parsed and checked into a GenerationRequest before anything reaches the engine.
//
// Every field is type- and range-checked; a bad one is an ApiError (400) naming the field and its
// bound, an unknown model a 404. Prompts become token ids here (strings through the tokenizer,
// chat messages through the model's chat template) and are checked against the served context:
// prompt + max_tokens <= max_model_len, as vLLM does. Fields moerun does not implement and that
// would change the answer (penalties, logit_bias, tools, ...) are refused rather than ignored;
// fields that only label a request (user, ...) are accepted.
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <variant>
#include <vector>

#include "engine/sampler.h"
#include "serve/api_error.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace moerun {

// What the server serves, for checking requests.
struct ServedModel {
  std::string name;               // --served-model-name, e.g. "tiny-arith"; "default" also matches
  int64_t max_model_len = 0;      // prompt + generated ids at most, e.g. 1024
  int32_t vocab_size = 0;         // model vocabulary (token-id prompts are checked against it)
  std::vector<int32_t> stop_ids;  // EOS ids (dropped with ignore_eos)
  const Tokenizer* tokenizer = nullptr;
  // Without a chat_template in tokenizer_config.json, render chat as DeepSeek-V2's format (the
  // DeepSeek GGUFs llama.cpp writes carry none); other families refuse chat requests.
  bool deepseek_chat_fallback = false;
  ChatTemplateKwargs chat_kwargs;  // --chat-template-kwargs: defaults a request's own keys override
};

struct GenerationRequest {
  bool chat = false;
  std::vector<std::vector<int32_t>> prompts;  // completions: one or more; chat: exactly one
  std::vector<std::string> prompt_texts;      // per prompt: as sent if a string, else decoded (echo)
  int n = 1;                                  // choices per prompt, e.g. 2
  int64_t max_tokens = 16;                    // generated ids at most per choice
  SamplingParams sampling;                    // temperature 1, top_p 1 unless given
  bool seeded = false;                        // `seed` given: choice i uses seed + i
  std::vector<std::string> stop;              // stop strings, e.g. {"\n"}
  std::vector<int32_t> stop_ids;              // EOS unless ignore_eos
  int top_logprobs = -1;                      // -1: no logprobs; else alternatives per id (0..20)
  bool echo = false;                          // completions: the prompt leads the text (and logprobs)
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
};

using ParsedRequest = std::variant<GenerationRequest, ApiError>;

ParsedRequest ParseCompletionRequest(const nlohmann::json& body, const ServedModel& model);
ParsedRequest ParseChatRequest(const nlohmann::json& body, const ServedModel& model);

// POST /tokenize ({"prompt": text, "add_special_tokens": bool} or {"messages": [...]}) and
// /detokenize ({"tokens": [ids]}), vLLM's: the response body, or an error.
std::variant<nlohmann::json, ApiError> Tokenize(const nlohmann::json& body, const ServedModel& model);
std::variant<nlohmann::json, ApiError> Detokenize(const nlohmann::json& body, const ServedModel& model);

}  // namespace moerun
