#include "serve/openai_request.h"

#include <fmt/format.h>

#include <cmath>
#include <optional>

#include "engine/logprobs.h"
#include "tokenizer/chat_template.h"

namespace moerun {
namespace {

using Json = nlohmann::json;

constexpr int kMaxChoices = 64;       // n
constexpr size_t kMaxStops = 16;      // stop strings
constexpr size_t kMaxPrompts = 1024;  // prompts in one completions request

ApiError Bad(std::string param, std::string message) {
  ApiError e;
  e.param = std::move(param);
  e.message = std::move(message);
  return e;
}

const char* TypeName(const Json& v) { return v.type_name(); }

// An optional field of one JSON type; absent and null both leave `out` as is.
std::optional<ApiError> GetBool(const Json& body, const char* key, bool* out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) return Bad(key, fmt::format("'{}' must be a boolean, got {}", key, TypeName(*it)));
  *out = it->get<bool>();
  return std::nullopt;
}

std::optional<ApiError> GetInt(const Json& body, const char* key, int64_t lo, int64_t hi, int64_t* out,
                               bool* present = nullptr) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer()) {
    return Bad(key, fmt::format("'{}' must be an integer, got {}", key,
                                it->is_number() ? it->dump() : std::string(TypeName(*it))));
  }
  // Unsigned values above int64 and anything outside [lo, hi] are refused by value.
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(hi)) {
    return Bad(key, fmt::format("'{}' = {} is outside [{}, {}]", key, it->dump(), lo, hi));
  }
  const int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) return Bad(key, fmt::format("'{}' = {} is outside [{}, {}]", key, v, lo, hi));
  *out = v;
  if (present != nullptr) *present = true;
  return std::nullopt;
}

std::optional<ApiError> GetNumber(const Json& body, const char* key, double lo, double hi, double* out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) return Bad(key, fmt::format("'{}' must be a number, got {}", key, TypeName(*it)));
  const double v = it->get<double>();
  if (!std::isfinite(v) || v < lo || v > hi) {
    return Bad(key, fmt::format("'{}' = {} is outside [{}, {}]", key, it->dump(), lo, hi));
  }
  *out = v;
  return std::nullopt;
}

// Fields that would change the answer and are not implemented: refused, never ignored.
std::optional<ApiError> RefuseUnsupported(const Json& body) {
  for (const char* key : {"presence_penalty", "frequency_penalty", "repetition_penalty"}) {
    auto it = body.find(key);
    if (it != body.end() && !it->is_null() && !(it->is_number() && it->get<double>() == 0.0)) {
      return Bad(key, fmt::format("'{}' is not supported by moerun (only 0)", key));
    }
  }
  for (const char* key : {"logit_bias", "tools", "functions", "response_format", "best_of", "suffix"}) {
    auto it = body.find(key);
    if (it != body.end() && !it->is_null() && !(it->is_object() && it->empty())) {
      if (std::string(key) == "best_of" && it->is_number_integer() && it->get<int64_t>() == 1) continue;
      if (std::string(key) == "response_format" && it->is_object() && it->value("type", "") == "text")
        continue;
      return Bad(key, fmt::format("'{}' is not supported by moerun", key));
    }
  }
  return std::nullopt;
}

std::optional<ApiError> CheckModel(const Json& body, const ServedModel& m) {
  auto it = body.find("model");
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) return Bad("model", fmt::format("'model' must be a string, got {}", TypeName(*it)));
  const std::string name = it->get<std::string>();
  if (name == m.name || name == "default") return std::nullopt;
  ApiError e =
      Bad("model", fmt::format("The model `{}` does not exist (this server serves `{}`)", name, m.name));
  e.http_status = 404;
  e.type = "not_found_error";
  return e;
}

std::optional<ApiError> CheckIds(const Json& ids, const ServedModel& m, std::vector<int32_t>* out) {
  for (const Json& v : ids) {
    if (!v.is_number_integer()) {
      return Bad("prompt", fmt::format("prompt token ids must be integers, got {}", TypeName(v)));
    }
    const bool outside = v.is_number_unsigned() ? v.get<uint64_t>() >= static_cast<uint64_t>(m.vocab_size)
                                                : (v.get<int64_t>() < 0 || v.get<int64_t>() >= m.vocab_size);
    if (outside) {
      return Bad("prompt",
                 fmt::format("prompt token id {} is outside the vocabulary [0, {})", v.dump(), m.vocab_size));
    }
    const int64_t id = v.get<int64_t>();
    out->push_back(static_cast<int32_t>(id));
  }
  return std::nullopt;
}

