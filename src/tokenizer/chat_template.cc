#include "tokenizer/chat_template.h"

#include <nlohmann/json.hpp>
#include <vector>

namespace moerun {
namespace {

// Template texts, as in the Jinja source (R"J(...)J": "\n" is backslash + n, as there).
constexpr std::string_view kDeepSeekV2Marker = R"J('Assistant: ' + message['content'] + eos_token)J";

constexpr std::string_view kChatMlBody =
    R"J({{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})J";
constexpr std::string_view kChatMlHead = R"J({% for message in messages %})J";
constexpr std::string_view kQwen2SystemHead =
    R"J({% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n)J";
constexpr std::string_view kQwen2SystemTail = R"J(<|im_end|>\n' }}{% endif %})J";

constexpr std::string_view kQwen25Marker =
    R"J((message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %})J";
constexpr std::string_view kQwen25SystemGiven =
    R"J({{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }})J";
constexpr std::string_view kQwen25SystemDefaultHead = R"J({{- '<|im_start|>system\n)J";
constexpr std::string_view kQwen25SystemDefaultTail = R"J(<|im_end|>\n' }})J";

constexpr std::string_view kQwen3Marker =
    R"J('\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n'))J";
constexpr std::string_view kQwen3Marker2 = "ns.last_query_index";
constexpr std::string_view kQwen3NoQuery = "No user query found in messages.";

constexpr std::string_view kMistralV1Head =
    R"J({{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token)J";
constexpr std::string_view kMistralV1EosPlain = "}}";
constexpr std::string_view kMistralV1EosSpace = " + ' ' }}";
constexpr std::string_view kMistralV1Tail =
    R"J({% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %})J";

constexpr std::string_view kMixtralMarkers[] = {
    R"J({%- set system_message = messages[0]['content'] %})J",
    R"J({{- bos_token }})J",
    R"J({{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }})J",
    R"J({{- ' [INST] ' + message['content'] + ' [/INST]' }})J",
    R"J({{- ' ' + message['content'] + eos_token}})J",
};

bool Contains(std::string_view s, std::string_view part) { return s.find(part) != std::string_view::npos; }

std::string_view Trim(std::string_view s) {
  const auto space = [](char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

// The value of a Jinja single-quoted string literal's body (`raw`, without the quotes), or
// nullopt if it is not a plain literal (an unescaped quote means an expression such as
// ' ~ sys_prompt ~ ').
std::optional<std::string> JinjaLiteral(std::string_view raw) {
  std::string out;
  for (size_t i = 0; i < raw.size(); ++i) {
    const char c = raw[i];
    if (c == '\'') return std::nullopt;
    if (c != '\\') {
      out.push_back(c);
      continue;
    }
    if (++i == raw.size()) return std::nullopt;
    switch (raw[i]) {
      case 'n':
        out.push_back('\n');
        break;
      case 't':
        out.push_back('\t');
        break;
      case '\\':
      case '\'':
      case '"':
        out.push_back(raw[i]);
        break;
      default:
        return std::nullopt;
    }
  }
  return out;
}

// Qwen2.5: the default system message after the given-system branch, if the template has one.
// Returns false if the text after that branch is neither an else with a literal nor an endif.
bool Qwen25DefaultSystem(std::string_view jinja, std::optional<std::string>* out) {
  const size_t given = jinja.find(kQwen25SystemGiven);
  if (given == std::string_view::npos) return false;
  std::string_view rest = Trim(jinja.substr(given + kQwen25SystemGiven.size()));
  if (rest.starts_with("{%- endif %}")) {
    *out = std::nullopt;
    return true;
  }
  if (!rest.starts_with("{%- else %}")) return false;
  rest = Trim(rest.substr(std::string_view("{%- else %}").size()));
  if (!rest.starts_with(kQwen25SystemDefaultHead)) return false;
  rest.remove_prefix(kQwen25SystemDefaultHead.size());
  const size_t tail = rest.find(kQwen25SystemDefaultTail);
  if (tail == std::string_view::npos) return false;
  std::optional<std::string> literal = JinjaLiteral(rest.substr(0, tail));
  if (!literal.has_value()) return false;
  *out = std::move(literal);
  return true;
}

void AppendChatMl(std::string* out, std::string_view role, std::string_view content) {
  out->append("<|im_start|>").append(role).append("\n").append(content).append("<|im_end|>\n");
}

Status UnsupportedRole(size_t i, std::string_view role, ChatFormatKind kind, std::string_view expected) {
  return InvalidArgument("chat message {}: role '{}' is not supported by the {} chat template (expected {})",
                         i, role, ChatFormatName(kind), expected);
}

Status EmptyConversation(ChatFormatKind kind) {
  return InvalidArgument(
      "chat messages: the {} chat template needs at least one message (it reads messages[0])",
      ChatFormatName(kind));
}

// Consecutive "tool" messages as one user turn (Qwen2.5 / Qwen3).
void AppendToolMessage(std::string* out, std::span<const ChatMessage> messages, size_t i) {
  if (i == 0 || messages[i - 1].role != "tool") out->append("<|im_start|>user");
  out->append("\n<tool_response>\n").append(messages[i].content).append("\n</tool_response>");
  if (i + 1 == messages.size() || messages[i + 1].role != "tool") out->append("<|im_end|>\n");
}

std::string_view StripNewlines(std::string_view s, bool left, bool right) {
  while (left && !s.empty() && s.front() == '\n') s.remove_prefix(1);
  while (right && !s.empty() && s.back() == '\n') s.remove_suffix(1);
  return s;
}

StatusOr<std::string> RenderChatMl(const ChatFormat& format, std::span<const ChatMessage> messages,
                                   bool add_generation_prompt) {
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i == 0 && format.kind == ChatFormatKind::kQwen2 && messages[0].role != "system") {
      AppendChatMl(&out, "system", *format.default_system);
    }
    AppendChatMl(&out, messages[i].role, messages[i].content);
  }
  if (add_generation_prompt) out.append("<|im_start|>assistant\n");
  return out;
}

StatusOr<std::string> RenderQwen25(const ChatFormat& format, std::span<const ChatMessage> messages,
                                   bool add_generation_prompt) {
  if (messages.empty()) return EmptyConversation(format.kind);
  std::string out;
  if (messages[0].role == "system") {
    AppendChatMl(&out, "system", messages[0].content);
  } else if (format.default_system.has_value()) {
    AppendChatMl(&out, "system", *format.default_system);
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user" || m.role == "assistant" || (m.role == "system" && i > 0)) {
      AppendChatMl(&out, m.role, m.content);
    } else if (m.role == "tool") {
      AppendToolMessage(&out, messages, i);
    } else if (m.role != "system") {
      return UnsupportedRole(i, m.role, format.kind, "system, user, assistant or tool");
    }
  }
  if (add_generation_prompt) out.append("<|im_start|>assistant\n");
  return out;
}

StatusOr<std::string> RenderQwen3(const ChatFormat& format, std::span<const ChatMessage> messages,
                                  bool add_generation_prompt, std::optional<bool> enable_thinking) {
  if (messages.empty()) return EmptyConversation(format.kind);
  // The last user message that is not a wrapped tool response (ns.last_query_index).
  size_t last_query = messages.size() - 1;
  bool found_query = false;
  for (size_t k = messages.size(); k-- > 0;) {
    const ChatMessage& m = messages[k];
    if (m.role == "user" &&
        !(m.content.starts_with("<tool_response>") && m.content.ends_with("</tool_response>"))) {
      last_query = k;
      found_query = true;
      break;
    }
  }
  if (format.requires_user_query && !found_query) {
    return InvalidArgument(
        "chat messages: no user query found in messages (the {} chat template raises this)",
        ChatFormatName(format.kind));
  }
  std::string out;
  if (messages[0].role == "system") AppendChatMl(&out, "system", messages[0].content);
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user" || (m.role == "system" && i > 0)) {
      AppendChatMl(&out, m.role, m.content);
    } else if (m.role == "assistant") {
      std::string_view content = m.content;
      std::string_view reasoning;
      const size_t first_close = content.find("</think>");
      if (first_close != std::string_view::npos) {
        // content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n')
        reasoning = StripNewlines(content.substr(0, first_close), false, true);
        const size_t open = reasoning.rfind("<think>");
        if (open != std::string_view::npos)
          reasoning.remove_prefix(open + std::string_view("<think>").size());
        reasoning = StripNewlines(reasoning, true, false);
        // content.split('</think>')[-1].lstrip('\n')
        const size_t last_close = content.rfind("</think>");
        content =
            StripNewlines(content.substr(last_close + std::string_view("</think>").size()), true, false);
      }
      out.append("<|im_start|>assistant\n");
      if (i > last_query && (i + 1 == messages.size() || !reasoning.empty())) {
        out.append("<think>\n")
            .append(StripNewlines(reasoning, true, true))
            .append("\n</think>\n\n")
            .append(StripNewlines(content, true, false));
      } else {
        out.append(content);
      }
      out.append("<|im_end|>\n");
    } else if (m.role == "tool") {
      AppendToolMessage(&out, messages, i);
    } else if (m.role != "system") {
      return UnsupportedRole(i, m.role, format.kind, "system, user, assistant or tool");
    }
  }
  if (add_generation_prompt) {
    out.append("<|im_start|>assistant\n");
    if (enable_thinking == false) out.append("<think>\n\n</think>\n\n");
  }
  return out;
}

