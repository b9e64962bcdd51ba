// BpeModel: the BPE `model` of a tokenizer.json (internal to src/tokenizer), in one of two input
// modes chosen by the caller from the pre-tokenizer:
//
// - Byte-level (GPT-2 / DeepSeek: the pre-tokenizer ends in ByteLevel). A pre-token's bytes become
//   byte-level symbols (GPT-2 bytes_to_unicode). Every byte that can occur in valid UTF-8 must have
//   a symbol, so EncodePiece never drops input.
// - Character-level (SentencePiece-style: Llama / Mistral / Mixtral, vocab tokens like "▁the").
//   Each UTF-8 character of the pre-token is looked up as a vocab token. A character that is not
//   in the vocab becomes, with byte_fallback, one "<0xNN>" token per UTF-8 byte (when the vocab
//   has all of them); otherwise it becomes unk_token (consecutive unknown characters fused into
//   one unk with fuse_unk), or is dropped when there is no unk_token, as in HF tokenizers. (HF
//   emits an unk pending before a byte-fallback character after that character's bytes; this
//   keeps text order, as transformers.js does. It needs a vocab with only some byte tokens.)
//
// Then, in both modes, the adjacent pair with the lowest merge rank is merged, leftmost first
// among equal ranks, until no adjacent pair has a merge (a priority queue over a linked list of
// symbols: O(n log n)). With ignore_merges, a pre-token that is itself in the vocabulary is
// emitted as that one token first.
//
// Invariants checked at load: every vocab id is in [0, kMaxTokenId) and used once; every merge
// names two vocab tokens whose concatenation is in the vocab (a repeated merge keeps its last
// rank, as HF and transformers.js do); unk_token, when set, is a vocab token. dropout,
// continuing_subword_prefix and end_of_word_suffix are Unimplemented.
// Thread safety: immutable after FromJson; EncodePiece is const and may run concurrently.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/status.h"

namespace moerun::tokenizer_internal {

// Ids at or above this bound are rejected (a hostile id must not size a table).
inline constexpr int64_t kMaxTokenId = int64_t{1} << 24;

class BpeModel {
 public:
  // Parses tokenizer.json's "model" value; `label` names it in errors ("model"). `byte_level`
  // selects the input mode (see the top comment).
  static StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& value, std::string_view label,
                                                      bool byte_level);

  // Appends the ids of one pre-token given as raw bytes (valid UTF-8 text).
  void EncodePiece(std::string_view bytes, std::vector<int32_t>* out) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // One past the largest vocab id.
  int32_t id_bound() const { return static_cast<int32_t>(id_to_token_.size()); }
  // The vocab token of `id` (byte-level text), or "" for an id the vocab does not use.
  const std::string& IdToToken(int32_t id) const { return id_to_token_[static_cast<size_t>(id)]; }
  size_t num_merges() const { return merges_.size(); }
  bool byte_level() const { return byte_level_; }
  bool byte_fallback() const { return byte_fallback_; }
  std::optional<int32_t> unk_id() const { return unk_id_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };

  Status ParseVocab(const nlohmann::json& vocab, const std::string& label);
  Status ParseMerges(const nlohmann::json& merges, const std::string& label);
  const Merge* FindMerge(int32_t left, int32_t right) const;
  // Character-level mode: the initial symbols of `text` (see the top comment).
  void CharSymbols(std::string_view text, std::vector<int32_t>* ids) const;
  // Merges `ids` (the initial symbols) in rank order and appends the result to `out`.
  void MergeAndAppend(const std::vector<int32_t>& ids, std::vector<int32_t>* out) const;

  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> token_to_id_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<uint64_t, Merge> merges_;  // key: left id << 32 | right id
  std::array<int32_t, 256> byte_ids_{};         // byte-level mode: symbol id of each byte, -1 if absent
  std::array<int32_t, 256> fallback_ids_{};     // id of "<0xNN>" for each byte, -1 if absent
  bool byte_level_ = true;
  bool byte_fallback_ = false;
  bool all_fallback_bytes_ = false;  // every "<0xNN>" is in the vocab
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  std::optional<int32_t> unk_id_;
};

}  // namespace moerun::tokenizer_internal
