#include "tokenizer/bpe.h"

#include <queue>
#include <utility>

#include "tokenizer/json_fields.h"
#include "tokenizer/utf8.h"

namespace moerun::tokenizer_internal {
namespace {

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// Bytes that occur in well-formed UTF-8 (everything except C0, C1 and F5..FF).
bool CanOccurInUtf8(int b) { return b != 0xC0 && b != 0xC1 && b < 0xF5; }

// A setting that must be absent, null or "".
Status RejectSetting(const Json& obj, std::string_view key, std::string_view label) {
  const Json* v = FindField(obj, key);
  if (v == nullptr || v->is_null()) return Status::Ok();
  if (v->is_string() && v->get_ref<const std::string&>().empty()) return Status::Ok();
  return Unimplemented("{}: {} is not supported (only null)", FieldLabel(label, key), v->dump());
}

}  // namespace

StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const Json& value, std::string_view label_view,
                                                       bool byte_level) {
  const std::string label(label_view);
  if (value.is_null()) return Corruption("{}: missing (expected a BPE model object)", label);
  RETURN_IF_ERROR(ExpectObject(value, label));
  ASSIGN_OR_RETURN(std::string type, GetString(value, "type", label));
  if (type != "BPE") return Unimplemented("{}.type: model '{}' is not supported (only BPE)", label, type);
  RETURN_IF_ERROR(RejectSetting(value, "dropout", label));
  RETURN_IF_ERROR(RejectSetting(value, "continuing_subword_prefix", label));
  RETURN_IF_ERROR(RejectSetting(value, "end_of_word_suffix", label));

  std::unique_ptr<BpeModel> model(new BpeModel());
  model->byte_level_ = byte_level;
  ASSIGN_OR_RETURN(model->byte_fallback_, GetBool(value, "byte_fallback", label, false));
  ASSIGN_OR_RETURN(model->fuse_unk_, GetBool(value, "fuse_unk", label, false));
  ASSIGN_OR_RETURN(model->ignore_merges_, GetBool(value, "ignore_merges", label, false));

  const Json* vocab = FindField(value, "vocab");
  if (vocab == nullptr) return Corruption("{}.vocab: missing (expected an object of token: id)", label);
  RETURN_IF_ERROR(model->ParseVocab(*vocab, label + ".vocab"));
  const Json* merges = FindField(value, "merges");
  if (merges == nullptr) return Corruption("{}.merges: missing (expected an array)", label);
  RETURN_IF_ERROR(model->ParseMerges(*merges, label + ".merges"));

  ASSIGN_OR_RETURN(std::optional<std::string> unk, GetOptionalString(value, "unk_token", label));
  if (unk.has_value()) {
    model->unk_id_ = model->TokenToId(*unk);
    if (!model->unk_id_.has_value()) {
      return Corruption("{}.unk_token: '{}' is not in {}.vocab", label, *unk, label);
    }
  }

  model->all_fallback_bytes_ = true;
  for (int b = 0; b < 256; ++b) {
    // HF spells byte tokens with Rust's "<{:#04X}>": "<0x0A>".
    model->fallback_ids_[b] = model->TokenToId(fmt::format("<0x{:02X}>", b)).value_or(-1);
    if (model->fallback_ids_[b] < 0) model->all_fallback_bytes_ = false;
    if (!byte_level) {
      model->byte_ids_[b] = -1;
      continue;
    }
    const std::optional<int32_t> id = model->TokenToId(ByteToUnicode(static_cast<unsigned char>(b)));
    model->byte_ids_[b] = id.value_or(-1);
    if (!id.has_value() && CanOccurInUtf8(b)) {
      return Corruption("{}.vocab: has no token for byte 0x{:02X} (byte-level symbol '{}')", label, b,
                        ByteToUnicode(static_cast<unsigned char>(b)));
    }
  }
  return model;
}

Status BpeModel::ParseVocab(const Json& vocab, const std::string& label) {
  if (!vocab.is_object())
    return Corruption("{}: expected an object of token: id, got {}", label, vocab.type_name());
  if (vocab.empty()) return Corruption("{}: is empty", label);
  token_to_id_.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const std::string& token = it.key();
    const Json& id_value = it.value();
    if (token.empty()) return Corruption("{}: has an empty token", label);
    if (!id_value.is_number_integer()) {
      return Corruption("{}['{}']: expected an integer id, got {}", label, token, id_value.type_name());
    }
    const int64_t id = id_value.get<int64_t>();
    if (id < 0 || id >= kMaxTokenId) {
      return Corruption("{}['{}']: id {} is out of range [0, {})", label, token, id, kMaxTokenId);
    }
    if (static_cast<size_t>(id) >= id_to_token_.size()) id_to_token_.resize(static_cast<size_t>(id) + 1);
    std::string& slot = id_to_token_[static_cast<size_t>(id)];
    if (!slot.empty()) return Corruption("{}: id {} is used by both '{}' and '{}'", label, id, slot, token);
    slot = token;
    token_to_id_.emplace(token, static_cast<int32_t>(id));
  }
  return Status::Ok();
}

