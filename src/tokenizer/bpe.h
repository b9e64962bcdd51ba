// BpeModel: the byte-level BPE `model` of a tokenizer.json (internal to src/tokenizer).
//
// Encoding one pre-token: its bytes become byte-level symbols (GPT-2 bytes_to_unicode), then the
// adjacent pair with the lowest merge rank is merged, leftmost first among equal ranks, until no
// adjacent pair has a merge (a priority queue over a linked list of symbols: O(n log n)). With
// ignore_merges, a pre-token that is itself in the vocabulary is emitted as that one token first.
//
// Invariants checked at load: every vocab id is in [0, kMaxTokenId) and used once; every merge
// names two vocab tokens whose concatenation is in the vocab (a repeated merge keeps its last
// rank, as HF and transformers.js do); every byte that can occur in valid UTF-8 has a symbol, so
// EncodePiece never drops input. dropout, byte_fallback, continuing_subword_prefix and
// end_of_word_suffix are Unimplemented.
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
  // Parses tokenizer.json's "model" value; `label` names it in errors ("model").
  static StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& value, std::string_view label);

  // Appends the ids of one pre-token given as raw bytes (any bytes of valid UTF-8 text).
  void EncodePiece(std::string_view bytes, std::vector<int32_t>* out) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // One past the largest vocab id.
  int32_t id_bound() const { return static_cast<int32_t>(id_to_token_.size()); }
  // The vocab token of `id` (byte-level text), or "" for an id the vocab does not use.
  const std::string& IdToToken(int32_t id) const { return id_to_token_[static_cast<size_t>(id)]; }
  size_t num_merges() const { return merges_.size(); }

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

  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> token_to_id_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<uint64_t, Merge> merges_;  // key: left id << 32 | right id
  std::array<int32_t, 256> byte_ids_{};         // symbol id of each byte, -1 if absent
  bool ignore_merges_ = false;
};

}  // namespace moerun::tokenizer_internal