std::optional<ApiError> NeedTokenizer(const ServedModel& m, const char* param) {
  if (m.tokenizer != nullptr) return std::nullopt;
  return Bad(param, "this model has no tokenizer: send token ids");
}

// The request's chat_template_kwargs over the server's defaults.
std::optional<ApiError> ParseChatKwargs(const Json& body, const ServedModel& m, ChatTemplateKwargs* out) {
  *out = m.chat_kwargs;
  auto it = body.find("chat_template_kwargs");
  if (it == body.end() || it->is_null()) return std::nullopt;
  StatusOr<ChatTemplateKwargs> own = ParseChatTemplateKwargs(*it, "chat_template_kwargs");
  if (!own.ok()) return ApiError::FromStatus(own.status(), "chat_template_kwargs");
  if (own->enable_thinking.has_value()) out->enable_thinking = own->enable_thinking;
  return std::nullopt;
}

// The chat prompt text: the model's template, or DeepSeek-V2's format where that is the fallback.
StatusOr<std::string> RenderChat(const ServedModel& m, std::span<const ChatMessage> messages,
                                 bool add_generation, const ChatTemplateKwargs& kwargs) {
  if (!m.tokenizer->chat_template().empty())
    return m.tokenizer->ApplyChatTemplate(messages, add_generation, kwargs.enable_thinking);
  if (!m.deepseek_chat_fallback) {
    return InvalidArgument("this model has no chat_template in tokenizer_config.json: use /v1/completions");
  }
  return RenderDeepSeekV2Chat(messages, m.tokenizer->bos_token(), m.tokenizer->eos_token(), add_generation);
}

// "prompt": a string, [ids], [strings] or [[ids]].
std::optional<ApiError> ParsePrompts(const Json& body, const ServedModel& m,
                                     std::vector<std::vector<int32_t>>* out,
                                     std::vector<std::string>* texts) {
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) return Bad("prompt", "'prompt' is required");
  const Json& p = *it;
  auto add_text = [&](const Json& s) -> std::optional<ApiError> {
    if (auto e = NeedTokenizer(m, "prompt")) return e;
    out->push_back(m.tokenizer->Encode(s.get<std::string>(), /*add_special_tokens=*/true));
    texts->push_back(s.get<std::string>());
    return std::nullopt;
  };
  auto add_ids = [&](const Json& ids) -> std::optional<ApiError> {
    out->emplace_back();
    if (auto e = CheckIds(ids, m, &out->back())) return e;
    StatusOr<std::string> text =
        m.tokenizer != nullptr ? m.tokenizer->Decode(out->back(), true) : std::string();
    texts->push_back(text.ok() ? *text : "");
    return std::nullopt;
  };
  if (p.is_string()) {
    if (auto e = add_text(p)) return e;
  } else if (p.is_array()) {
    if (p.empty()) return Bad("prompt", "'prompt' is an empty list");
    if (p.size() > kMaxPrompts)
      return Bad("prompt", fmt::format("'prompt' has {} entries, at most {}", p.size(), kMaxPrompts));
    if (p[0].is_number()) {
      if (auto e = add_ids(p)) return e;
    } else {
      for (const Json& q : p) {
        if (q.is_string()) {
          if (auto e = add_text(q)) return e;
        } else if (q.is_array()) {
          if (auto e = add_ids(q)) return e;
        } else {
          return Bad("prompt",
                     fmt::format("a 'prompt' list holds strings or token-id lists, not {}", TypeName(q)));
        }
      }
    }
  } else {
    return Bad("prompt", fmt::format("'prompt' must be a string or a list, got {}", TypeName(p)));
  }
  for (const auto& ids : *out) {
    if (ids.empty()) return Bad("prompt", "a prompt is empty (it needs at least one token)");
  }
  return std::nullopt;
}

std::optional<ApiError> ParseMessages(const Json& body, std::vector<ChatMessage>* out) {
  auto it = body.find("messages");
  if (it == body.end() || it->is_null()) return Bad("messages", "'messages' is required");
  if (!it->is_array() || it->empty()) return Bad("messages", "'messages' must be a non-empty list");
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& msg = (*it)[i];
    if (!msg.is_object()) return Bad("messages", fmt::format("messages[{}] must be an object", i));
    auto role = msg.find("role");
    if (role == msg.end() || !role->is_string()) {
      return Bad("messages", fmt::format("messages[{}].role must be a string", i));
    }
    std::string content;
    auto c = msg.find("content");
    if (c == msg.end() || c->is_null()) {
      content = "";
    } else if (c->is_string()) {
      content = c->get<std::string>();
    } else if (c->is_array()) {  // [{"type": "text", "text": ...}, ...]
      for (const Json& part : *c) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string()) {
          return Bad(
              "messages",
              fmt::format("messages[{}].content parts must be {{\"type\": \"text\", \"text\": ...}}", i));
        }
        content += part["text"].get<std::string>();
      }
    } else {
      return Bad("messages", fmt::format("messages[{}].content must be a string or a list of text parts", i));
    }
    out->push_back({role->get<std::string>(), std::move(content)});
  }
  return std::nullopt;
}

