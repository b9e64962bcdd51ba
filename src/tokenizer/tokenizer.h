// Tokenizer: a Hugging Face `tokenizer.json` BPE tokenizer, optionally with the model's
// `tokenizer_config.json` (bos/eos tokens, add_bos_token, chat_template). Two families, told apart
// by the file's own fields (never by a model name):
// - byte-level BPE (DeepSeek-V2/V3, GPT-2 style): the pre-tokenizer ends in ByteLevel and the
//   decoder is ByteLevel;
// - SentencePiece-style BPE (Llama-2, Mistral, Mixtral): no ByteLevel; the BPE model works on
//   characters with byte_fallback / unk_token (bpe.h), spaces become "▁" through the normalizer
//   (Prepend + Replace, normalizer.h) or a Metaspace pre-tokenizer (pretokenizer.h), and the
//   decoder undoes that (Replace / ByteFallback / Fuse / Strip or Metaspace, decoder.h).
//
// Encode(text, add_special_tokens):
//   1. Bytes that are not valid UTF-8 are replaced, one U+FFFD per maximal ill-formed subpart.
//      HF tokenizers only accept strings, so this is what reaches them from JavaScript's
//      TextDecoder, Python's decode(errors="replace") or Rust's String::from_utf8_lossy.
//   2. Added tokens (special or not) are cut out of the text first: at each position the longest
//      added-token string that starts there wins, leftmost first. A token's lstrip/rstrip also
//      removes the Unicode White_Space next to it. So "<｜end▁of▁sentence｜>" typed by a user
//      encodes as the EOS id; callers who must not allow that should filter the text first.
//   3. Each section between added tokens goes through the normalizer (normalizer.h; so a legacy
//      Llama/Mixtral file puts "▁" before the text after an added token too, as HF does), the
//      pre-tokenizer (Split/Digits/ByteLevel/Metaspace, regexes taken from the file and run with
//      PCRE2) and the BPE model (merge ranks from the file). Added tokens marked "normalized":
//      true would be matched in normalized text by HF; with a normalizer that has steps they are
//      Unimplemented at load.
//   4. With add_special_tokens: if tokenizer_config.json sets add_bos_token / add_eos_token, BOS is
//      prepended / EOS appended as it says (as transformers' LlamaTokenizerFast does; a missing
//      key there means false). Otherwise tokenizer.json's TemplateProcessing post_processor
//      ("single" template) decides, and with neither nothing is added.
// DecodeBytes(ids, skip_special_tokens): the ids' bytes, concatenated, as a continuation of
//   earlier text: each id's bytes are fixed (decoder.h: byte-level tokens through the inverse
//   byte map; SentencePiece tokens with "▁" as ' ' and "<0xNN>" as byte NN; added tokens as their
//   text), so DecodeBytes(a) + DecodeBytes(b) == DecodeBytes(a + b), which streaming relies on.
// Decode(ids, skip_special_tokens): the text of a whole sequence: DecodeBytes plus the decoder's
//   sequence-start rules (SentencePiece files strip the one leading space their encoding added:
//   Decode(Encode("Hello")) == "Hello" while DecodeBytes gives " Hello"), then bytes that do not
//   form valid UTF-8 (a character split across ids, an ill-formed byte-fallback run) become
//   U+FFFD per maximal subpart so the string is printable. For byte-level files Decode is
//   DecodeBytes made printable. An id outside [0, vocab_size()) or one no token uses is an
//   OutOfRange error naming it.
//
// Unsupported-but-valid settings (other model types, normalizers, pre-tokenizers, decoders,
// post-processors, dropout, single_word) fail to load with Unimplemented naming the field;
// malformed files fail with Corruption naming the field. The file's truncation and padding
// settings are ignored (Encode never truncates or pads).
//
// Invariants: every id Encode returns is < vocab_size(); for valid UTF-8 text x,
// Decode(Encode(x, false)) == x unless the file adds prefix spaces after added tokens or has
// lstrip/rstrip tokens.
// Thread safety: immutable after construction. Encode, Decode and every accessor are const and
// safe to call from many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "tokenizer/chat_template.h"

namespace moerun {

namespace tokenizer_internal {
class BpeModel;
class Decoder;
class Normalizer;
class PreTokenizer;
class TokenizerLoader;
}  // namespace tokenizer_internal

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;  // skipped by Decode(..., skip_special_tokens=true)
  bool lstrip = false;
  bool rstrip = false;
};

