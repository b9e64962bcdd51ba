// Detokenizer: turns generated token ids into text incrementally, emitting only complete UTF-8.
//
// Each Push appends one id's bytes (Tokenizer::DecodeBytes of that id alone; byte-level BPE
// decoding is a concatenation) to a pending buffer and returns the longest prefix of it that can
// no longer change: well-formed characters as they are, and each maximal ill-formed subpart as
// U+FFFD (the policy of Tokenizer::Decode). Only a tail that is a proper prefix of a well-formed
// character (e.g. the first two bytes of a 3-byte one, split across ids) is held back. Flush()
// returns that tail as U+FFFD. No step re-decodes the whole output: each Push costs the new bytes.
//
// Invariant: the concatenation of every Push and the final Flush equals
// tokenizer.Decode(ids, skip_special) of the ids pushed, ids without text excepted: an id the
// tokenizer has no text for (unused, out of range) adds nothing and is counted in textless().
// One exception, on purpose: SentencePiece-style tokenizers (Mixtral) decode "▁Hello" as
// " Hello" here, while Decode strips that one leading space (its Strip decoder: the space the
// encoder prepended). Generated ids continue a prompt, so the stream keeps the space, as vLLM's
// incremental detokenizer does.
//
// Thread safety: one Detokenizer per sequence; not shared while written.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "tokenizer/tokenizer.h"

namespace moerun {

class Detokenizer {
 public:
  // `tokenizer` must outlive this; skip_special: special tokens (BOS, EOS, ...) add no text.
  explicit Detokenizer(const Tokenizer* tokenizer, bool skip_special = true)
      : tokenizer_(tokenizer), skip_special_(skip_special) {}

  // The text that became complete with `id` (may be empty).
  std::string Push(int32_t id);
  // Raw bytes instead of an id (what Push does after looking the id up).
  std::string PushBytes(std::string_view bytes);
  // The held-back tail (an incomplete character at the end) as U+FFFD; empty if there is none.
  std::string Flush();

  int64_t textless() const { return textless_; }
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;  // bytes after the last emitted character: at most an incomplete one
  int64_t textless_ = 0;
};

}  // namespace moerun
