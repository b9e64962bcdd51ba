// llama.cpp's `llama` (SentencePiece, SPM) vocabulary in GGUF <-> a Hugging Face tokenizer.json of
// the SentencePiece-converted kind (Mixtral, Llama 2: BPE with byte_fallback, "▁" for spaces).
//
// llama.cpp's SPM tokenizer (llm_tokenizer_spm) replaces spaces by "▁" (and prefixes one when
// tokenizer.ggml.add_space_prefix, default true), splits the text into UTF-8 characters, then
// repeatedly merges the adjacent pair whose concatenation is a token of the highest score (the
// leftmost on ties), and emits each final symbol's id or, for a character not in the vocabulary,
// its bytes as <0xXX> tokens. HF's BPE does the same with merge ranks instead of scores when the
// merges list every split (A, B) of every token A+B ordered by that token's score (what
// transformers' SpmConverter writes). So:
//   writing (SpmVocabFromHf): score(T) = -(rank of the first merge producing T) for merged
//     tokens, 0 for single characters and <0xXX> / special tokens, -1e9 for multi-character
//     tokens no merge produces (llama.cpp would still merge them last; HF never);
//   reading (SpmTokenizerFromGguf): the merges are every split (A, B) of every token, ordered by
//     score (descending; ties by token id, then split point), with byte_fallback, and the
//     normalizer Prepend("▁") (when add_space_prefix) + Replace(" ", "▁"), which the existing BPE
//     tokenizer (tokenizer/bpe.h) runs — llama.cpp's SPM algorithm expressed as ranked merges.
//
// Thread safety: plain functions.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"
#include "io/gguf.h"
#include "model/gguf_model.h"
#include "model/model_config.h"

namespace moerun {

// tokenizer.ggml.* of a llama (SPM) vocabulary.
struct SpmVocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;  // gguf-py TokenType
  int64_t bos = -1, eos = -1, unk = -1, pad = -1;
  bool add_bos = true, add_eos = false, add_space_prefix = true;
  std::string chat_template;
};

// True if tokenizer.json is a BPE model with byte_fallback and "▁" spaces (SentencePiece-converted).
bool IsSpmStyleTokenizer(const std::string& tokenizer_json);
StatusOr<SpmVocab> SpmVocabFromHf(const std::string& tokenizer_json, const std::string& tokenizer_config_json,
                                  int64_t vocab_size, const ModelConfig& config);
Status AddSpmKvs(GgufWriter* w, const SpmVocab& vocab);

// tokenizer.json + tokenizer_config.json from a file whose tokenizer.ggml.model is "llama".
StatusOr<HfTokenizerText> SpmTokenizerFromGguf(const GgufFile& file);

}  // namespace moerun