StatusOr<std::string> RenderMistralV1(const ChatFormat& format, std::span<const ChatMessage> messages,
                                      std::string_view bos_token, std::string_view eos_token) {
  std::string out(bos_token);
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if ((m.role == "user") != (i % 2 == 0)) {
      return InvalidArgument(
          "chat message {}: role '{}': conversation roles must alternate user/assistant/user/assistant/... "
          "starting with user (the {} chat template raises this)",
          i, m.role, ChatFormatName(format.kind));
    }
    if (m.role == "user") {
      out.append("[INST] ").append(m.content).append(" [/INST]");
    } else if (m.role == "assistant") {
      out.append(m.content).append(eos_token);
      if (format.eos_then_space) out.push_back(' ');
    } else {
      return UnsupportedRole(i, m.role, format.kind, "user or assistant");
    }
  }
  return out;
}

StatusOr<std::string> RenderMixtral(const ChatFormat& format, std::span<const ChatMessage> messages,
                                    std::string_view bos_token, std::string_view eos_token) {
  if (messages.empty()) return EmptyConversation(format.kind);
  const bool has_system = messages[0].role == "system";
  const std::span<const ChatMessage> loop = has_system ? messages.subspan(1) : messages;
  const size_t offset = has_system ? 1 : 0;
  std::string out(bos_token);
  for (size_t k = 0; k < loop.size(); ++k) {
    const ChatMessage& m = loop[k];
    if ((m.role == "user") != (k % 2 == 0)) {
      return InvalidArgument(
          "chat message {}: role '{}': after the optional system message, conversation roles must alternate "
          "user/assistant/user/assistant/... starting with user (the {} chat template raises this)",
          k + offset, m.role, ChatFormatName(format.kind));
    }
    if (m.role == "user") {
      out.append(" [INST] ");
      if (k == 0 && has_system) out.append(messages[0].content).append("\n\n");
      out.append(m.content).append(" [/INST]");
    } else if (m.role == "assistant") {
      out.append(" ").append(m.content).append(eos_token);
    } else {
      return UnsupportedRole(k + offset, m.role, format.kind,
                             "an optional first system message, then user or assistant");
    }
  }
  return out;
}

}  // namespace

