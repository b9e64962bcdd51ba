// Decoder: tokenizer.json's "decoder", turned into per-token bytes plus a few sequence-level rules
// (internal to src/tokenizer).
//
// Two families are supported, matching the two BPE input modes (bpe.h):
// - ByteLevel (GPT-2 / DeepSeek), alone: a token's characters map back through the byte-level
//   alphabet; a token with a character outside it is kept as its UTF-8 text (HF does the same).
// - SentencePiece style (Llama / Mistral / Mixtral): Metaspace, or a Sequence of
//     Replace {pattern: {String: ..}, content}  every occurrence in each token
//     ByteFallback                              a token "<0xNN>" (6 characters, hex NN) is byte NN
//     Fuse                                      joins the tokens into one string
//     Strip {content, start, stop}              removes up to `start` leading and `stop` trailing
//                                               `content` characters: from each token before
//                                               Fuse, from the whole text after it
//     Metaspace {replacement, prepend_scheme}   `replacement` -> ' ' in each token; in the first
//                                               token it is removed instead unless the scheme is
//                                               "never" (HF: every one in that token, not only a
//                                               leading one)
//   Mixtral's file is [Replace "▁" -> " ", ByteFallback, Fuse, Strip " " 1 0]. Replace,
//   ByteFallback and Metaspace after Fuse, Regex patterns, and other decoders are Unimplemented
//   naming the element (e.g. "decoder.decoders[1].type").
//
// How Tokenizer uses it: TokenBytes(piece, false) is precomputed for every id, so decoding ids
// "as a continuation" (Tokenizer::DecodeBytes, streaming) is a concatenation. A whole sequence
// (Tokenizer::Decode) also takes its first token's bytes from TokenBytes(piece, true) and then
// applies FinishSequence (Strip after Fuse), so Decode(Encode("Hello")) is "Hello", not " Hello".
// Byte runs are not turned into text here: the caller replaces ill-formed UTF-8 in the joined
// bytes with U+FFFD per maximal subpart (transformers.js's TextDecoder policy; HF's ByteFallback
// writes one U+FFFD per byte of an ill-formed run instead).
//
// Thread safety: immutable after FromJson; every method is const and may run concurrently.
#pragma once

#include <cstddef>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace moerun::tokenizer_internal {

class Decoder {
 public:
  // Parses the value of tokenizer.json's "decoder" key. `label` names it in errors.
  static StatusOr<std::unique_ptr<Decoder>> FromJson(const nlohmann::json& value, std::string_view label);

  bool byte_level() const { return byte_level_; }

  // The bytes token text `piece` contributes; `first`: it is the first token of the sequence.
  std::string TokenBytes(std::string_view piece, bool first) const;
  // True if TokenBytes depends on `first`.
  bool first_token_differs() const { return first_token_differs_; }
  // Applies the whole-text steps (Strip after Fuse) to the joined bytes of a sequence.
  void FinishSequence(std::string* bytes) const;

 private:
  enum class Kind { kReplace, kByteFallback, kStrip, kMetaspace };
  struct Step {
    Kind kind;
    std::string from;          // Replace: the pattern; Strip: the content; Metaspace: the replacement
    std::string to;            // Replace: the replacement
    size_t start = 0;          // Strip
    size_t stop = 0;           // Strip
    bool strip_first = false;  // Metaspace: remove `from` in the first token
  };

  Status AddElement(const nlohmann::json& value, const std::string& label, bool top_level);
  static void Strip(const Step& step, std::string* text);

  bool byte_level_ = false;
  bool fused_ = false;
  bool first_token_differs_ = false;
  std::vector<Step> token_steps_;     // before Fuse: on each token
  std::vector<Step> sequence_steps_;  // after Fuse: on the whole text (Strip only)
};

}  // namespace moerun::tokenizer_internal
