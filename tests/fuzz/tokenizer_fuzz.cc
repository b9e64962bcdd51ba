// libFuzzer target: tokenizer.json (+ tokenizer_config.json) text through the Tokenizer loader, then
// encoding and decoding a short fixed text and applying the chat template. The input is
// tokenizer.json, optionally followed by a NUL byte and tokenizer_config.json. Every input must
// either be rejected with a Status or give a tokenizer whose ids are in range (no crash, no UB).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  moerun::StatusOr<std::unique_ptr<moerun::Tokenizer>> tok =
      nul == std::string_view::npos
          ? moerun::Tokenizer::FromJson(input, "fuzz/tokenizer.json")
          : moerun::Tokenizer::FromJsonWithConfig(input.substr(0, nul), "fuzz/tokenizer.json",
                                                  input.substr(nul + 1), "fuzz/tokenizer_config.json");
  if (!tok.ok()) return 0;
  const moerun::Tokenizer& t = **tok;
  static constexpr std::string_view kText = "Hello, world! 12+34=46\n\tcafé ☕ <|x|>  end";
  for (bool special : {false, true}) {
    const std::vector<int32_t> ids = t.Encode(kText, special);
    for (int32_t id : ids) {
      if (id < 0 || id >= t.vocab_size()) std::abort();  // Encode's documented invariant
      (void)t.TokenToPiece(id);
      (void)t.IsSpecial(id);
    }
    (void)t.Decode(ids, special);
    (void)t.DecodeBytes(ids, !special);
  }
  // Every id of a small vocabulary, and a few outside it, must decode or fail cleanly.
  std::vector<int32_t> all;
  for (int32_t id = -2; id < t.vocab_size() + 2 && id < 512; ++id) all.push_back(id);
  (void)t.Decode(all, false);
  (void)t.DecodeBytes(all, true);
  if (!t.chat_template().empty()) {
    const std::vector<moerun::ChatMessage> messages = {{"system", "Be brief."}, {"user", "1+1="}};
    (void)t.ApplyChatTemplate(messages, true);
  }
  return 0;
}