std::string_view ChatFormatName(ChatFormatKind kind) {
  switch (kind) {
    case ChatFormatKind::kDeepSeekV2:
      return "DeepSeek-V2";
    case ChatFormatKind::kChatMl:
      return "ChatML";
    case ChatFormatKind::kQwen2:
      return "Qwen2 ChatML";
    case ChatFormatKind::kQwen25:
      return "Qwen2.5 ChatML";
    case ChatFormatKind::kQwen3:
      return "Qwen3 ChatML";
    case ChatFormatKind::kMistralV1:
      return "Mistral [INST] (v0.1)";
    case ChatFormatKind::kMixtral:
      return "Mixtral [INST] with system";
  }
  return "unknown";
}

bool IsDeepSeekV2ChatTemplate(std::string_view jinja) { return Contains(jinja, kDeepSeekV2Marker); }

std::optional<ChatFormat> DetectChatFormat(std::string_view jinja) {
  ChatFormat f;
  if (IsDeepSeekV2ChatTemplate(jinja)) {
    f.kind = ChatFormatKind::kDeepSeekV2;
    return f;
  }
  if (Contains(jinja, kQwen3Marker) && Contains(jinja, kQwen3Marker2)) {
    f.kind = ChatFormatKind::kQwen3;
    f.requires_user_query = Contains(jinja, kQwen3NoQuery);
    return f;
  }
  if (Contains(jinja, kQwen25Marker) && Qwen25DefaultSystem(jinja, &f.default_system)) {
    f.kind = ChatFormatKind::kQwen25;
    return f;
  }
  const std::string_view whole = Trim(jinja);
  if (whole.starts_with(kChatMlHead) && whole.ends_with(kChatMlBody)) {
    std::string_view middle =
        whole.substr(kChatMlHead.size(), whole.size() - kChatMlHead.size() - kChatMlBody.size());
    if (middle.empty()) {
      f.kind = ChatFormatKind::kChatMl;
      return f;
    }
    if (middle.starts_with(kQwen2SystemHead) && middle.ends_with(kQwen2SystemTail)) {
      middle = middle.substr(kQwen2SystemHead.size(),
                             middle.size() - kQwen2SystemHead.size() - kQwen2SystemTail.size());
      if (std::optional<std::string> system = JinjaLiteral(middle)) {
        f.kind = ChatFormatKind::kQwen2;
        f.default_system = std::move(system);
        return f;
      }
    }
    return std::nullopt;
  }
  if (whole.starts_with(kMistralV1Head) && whole.ends_with(kMistralV1Tail)) {
    const std::string_view middle =
        whole.substr(kMistralV1Head.size(), whole.size() - kMistralV1Head.size() - kMistralV1Tail.size());
    if (middle == kMistralV1EosPlain || middle == kMistralV1EosSpace) {
      f.kind = ChatFormatKind::kMistralV1;
      f.eos_then_space = middle == kMistralV1EosSpace;
      return f;
    }
    return std::nullopt;
  }
  bool mixtral = true;
  for (std::string_view marker : kMixtralMarkers) mixtral = mixtral && Contains(jinja, marker);
  if (mixtral) {
    f.kind = ChatFormatKind::kMixtral;
    return f;
  }
  return std::nullopt;
}

