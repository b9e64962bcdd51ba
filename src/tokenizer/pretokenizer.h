// PreTokenizer: the HF `pre_tokenizer` pipeline of a byte-level BPE tokenizer.json (internal to
// src/tokenizer).
//
// Supported elements (nested Sequences are flattened, steps run in order, each on every piece the
// previous steps produced):
//   Split     {pattern: {Regex: ".."} | {String: ".."}, behavior, invert}
//             behavior: Removed | Isolated | MergedWithPrevious | MergedWithNext | Contiguous
//   Digits    {individual_digits}: \p{N} characters, each alone (true) or in runs (false)
//   ByteLevel {add_prefix_space, use_regex}: prefixes a space to each piece that does not start
//             with one (add_prefix_space), then splits with the GPT-2 regex (use_regex, default
//             true). It must be the last step: the BPE model maps each piece's bytes to the
//             byte-level alphabet itself.
// Anything else is Unimplemented, naming the element (e.g. "pre_tokenizer.pretokenizers[2]").
//
// Invariants: Split's input must be valid UTF-8; the pieces are non-empty, and (for behaviors other
// than Removed, and without add_prefix_space) their concatenation is the input.
// Thread safety: immutable after FromJson; Split is const and may run concurrently.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "tokenizer/regex.h"

namespace moerun::tokenizer_internal {

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

class PreTokenizer {
 public:
  // Parses the value of tokenizer.json's "pre_tokenizer" key. `label` names it in errors.
  static StatusOr<std::unique_ptr<PreTokenizer>> FromJson(const nlohmann::json& value,
                                                          std::string_view label);

  // Appends the pieces of `text` (valid UTF-8) to `pieces`.
  void Split(std::string_view text, std::vector<std::string>* pieces) const;

  size_t num_steps() const { return steps_.size(); }

 private:
  struct Step {
    std::unique_ptr<Regex> regex;  // null for ByteLevel with use_regex=false
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;
    bool byte_level = false;
    bool add_prefix_space = false;
  };

  Status AddElement(const nlohmann::json& value, const std::string& label);
  static void ApplySplit(const Step& step, std::string_view piece, std::vector<std::string>* out);

  std::vector<Step> steps_;
};

}  // namespace moerun::tokenizer_internal
