// PreTokenizer: the HF `pre_tokenizer` pipeline of a tokenizer.json (internal to src/tokenizer).
//
// Supported elements (nested Sequences are flattened, steps run in order, each on every piece the
// previous steps produced; null is no step: the whole section is one piece):
//   Split     {pattern: {Regex: ".."} | {String: ".."}, behavior, invert}
//             behavior: Removed | Isolated | MergedWithPrevious | MergedWithNext | Contiguous
//   Digits    {individual_digits}: \p{N} characters, each alone (true) or in runs (false)
//   ByteLevel {add_prefix_space, use_regex}: prefixes a space to each piece that does not start
//             with one (add_prefix_space), then splits with the GPT-2 regex (use_regex, default
//             true). It must be the last step: the BPE model maps each piece's bytes to the
//             byte-level alphabet itself. A pipeline ending in ByteLevel makes the tokenizer
//             byte-level (byte_level()); any other pipeline feeds characters to the BPE model.
//   Metaspace {replacement, prepend_scheme, add_prefix_space, split} (SentencePiece style, never
//             with ByteLevel): every ' ' becomes `replacement` (e.g. "▁"), then `replacement` is
//             put first unless the piece already starts with it, for prepend_scheme "always"
//             (every piece), "first" (only a piece at the very start of the text: not the text
//             after an added token) or "never". Files without prepend_scheme use
//             add_prefix_space (true: "always", false: "never"; HF's default is "always"). With
//             split (default true) the piece is then cut before each `replacement`
//             (MergedWithNext), so "▁a▁b" -> "▁a", "▁b".
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

  // Appends the pieces of `text` (valid UTF-8) to `pieces`. `at_text_start`: `text` starts at
  // offset 0 of the encoded text (Metaspace's prepend_scheme "first").
  void Split(std::string_view text, std::vector<std::string>* pieces, bool at_text_start = true) const;

  size_t num_steps() const { return steps_.size(); }
  // The last step is ByteLevel: pieces are fed to a byte-level BPE model.
  bool byte_level() const { return !steps_.empty() && steps_.back().byte_level; }

 private:
  enum class PrependScheme { kAlways, kFirst, kNever };
  struct Step {
    std::unique_ptr<Regex> regex;  // null for ByteLevel with use_regex=false and Metaspace without split
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;
    bool byte_level = false;
    bool add_prefix_space = false;
    bool metaspace = false;
    std::string replacement;  // Metaspace
    PrependScheme prepend_scheme = PrependScheme::kAlways;
  };
  // A piece and whether it starts at offset 0 of the encoded text.
  struct Piece {
    std::string text;
    bool at_text_start;
  };

  Status AddElement(const nlohmann::json& value, const std::string& label);
  Status AddMetaspace(const nlohmann::json& value, const std::string& label, Step* step);
  static void ApplySplit(const Step& step, const Piece& piece, std::vector<Piece>* out);

  std::vector<Step> steps_;
};

}  // namespace moerun::tokenizer_internal
