// Normalizer: tokenizer.json's "normalizer" (internal to src/tokenizer).
//
// Supported: null, Sequence (nested Sequences are flattened, steps run in order), and the two
// steps SentencePiece-style BPE files use (Llama-2 / Mistral / Mixtral: [Prepend "▁",
// Replace " " -> "▁"]):
//   Prepend {prepend}: puts `prepend` before the text, unless the text is empty (as HF does).
//   Replace {pattern: {String: ..} | {Regex: ..}, content}: every non-overlapping match, leftmost
//           first, becomes `content` (Regex patterns run on PCRE2, see regex.h).
// Anything else (NFC, NFKC, Lowercase, Strip, Precompiled, ...) is Unimplemented naming the
// element, e.g. "normalizer.normalizers[2].type".
//
// The tokenizer runs the normalizer on each section of text between added tokens, as HF does for
// added tokens with "normalized": false (see tokenizer.h for the "normalized": true case).
//
// Invariants: Normalize maps valid UTF-8 to valid UTF-8. An empty Sequence (or null) is the
// identity and reports empty().
// Thread safety: immutable after FromJson; Normalize is const and may run concurrently.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "tokenizer/regex.h"

namespace moerun::tokenizer_internal {

class Normalizer {
 public:
  // Parses the value of tokenizer.json's "normalizer" key. `label` names it in errors.
  static StatusOr<std::unique_ptr<Normalizer>> FromJson(const nlohmann::json& value, std::string_view label);

  // `text` (valid UTF-8) normalized.
  std::string Normalize(std::string_view text) const;

  // True if Normalize is the identity (no steps).
  bool empty() const { return steps_.empty(); }

 private:
  struct Step {
    std::string prepend;           // Prepend: the text to put first; empty for Replace
    std::unique_ptr<Regex> regex;  // Replace: the pattern
    std::string content;           // Replace: the replacement
  };

  Status AddElement(const nlohmann::json& value, const std::string& label);

  std::vector<Step> steps_;
};

}  // namespace moerun::tokenizer_internal
