#include "serve/openai_response.h"

#include <fmt/format.h>

namespace moerun {

using Json = nlohmann::json;

namespace {

bool ValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += len;
  }
  return true;
}

Json Bytes(const std::string& s) {
  Json b = Json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

std::string RawBytes(const Tokenizer* tokenizer, int32_t id) {
  if (tokenizer == nullptr) return "";
  const int32_t one[1] = {id};
  StatusOr<std::string> b = tokenizer->DecodeBytes(one, /*skip_special_tokens=*/false);
  return b.ok() ? *b : "";
}

Json FinishJson(const std::optional<std::string>& f) { return f ? Json(*f) : Json(nullptr); }

}  // namespace

std::string TokenText(const Tokenizer* tokenizer, int32_t id) {
  if (tokenizer == nullptr) return fmt::format("token_id:{}", id);
  std::string b = RawBytes(tokenizer, id);
  if (ValidUtf8(b)) return b;
  std::string out = "bytes:";
  for (unsigned char c : b) out += fmt::format("\\x{:02x}", c);
  return out;
}

Json CompletionLogprobs(const ChoiceState& c, const Tokenizer* tokenizer, size_t text_offset_base) {
  Json tokens = Json::array(), token_lps = Json::array(), tops = Json::array(), offsets = Json::array();
  size_t offset = text_offset_base;
  for (size_t i = 0; i < c.logprobs.size(); ++i) {
    const TokenLogprobs& t = c.logprobs[i];
    const std::string text = TokenText(tokenizer, t.token);
    tokens.push_back(text);
    offsets.push_back(offset);
    offset += text.size();
    const bool known = i < c.logprob_known.size() ? c.logprob_known[i] : true;
    token_lps.push_back(known ? Json(t.logprob) : Json(nullptr));
    if (!known) {
      tops.push_back(nullptr);
      continue;
    }
    Json top = Json::object();
    for (const auto& [id, lp] : t.top) top[TokenText(tokenizer, id)] = lp;
    tops.push_back(top);
  }
  return {
      {"tokens", tokens}, {"token_logprobs", token_lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

Json ChatLogprobs(const ChoiceState& c, const Tokenizer* tokenizer) {
  Json content = Json::array();
  for (const TokenLogprobs& t : c.logprobs) {
    Json top = Json::array();
    for (const auto& [id, lp] : t.top) {
      top.push_back(
          {{"token", TokenText(tokenizer, id)}, {"logprob", lp}, {"bytes", Bytes(RawBytes(tokenizer, id))}});
    }
    content.push_back({{"token", TokenText(tokenizer, t.token)},
                       {"logprob", t.logprob},
                       {"bytes", Bytes(RawBytes(tokenizer, t.token))},
                       {"top_logprobs", top}});
  }
  return {{"content", content}};
}

Json UsageJson(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

Json CompletionResponse(const ResponseHeader& h, const std::vector<ChoiceState>& choices, const Usage& usage,
                        bool with_logprobs, const Tokenizer* tokenizer) {
  Json cs = Json::array();
  for (const ChoiceState& c : choices) {
    cs.push_back({{"index", c.index},
                  {"text", c.text},
                  {"logprobs", with_logprobs ? CompletionLogprobs(c, tokenizer, 0) : Json(nullptr)},
                  {"finish_reason", FinishJson(c.finish_reason)}});
  }
  return {{"id", h.id},    {"object", "text_completion"}, {"created", h.created},         {"model", h.model},
          {"choices", cs}, {"usage", UsageJson(usage)},   {"system_fingerprint", nullptr}};
}

Json ChatResponse(const ResponseHeader& h, const std::vector<ChoiceState>& choices, const Usage& usage,
                  bool with_logprobs, const Tokenizer* tokenizer) {
  Json cs = Json::array();
  for (const ChoiceState& c : choices) {
    cs.push_back({{"index", c.index},
                  {"message", {{"role", "assistant"}, {"content", c.text}}},
                  {"logprobs", with_logprobs ? ChatLogprobs(c, tokenizer) : Json(nullptr)},
                  {"finish_reason", FinishJson(c.finish_reason)}});
  }
  return {{"id", h.id},    {"object", "chat.completion"}, {"created", h.created},         {"model", h.model},
          {"choices", cs}, {"usage", UsageJson(usage)},   {"system_fingerprint", nullptr}};
}

Json CompletionChunk(const ResponseHeader& h, const ChoiceState& d, bool with_logprobs,
                     const Tokenizer* tokenizer, size_t text_offset_base) {
  Json choice = {
      {"index", d.index},
      {"text", d.text},
      {"logprobs", with_logprobs ? CompletionLogprobs(d, tokenizer, text_offset_base) : Json(nullptr)},
      {"finish_reason", FinishJson(d.finish_reason)}};
  return {{"id", h.id},
          {"object", "text_completion"},
          {"created", h.created},
          {"model", h.model},
          {"choices", Json::array({choice})}};
}

Json ChatChunk(const ResponseHeader& h, const ChoiceState& d, bool first, bool with_logprobs,
               const Tokenizer* tokenizer) {
  Json delta = Json::object();
  if (first) delta["role"] = "assistant";
  if (!d.text.empty() || !first) delta["content"] = d.text;
  if (first && d.text.empty()) delta["content"] = "";
  Json choice = {{"index", d.index},
                 {"delta", delta},
                 {"logprobs", with_logprobs ? ChatLogprobs(d, tokenizer) : Json(nullptr)},
                 {"finish_reason", FinishJson(d.finish_reason)}};
  return {{"id", h.id},
          {"object", "chat.completion.chunk"},
          {"created", h.created},
          {"model", h.model},
          {"choices", Json::array({choice})}};
}

Json UsageChunk(const ResponseHeader& h, bool chat, const Usage& usage) {
  return {{"id", h.id},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", h.created},
          {"model", h.model},
          {"choices", Json::array()},
          {"usage", UsageJson(usage)}};
}

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

}  // namespace moerun