// Fields both endpoints share (sampling, stop, n, stream, max_tokens).
std::optional<ApiError> ParseCommon(const Json& body, const ServedModel& m, GenerationRequest* r) {
  if (auto e = CheckModel(body, m)) return e;
  if (auto e = RefuseUnsupported(body)) return e;
  double temperature = 1.0, top_p = 1.0;
  if (auto e = GetNumber(body, "temperature", 0.0, 2.0, &temperature)) return e;
  if (auto e = GetNumber(body, "top_p", 1e-9, 1.0, &top_p)) return e;
  int64_t top_k = 0, n = 1, seed = 0;
  if (auto e = GetInt(body, "top_k", -1, 1 << 30, &top_k)) return e;
  if (auto e = GetInt(body, "n", 1, kMaxChoices, &n)) return e;
  if (auto e = GetInt(body, "seed", INT64_MIN, INT64_MAX, &seed, &r->seeded)) return e;
  r->sampling.temperature = static_cast<float>(temperature);
  r->sampling.top_p = static_cast<float>(top_p);
  r->sampling.top_k = top_k < 0 ? 0 : static_cast<int>(top_k);
  r->sampling.seed = static_cast<uint64_t>(seed);
  r->n = static_cast<int>(n);
  if (auto it = body.find("stop"); it != body.end() && !it->is_null()) {
    if (it->is_string()) {
      r->stop.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      if (it->size() > kMaxStops)
        return Bad("stop", fmt::format("'stop' has {} strings, at most {}", it->size(), kMaxStops));
      for (const Json& s : *it) {
        if (!s.is_string())
          return Bad("stop", fmt::format("'stop' entries must be strings, got {}", TypeName(s)));
        r->stop.push_back(s.get<std::string>());
      }
    } else {
      return Bad("stop", fmt::format("'stop' must be a string or a list of strings, got {}", TypeName(*it)));
    }
    for (const std::string& s : r->stop) {
      if (s.empty()) return Bad("stop", "'stop' strings must not be empty");
    }
  }
  if (auto e = GetBool(body, "stream", &r->stream)) return e;
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) return Bad("stream_options", "'stream_options' must be an object");
    if (!r->stream) return Bad("stream_options", "'stream_options' is only allowed with \"stream\": true");
    if (auto e = GetBool(*it, "include_usage", &r->include_usage)) return e;
  }
  bool ignore_eos = false;
  if (auto e = GetBool(body, "ignore_eos", &ignore_eos)) return e;
  if (!ignore_eos) r->stop_ids = m.stop_ids;
  return std::nullopt;
}

// max_tokens (or max_completion_tokens) against the served context, per prompt.
std::optional<ApiError> ParseMaxTokens(const Json& body, const ServedModel& m, int64_t min, bool default_fill,
                                       GenerationRequest* r) {
  bool given = false;
  int64_t max_tokens = 16;
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (auto e = GetInt(body, key, min, INT64_MAX, &max_tokens, &given)) return e;
  }
  size_t longest = 0;
  for (const auto& p : r->prompts) longest = std::max(longest, p.size());
  const int64_t n = static_cast<int64_t>(longest);
  if (n >= m.max_model_len && !(n == m.max_model_len && given && max_tokens == 0)) {
    return Bad("prompt",
               fmt::format("This model's maximum context length is {} tokens; the prompt has {} tokens",
                           m.max_model_len, n));
  }
  if (!given && default_fill) max_tokens = m.max_model_len - n;
  if (max_tokens > m.max_model_len - n) {
    return Bad(
        given ? "max_tokens" : "prompt",
        fmt::format(
            "This model's maximum context length is {} tokens. However, you requested {} tokens ({} in "
            "the prompt, {} in the completion)",
            m.max_model_len, n + max_tokens, n, max_tokens));
  }
  r->max_tokens = max_tokens;
  return std::nullopt;
}

}  // namespace

