// Chat formats as C++ functions (not a Jinja engine): tokenizer_config.json's Jinja chat_template
// is recognised by the substrings below and rendered by hand-written code that reproduces that
// template's output byte for byte for plain-text messages (no tools, no tool_calls, no images).
//
// Recognised templates ("\n" inside quotes is the two characters backslash, n, as in the Jinja
// source; "whole" means the template, trimmed of surrounding whitespace, must equal the text):
//   kDeepSeekV2  DeepSeek-V2(-Lite)-Chat. Substring "'Assistant: ' + message['content'] +
//                eos_token" (the one llama.cpp keys on). Renders {bos}{system}\n\nUser: {u}\n\n
//                Assistant: {a}{eos}...; generation prompt "Assistant:" (no trailing space).
//   kChatMl      Plain ChatML (e.g. OpenHermes). Whole "{% for message in messages %}{{'<|im_start|>'
//                + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}
//                {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}". Every
//                message is <|im_start|>{role}\n{content}<|im_end|>\n, any role; generation prompt
//                <|im_start|>assistant\n.
//   kQwen2       Qwen1.5 / Qwen2 Instruct. Whole "{% for message in messages %}{% if loop.first and
//                messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n" DEFAULT "<|im_end|>\n'
//                }}{% endif %}" + the kChatMl loop body and generation prompt. As kChatMl, plus a
//                system turn with DEFAULT (read from the template: "You are a helpful assistant."
//                in Qwen2) before a first message that is not a system one.
//   kQwen25      Qwen2.5 Instruct (tools-capable). Substring "(message.role == \"user\") or
//                (message.role == \"system\" and not loop.first) or (message.role == \"assistant\"
//                and not message.tool_calls) %}" and, in the no-tools branch, "{{- '<|im_start|>
//                system\n' + messages[0]['content'] + '<|im_end|>\n' }}" followed by either
//                "{%- else %}{{- '<|im_start|>system\n" DEFAULT "<|im_end|>\n' }}" (DEFAULT read
//                from the template: "You are Qwen, created by Alibaba Cloud. You are a helpful
//                assistant." in Qwen2.5) or "{%- endif %}" (no default). A first system message,
//                else DEFAULT, opens; user/assistant/later system turns are ChatML; consecutive
//                "tool" messages share one user turn of "\n<tool_response>\n{c}\n</tool_response>".
//   kQwen3       Qwen3 (reasoning). Substrings "'\n<think>\n' + reasoning_content.strip('\n') +
//                '\n</think>\n\n' + content.lstrip('\n')" and "ns.last_query_index". As kQwen25
//                without a default system; an assistant message after the last real user query
//                (one not wrapped in <tool_response>...</tool_response>) gets "<think>\n{r}\n
//                </think>\n\n{c}" when it is the last message or has reasoning, where a content
//                with "</think>" is split into reasoning r and answer c as the template does; earlier
//                assistant messages keep only the answer. Generation prompt <|im_start|>assistant\n,
//                then "<think>\n\n</think>\n\n" when enable_thinking is false. If the template contains "No
//                user query found in messages." a conversation without such a query is an error, as there.
//   kMistralV1   Mistral-7B-Instruct-v0.1/v0.2 and the first Mixtral-8x7B-Instruct-v0.1 template.
//                Whole "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user')
//                != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate
//                user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}
//                {{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] ==
//                'assistant' %}{{ message['content'] + eos_token" then "}}" or " + ' ' }}" then
//                "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}
//                {% endif %}{% endfor %}". Renders {bos}[INST] {u} [/INST]{a}{eos}[INST] ...; no
//                system role; add_generation_prompt adds nothing.
//   kMixtral     The current Mixtral-8x7B-Instruct-v0.1 template. Substrings "{%- set
//                system_message = messages[0]['content'] %}", "{{- bos_token }}", "{{- ' [INST] ' +
//                system_message + '\n\n' + message['content'] + ' [/INST]' }}", "{{- ' [INST] ' +
//                message['content'] + ' [/INST]' }}", "{{- ' ' + message['content'] + eos_token}}".
//                Renders {bos} [INST] {system}\n\n{u1} [/INST] {a1}{eos} [INST] {u2} [/INST]: a
//                first system message is folded into the first user turn; add_generation_prompt
//                adds nothing.
// Anything else is not recognised (DetectChatFormat returns nullopt).
//
// Errors: where the template calls raise_exception (roles that do not alternate, unsupported
// roles) RenderChat returns InvalidArgument naming the message index and the template's message;
// where the template would fail on an empty conversation (messages[0] of an empty list) it is
// InvalidArgument too. Roles a template silently drops (e.g. "tool" in DeepSeek-V2, "developer"
// in Qwen) are InvalidArgument as well, so no message is lost without notice.
// The rendered text contains the BOS/EOS strings, so encode it with add_special_tokens=false (as
// HF's apply_chat_template(tokenize=True) does).
//
// Thread safety: pure functions.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "core/status.h"

namespace moerun {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" (and "tool" for the Qwen formats)
  std::string content;
};

enum class ChatFormatKind { kDeepSeekV2, kChatMl, kQwen2, kQwen25, kQwen3, kMistralV1, kMixtral };

struct ChatFormat {
  ChatFormatKind kind = ChatFormatKind::kDeepSeekV2;
  // kQwen2 / kQwen25: the system message the template adds when the first message is not one
  // (nullopt: kQwen25 template without a default).
  std::optional<std::string> default_system;
  bool eos_then_space = false;       // kMistralV1: the template writes eos_token + ' '
  bool requires_user_query = false;  // kQwen3: the template raises "No user query found"
};

// A short name of the format for messages and logs, e.g. "Qwen2.5 ChatML".
std::string_view ChatFormatName(ChatFormatKind kind);

// The format `jinja` is recognised as (see the table above), or nullopt.
std::optional<ChatFormat> DetectChatFormat(std::string_view jinja);

// `enable_thinking` is the template variable of that name (HF apply_chat_template's keyword, vLLM's
// chat_template_kwargs): only kQwen3 reads it — false appends "<think>\n\n</think>\n\n" to the
// generation prompt, as Qwen3's template does; unset or true leaves the prompt as is. The other
// templates do not use it, as in Jinja.
StatusOr<std::string> RenderChat(const ChatFormat& format, std::span<const ChatMessage> messages,
                                 std::string_view bos_token, std::string_view eos_token,
                                 bool add_generation_prompt,
                                 std::optional<bool> enable_thinking = std::nullopt);

// The template variables a caller may set besides messages and add_generation_prompt (vLLM's
// request field chat_template_kwargs, llama.cpp's --chat-template-kwargs), e.g.
// {"enable_thinking": false}. Only enable_thinking (a boolean) is known; any other key, or a value
// of another type, is InvalidArgument naming `where`.key — never silently ignored.
struct ChatTemplateKwargs {
  std::optional<bool> enable_thinking;  // Qwen3: false skips the reasoning block
};
StatusOr<ChatTemplateKwargs> ParseChatTemplateKwargs(const nlohmann::json& object, std::string_view where);
// The same from JSON text (a command-line flag).
StatusOr<ChatTemplateKwargs> ParseChatTemplateKwargsText(std::string_view json_text, std::string_view where);

// True if a Jinja chat_template is DeepSeek-V2's (DetectChatFormat's kDeepSeekV2 test).
bool IsDeepSeekV2ChatTemplate(std::string_view jinja);

StatusOr<std::string> RenderDeepSeekV2Chat(std::span<const ChatMessage> messages, std::string_view bos_token,
                                           std::string_view eos_token, bool add_generation_prompt);

}  // namespace moerun
