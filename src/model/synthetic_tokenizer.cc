#include "model/synthetic_tokenizer.h"

#include <nlohmann/json.hpp>
#include <vector>

#include "model/gguf_common.h"
#include "model/gguf_deepseek2.h"
#include "model/gguf_vocab.h"

namespace moerun {
namespace {

// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the rest to U+0100 + n.
std::vector<std::string> ByteSymbols() {
  std::vector<std::string> sym(256);
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const int cp = printable ? b : next++;
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    sym[static_cast<size_t>(b)] = s;
  }
  return sym;
}

}  // namespace

StatusOr<std::string> SyntheticTokenizerJson(int64_t vocab_size, int64_t bos_id, int64_t eos_id) {
  const int64_t max_vocab = 256 + 65536 + int64_t{256} * 65536;
  if (vocab_size < 258 || vocab_size > max_vocab)
    return InvalidArgument("synthetic tokenizer: vocab_size {} outside [258, {}]", vocab_size, max_vocab);
  if (bos_id < 256 || bos_id >= vocab_size || eos_id < 256 || eos_id >= vocab_size || bos_id == eos_id)
    return InvalidArgument("synthetic tokenizer: bos {} / eos {} must be distinct ids in [256, {})", bos_id,
                           eos_id, vocab_size);
  const std::vector<std::string> sym = ByteSymbols();
  gguf_internal::OrderedObjectBuilder vocab;
  nlohmann::json merges = nlohmann::json::array();
  nlohmann::json added = nlohmann::json::array();
  auto special = [&](int64_t id, const char* text) {
    added.push_back({{"id", id},
                     {"content", text},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
    vocab.Put(text, id);
  };
  int64_t id = 0;
  for (; id < 256; ++id) vocab.Put(sym[static_cast<size_t>(id)], id);
  // Pairs (a, b), then triples ((a, b), c), in a fixed order: every token has its merge rule.
  int64_t pair = 0, triple = 0;
  while (id < vocab_size) {
    if (id == bos_id) {
      special(id++,
              "<\xef\xbd\x9c"
              "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>");
      continue;
    }
    if (id == eos_id) {
      special(id++,
              "<\xef\xbd\x9c"
              "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>");
      continue;
    }
    std::string left, right;
    if (pair < 65536) {
      left = sym[static_cast<size_t>(pair / 256)];
      right = sym[static_cast<size_t>(pair % 256)];
      ++pair;
    } else {
      const int64_t p = triple / 256;
      left = sym[static_cast<size_t>(p / 256)] + sym[static_cast<size_t>(p % 256)];
      right = sym[static_cast<size_t>(triple % 256)];
      ++triple;
    }
    vocab.Put(left + right, id++);
    merges.push_back(left + " " + right);
  }
  const nlohmann::ordered_json j =
      gguf_internal::ByteLevelBpeTokenizerJson(nlohmann::ordered_json(added), DeepseekLlmPreTokenizerJson(),
                                               std::move(vocab).Take(), nlohmann::ordered_json(merges));
  return j.dump();
}

}  // namespace moerun
