// libFuzzer target: an OpenAI-style request body through ParseCompletionRequest, ParseChatRequest,
// Tokenize and Detokenize (serve/openai_request.h) against a small ServedModel with the
// models/tiny-arith tokenizer. Each must return a request or an ApiError (no crash, no UB), and a
// parsed request's prompt ids must be in the model's vocabulary.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <variant>

#include "serve/openai_request.h"
#include "tokenizer/tokenizer.h"

namespace {

const moerun::ServedModel& Model() {
  static const std::unique_ptr<moerun::Tokenizer> tokenizer = [] {
    auto t = moerun::Tokenizer::FromDirectory(MOERUN_FUZZ_TOKENIZER_DIR);
    if (!t.ok()) std::abort();
    return std::move(t).value();
  }();
  static const moerun::ServedModel model = [] {
    moerun::ServedModel m;
    m.name = "tiny-arith";
    m.max_model_len = 64;
    m.vocab_size = tokenizer->vocab_size();
    if (tokenizer->eos_id()) m.stop_ids.push_back(*tokenizer->eos_id());
    m.tokenizer = tokenizer.get();
    m.deepseek_chat_fallback = true;
    return m;
  }();
  return model;
}

void CheckParsed(const moerun::ParsedRequest& parsed, const moerun::ServedModel& model) {
  const auto* req = std::get_if<moerun::GenerationRequest>(&parsed);
  if (req == nullptr) return;
  for (const auto& prompt : req->prompts) {
    for (int32_t id : prompt) {
      if (id < 0 || id >= model.vocab_size) std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const moerun::ServedModel& model = Model();
  // As the server does: a body that is not JSON is refused before any parser sees it.
  const nlohmann::json body = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return 0;
  CheckParsed(moerun::ParseCompletionRequest(body, model), model);
  CheckParsed(moerun::ParseChatRequest(body, model), model);
  (void)moerun::Tokenize(body, model);
  (void)moerun::Detokenize(body, model);
  return 0;
}
