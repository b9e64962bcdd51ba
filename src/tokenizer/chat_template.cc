#include "tokenizer/chat_template.h"

namespace moerun {

bool IsDeepSeekV2ChatTemplate(std::string_view jinja) {
  return jinja.find("'Assistant: ' + message['content'] + eos_token") != std::string_view::npos;
}

StatusOr<std::string> RenderDeepSeekV2Chat(std::span<const ChatMessage> messages, std::string_view bos_token,
                                           std::string_view eos_token, bool add_generation_prompt) {
  std::string out(bos_token);
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user") {
      out.append("User: ").append(m.content).append("\n\n");
    } else if (m.role == "assistant") {
      out.append("Assistant: ").append(m.content).append(eos_token);
    } else if (m.role == "system") {
      out.append(m.content).append("\n\n");
    } else {
      return InvalidArgument("chat message {}: unknown role '{}' (expected system, user or assistant)", i,
                             m.role);
    }
  }
  if (add_generation_prompt) out.append("Assistant:");
  return out;
}

}  // namespace moerun