ParsedRequest ParseCompletionRequest(const Json& body, const ServedModel& m) {
  if (!body.is_object()) return Bad("", "the request body must be a JSON object");
  GenerationRequest r;
  if (auto e = ParseCommon(body, m, &r)) return *e;
  if (auto e = ParsePrompts(body, m, &r.prompts, &r.prompt_texts)) return *e;
  if (auto e = GetBool(body, "echo", &r.echo)) return *e;
  int64_t logprobs = -1;
  if (auto e = GetInt(body, "logprobs", 0, kMaxTopLogprobs, &logprobs)) return *e;
  r.top_logprobs = static_cast<int>(logprobs);
  if (auto e = ParseMaxTokens(body, m, 0, /*default_fill=*/false, &r)) return *e;
  if (r.max_tokens == 0 && !r.echo) {
    return Bad("max_tokens",
               "'max_tokens' = 0 generates nothing: use it with \"echo\": true to score the prompt");
  }
  return r;
}

ParsedRequest ParseChatRequest(const Json& body, const ServedModel& m) {
  if (!body.is_object()) return Bad("", "the request body must be a JSON object");
  GenerationRequest r;
  r.chat = true;
  if (auto e = ParseCommon(body, m, &r)) return *e;
  std::vector<ChatMessage> messages;
  if (auto e = ParseMessages(body, &messages)) return *e;
  if (auto e = NeedTokenizer(m, "messages")) return *e;
  ChatTemplateKwargs kwargs;
  if (auto e = ParseChatKwargs(body, m, &kwargs)) return *e;
  StatusOr<std::string> text = RenderChat(m, messages, true, kwargs);
  if (!text.ok()) return ApiError::FromStatus(text.status(), "messages");
  r.prompts.push_back(m.tokenizer->Encode(*text, /*add_special_tokens=*/false));
  bool logprobs = false;
  int64_t top = 0;
  if (auto e = GetBool(body, "logprobs", &logprobs)) return *e;
  bool top_given = false;
  if (auto e = GetInt(body, "top_logprobs", 0, kMaxTopLogprobs, &top, &top_given)) return *e;
  if (top_given && !logprobs) return Bad("top_logprobs", "'top_logprobs' needs \"logprobs\": true");
  r.top_logprobs = logprobs ? static_cast<int>(top) : -1;
  if (auto e = ParseMaxTokens(body, m, 1, /*default_fill=*/true, &r)) return *e;
  return r;
}

std::variant<Json, ApiError> Tokenize(const Json& body, const ServedModel& m) {
  if (!body.is_object()) return Bad("", "the request body must be a JSON object");
  if (auto e = CheckModel(body, m)) return *e;
  if (auto e = NeedTokenizer(m, "prompt")) return *e;
  std::vector<int32_t> ids;
  if (body.contains("messages")) {
    std::vector<ChatMessage> messages;
    if (auto e = ParseMessages(body, &messages)) return *e;
    bool add_generation_prompt = true;
    if (auto e = GetBool(body, "add_generation_prompt", &add_generation_prompt)) return *e;
    ChatTemplateKwargs kwargs;
    if (auto e = ParseChatKwargs(body, m, &kwargs)) return *e;
    StatusOr<std::string> text = RenderChat(m, messages, add_generation_prompt, kwargs);
    if (!text.ok()) return ApiError::FromStatus(text.status(), "messages");
    ids = m.tokenizer->Encode(*text, false);
  } else {
    auto it = body.find("prompt");
    if (it == body.end() || !it->is_string()) return Bad("prompt", "'prompt' must be a string");
    bool add_special = true;
    if (auto e = GetBool(body, "add_special_tokens", &add_special)) return *e;
    ids = m.tokenizer->Encode(it->get<std::string>(), add_special);
  }
  return Json{{"tokens", ids}, {"count", ids.size()}, {"max_model_len", m.max_model_len}};
}

std::variant<Json, ApiError> Detokenize(const Json& body, const ServedModel& m) {
  if (!body.is_object()) return Bad("", "the request body must be a JSON object");
  if (auto e = CheckModel(body, m)) return *e;
  if (auto e = NeedTokenizer(m, "tokens")) return *e;
  auto it = body.find("tokens");
  if (it == body.end() || !it->is_array()) return Bad("tokens", "'tokens' must be a list of token ids");
  std::vector<int32_t> ids;
  if (auto e = CheckIds(*it, m, &ids)) {
    e->param = "tokens";
    return *e;
  }
  StatusOr<std::string> text = m.tokenizer->Decode(ids, /*skip_special_tokens=*/false);
  if (!text.ok()) return ApiError::FromStatus(text.status(), "tokens");
  return Json{{"prompt", *text}};
}

}  // namespace moerun
