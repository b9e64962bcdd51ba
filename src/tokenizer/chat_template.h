// The DeepSeek-V2 chat format as a C++ function (not a Jinja engine).
//
// DeepSeek-V2(-Lite)-Chat's tokenizer_config.json chat_template renders
//   {bos}{system}\n\nUser: {u1}\n\nAssistant: {a1}{eos}User: {u2}\n\nAssistant:
// i.e. bos_token, then per message: system -> content + "\n\n"; user -> "User: " + content +
// "\n\n"; assistant -> "Assistant: " + content + eos_token; then "Assistant:" (no trailing space)
// when add_generation_prompt. RenderDeepSeekV2Chat reproduces that byte for byte. The template
// silently drops other roles; here they are an InvalidArgument error naming the message index.
// The rendered text contains the BOS/EOS strings, so encode it with add_special_tokens=false
// (as HF's apply_chat_template(tokenize=True) does).
//
// Thread safety: pure functions.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "core/status.h"

namespace moerun {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// True if a Jinja chat_template is DeepSeek-V2's: it contains the substring llama.cpp keys on,
// "'Assistant: ' + message['content'] + eos_token".
bool IsDeepSeekV2ChatTemplate(std::string_view jinja);

StatusOr<std::string> RenderDeepSeekV2Chat(std::span<const ChatMessage> messages, std::string_view bos_token,
                                           std::string_view eos_token, bool add_generation_prompt);

}  // namespace moerun