StatusOr<std::string> RenderChat(const ChatFormat& format, std::span<const ChatMessage> messages,
                                 std::string_view bos_token, std::string_view eos_token,
                                 bool add_generation_prompt, std::optional<bool> enable_thinking) {
  switch (format.kind) {
    case ChatFormatKind::kDeepSeekV2:
      return RenderDeepSeekV2Chat(messages, bos_token, eos_token, add_generation_prompt);
    case ChatFormatKind::kChatMl:
    case ChatFormatKind::kQwen2:
      return RenderChatMl(format, messages, add_generation_prompt);
    case ChatFormatKind::kQwen25:
      return RenderQwen25(format, messages, add_generation_prompt);
    case ChatFormatKind::kQwen3:
      return RenderQwen3(format, messages, add_generation_prompt, enable_thinking);
    case ChatFormatKind::kMistralV1:
      return RenderMistralV1(format, messages, bos_token, eos_token);
    case ChatFormatKind::kMixtral:
      return RenderMixtral(format, messages, bos_token, eos_token);
  }
  return Internal("unknown chat format {}", static_cast<int>(format.kind));
}

StatusOr<ChatTemplateKwargs> ParseChatTemplateKwargs(const nlohmann::json& object, std::string_view where) {
  if (!object.is_object())
    return InvalidArgument("{} must be a JSON object, e.g. {{\"enable_thinking\": false}}", where);
  ChatTemplateKwargs kwargs;
  for (const auto& [key, value] : object.items()) {
    if (key != "enable_thinking") {
      return InvalidArgument("{}.{} is not a supported chat template variable (known: enable_thinking)",
                             where, key);
    }
    if (!value.is_boolean()) return InvalidArgument("{}.enable_thinking must be true or false", where);
    kwargs.enable_thinking = value.get<bool>();
  }
  return kwargs;
}

StatusOr<ChatTemplateKwargs> ParseChatTemplateKwargsText(std::string_view json_text, std::string_view where) {
  const nlohmann::json object = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (object.is_discarded()) return InvalidArgument("{} is not valid JSON: '{}'", where, json_text);
  return ParseChatTemplateKwargs(object, where);
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