class Tokenizer {
 public:
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // A tokenizer.json file (no tokenizer_config.json: bos_id()/eos_id() are unset).
  static StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& tokenizer_json_path);
  // <dir>/tokenizer.json plus <dir>/tokenizer_config.json when that file exists.
  static StatusOr<std::unique_ptr<Tokenizer>> FromDirectory(const std::string& dir);
  // tokenizer.json text; `label` names it in errors (e.g. its path).
  static StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view tokenizer_json,
                                                       std::string_view label);
  // tokenizer.json text plus tokenizer_config.json text.
  static StatusOr<std::unique_ptr<Tokenizer>> FromJsonWithConfig(std::string_view tokenizer_json,
                                                                 std::string_view tokenizer_label,
                                                                 std::string_view config_json,
                                                                 std::string_view config_label);

  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const;
  StatusOr<std::string> Decode(std::span<const int32_t> ids, bool skip_special_tokens) const;
  StatusOr<std::string> DecodeBytes(std::span<const int32_t> ids, bool skip_special_tokens) const;

  // Renders `messages` with the chat format that tokenizer_config.json's chat_template is
  // recognised as (chat_template.h: DeepSeek-V2, ChatML/Qwen, Mistral [INST]) using this
  // tokenizer's bos/eos strings. Needs a tokenizer_config.json; Unimplemented if the template is
  // none of the recognised ones (no general Jinja engine). Encode the result with
  // add_special_tokens=false. `enable_thinking`: the template variable (RenderChat).
  StatusOr<std::string> ApplyChatTemplate(std::span<const ChatMessage> messages, bool add_generation_prompt,
                                          std::optional<bool> enable_thinking = std::nullopt) const;

  // One past the largest id of the vocab and the added tokens.
  int32_t vocab_size() const { return static_cast<int32_t>(id_bytes_.size()); }
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  const std::string& chat_template() const { return chat_template_; }
  const std::vector<AddedToken>& added_tokens() const { return added_; }
  // The ids add_special_tokens puts before / after the text.
  const std::vector<int32_t>& prefix_ids() const { return prefix_ids_; }
  const std::vector<int32_t>& suffix_ids() const { return suffix_ids_; }

  // The token's text as written in tokenizer.json (e.g. "Ġthe" byte-level, "▁the" SentencePiece).
  StatusOr<std::string_view> TokenToPiece(int32_t id) const;
  // The id of a token written as in tokenizer.json (added tokens take precedence).
  std::optional<int32_t> PieceToId(std::string_view piece) const;
  bool IsSpecial(int32_t id) const;
  // The pre-tokenizer ends in ByteLevel (DeepSeek / GPT-2 family); false for SentencePiece style.
  bool byte_level() const;
  // The chat format chat_template() was recognised as, if any (set when a config was loaded).
  const std::optional<ChatFormat>& chat_format() const { return chat_format_; }

 private:
  enum class IdKind : uint8_t { kUnused, kVocab, kAdded, kSpecial };
  struct Section {
    std::string_view text;
    int added = -1;  // index into added_, or -1 for plain text
  };

  friend class tokenizer_internal::TokenizerLoader;

  Tokenizer();
  void SplitOnAddedTokens(std::string_view text, std::vector<Section>* sections) const;
  // The tokenizer.json text of a used id: the vocab token or the added token's content.
  std::string_view Piece(int32_t id) const;
  // DecodeBytes (sequence=false) or Decode before UTF-8 repair (sequence=true).
  StatusOr<std::string> DecodeImpl(std::span<const int32_t> ids, bool skip_special_tokens,
                                   bool sequence) const;

  std::unique_ptr<tokenizer_internal::Normalizer> normalizer_;
  std::unique_ptr<tokenizer_internal::BpeModel> model_;
  std::unique_ptr<tokenizer_internal::PreTokenizer> pre_tokenizer_;
  std::unique_ptr<tokenizer_internal::Decoder> decoder_;
  std::vector<AddedToken> added_;
  std::unordered_map<std::string, int> added_by_content_;  // content -> index into added_
  std::unordered_map<int32_t, int> added_by_id_;           // id -> index into added_

  // Added-token trie over bytes: edge key (node << 8 | byte) -> child node.
  std::unordered_map<uint64_t, int32_t> trie_edges_;
  std::vector<int32_t> trie_terminal_;  // node -> index into added_, or -1
  bool trie_first_byte_[256] = {};

  std::vector<std::string> id_bytes_;  // what Decode emits for each id
  std::vector<IdKind> id_kind_;
  std::vector<int32_t> prefix_ids_, suffix_ids_;

  std::string label_, config_label_;
  bool has_config_ = false;
  std::optional<int32_t> bos_id_, eos_id_;
  std::string bos_token_, eos_token_, chat_template_;
  std::optional<ChatFormat> chat_format_;
};

}  // namespace moerun