Status BpeModel::ParseMerges(const Json& merges, const std::string& label) {
  if (!merges.is_array()) return Corruption("{}: expected an array, got {}", label, merges.type_name());
  merges_.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const Json& m = merges[i];
    std::string left, right;
    if (m.is_string()) {
      // "a b": byte-level tokens never contain a space (it is 'Ġ'), so exactly one separates them.
      const std::string& s = m.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || space == 0 || space + 1 == s.size() ||
          s.find(' ', space + 1) != std::string::npos) {
        return Corruption("{}[{}]: '{}' is not two tokens separated by one space", label, i, s);
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      return Corruption("{}[{}]: expected \"a b\" or [\"a\", \"b\"], got {}", label, i, m.dump());
    }
    const std::optional<int32_t> left_id = TokenToId(left);
    const std::optional<int32_t> right_id = TokenToId(right);
    const std::optional<int32_t> merged_id = TokenToId(left + right);
    for (const auto& [token, id] : {std::pair{&left, left_id}, std::pair{&right, right_id}}) {
      if (!id.has_value()) return Corruption("{}[{}]: token '{}' is not in the vocab", label, i, *token);
    }
    if (!merged_id.has_value()) {
      return Corruption("{}[{}]: merged token '{}{}' is not in the vocab", label, i, left, right);
    }
    merges_.insert_or_assign(PairKey(*left_id, *right_id), Merge{static_cast<int32_t>(i), *merged_id});
  }
  return Status::Ok();
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = token_to_id_.find(token);
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

const BpeModel::Merge* BpeModel::FindMerge(int32_t left, int32_t right) const {
  auto it = merges_.find(PairKey(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

void BpeModel::CharSymbols(std::string_view text, std::vector<int32_t>* ids) const {
  bool pending_unk = false;  // an unknown character (or, with fuse_unk, a run of them) not emitted yet
  size_t pos = 0;
  while (pos < text.size()) {
    char32_t cp;
    bool valid;
    const size_t n = Utf8Next(text, pos, &cp, &valid);
    const std::string_view ch = text.substr(pos, n);
    pos += n;
    const std::optional<int32_t> id = TokenToId(ch);
    bool fallback = !id.has_value() && byte_fallback_;
    if (fallback && !all_fallback_bytes_) {
      for (char c : ch) fallback = fallback && fallback_ids_[static_cast<unsigned char>(c)] >= 0;
    }
    if (id.has_value() || fallback) {
      if (pending_unk) ids->push_back(*unk_id_);
      pending_unk = false;
      if (id.has_value()) {
        ids->push_back(*id);
      } else {
        for (char c : ch) ids->push_back(fallback_ids_[static_cast<unsigned char>(c)]);
      }
      continue;
    }
    if (!unk_id_.has_value()) continue;  // no unk_token: HF drops the character
    if (pending_unk && !fuse_unk_) ids->push_back(*unk_id_);
    pending_unk = true;
  }
  if (pending_unk) ids->push_back(*unk_id_);
}

void BpeModel::EncodePiece(std::string_view bytes, std::vector<int32_t>* out) const {
  if (bytes.empty()) return;
  if (ignore_merges_) {
    std::string text;
    if (byte_level_) {
      for (char c : bytes) text += ByteToUnicode(static_cast<unsigned char>(c));
    } else {
      text = bytes;
    }
    if (std::optional<int32_t> id = TokenToId(text)) {
      out->push_back(*id);
      return;
    }
  }
  std::vector<int32_t> ids;
  ids.reserve(bytes.size());
  if (byte_level_) {
    for (char c : bytes) {
      const int32_t id = byte_ids_[static_cast<unsigned char>(c)];
      if (id >= 0) ids.push_back(id);  // else a byte invalid UTF-8 never contains (input is valid)
    }
  } else {
    CharSymbols(bytes, &ids);
  }
  MergeAndAppend(ids, out);
}

void BpeModel::MergeAndAppend(const std::vector<int32_t>& ids, std::vector<int32_t>* out) const {
  struct Symbol {
    int32_t id;
    int32_t prev;  // index of the previous live symbol, -1 at the start
    int32_t next;  // index of the next live symbol, -1 at the end
  };
  std::vector<Symbol> symbols;
  symbols.reserve(ids.size());
  for (const int32_t id : ids) {
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, -1});
    if (index > 0) symbols[static_cast<size_t>(index) - 1].next = index;
  }

  // A candidate merge of the live symbol at `left` with its successor, valid while both still
  // hold the ids recorded here. Ordered by rank, then by position (leftmost first).
  struct Candidate {
    int32_t rank;
    int32_t left;
    int32_t left_id;
    int32_t right_id;
    int32_t merged_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto consider = [&](int32_t left) {
    const int32_t right = symbols[static_cast<size_t>(left)].next;
    if (right < 0) return;
    const int32_t left_id = symbols[static_cast<size_t>(left)].id;
    const int32_t right_id = symbols[static_cast<size_t>(right)].id;
    if (const Merge* m = FindMerge(left_id, right_id))
      queue.push({m->rank, left, left_id, right_id, m->merged_id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i);

  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = symbols[static_cast<size_t>(c.left)];
    if (left.id != c.left_id || left.next < 0) continue;  // stale: the left symbol changed
    Symbol& right = symbols[static_cast<size_t>(left.next)];
    if (right.id != c.right_id) continue;  // stale: the right neighbour changed
    left.id = c.merged_id;
    left.next = right.next;
    if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = c.left;
    right.id = -1;  // dead
    if (left.prev >= 0) consider(left.prev);
    consider(c.left);
  }
  for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[static_cast<size_t>(i)].next) {
    out->push_back(symbols[static_cast<size_t>(i)].id);
  }
}

}  // namespace moerun::tokenizer_internal
