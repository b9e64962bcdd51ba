// Tokenizer (tokenizer/tokenizer.h): loading tokenizer.json + tokenizer_config.json with every field
// validated (the loader is most of this file, each check beside the field it reads), then encode
// (added tokens, normalizer, pre-tokenizer, BPE) and decode.
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <utility>

#include "io/atomic_file.h"
#include "io/json_checks.h"
#include "tokenizer/bpe.h"
#include "tokenizer/decoder.h"
#include "tokenizer/json_fields.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/utf8.h"

namespace moerun {
namespace tokenizer_internal {

namespace {

// tokenizer.json nests about 6 levels; merges of the largest vocabularies have ~300k entries.
constexpr internal::JsonLimits kTokenizerJsonLimits{/*max_depth=*/32, /*max_array_elements=*/size_t{1} << 22};

// Builds the DOM of text that CheckJsonStructure already accepted.
StatusOr<Json> ParseJsonText(std::string_view text) {
  Json root = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return Corruption("invalid JSON");
  if (!root.is_object())
    return Corruption("expected a JSON object at the top level, got {}", root.type_name());
  return root;
}

// bos_token / eos_token in tokenizer_config.json: a string, {"content": ...} (transformers'
// AddedToken serialisation), or null/absent.
StatusOr<std::optional<std::string>> ConfigTokenString(const Json& config, std::string_view key) {
  const Json* v = FindField(config, key);
  if (v == nullptr || v->is_null()) return std::optional<std::string>();
  if (v->is_string()) return std::optional<std::string>(v->get<std::string>());
  if (v->is_object()) {
    ASSIGN_OR_RETURN(std::string content, GetString(*v, "content", key));
    return std::optional<std::string>(std::move(content));
  }
  return Corruption("{}: expected a string or an object with \"content\", got {}", key, v->type_name());
}

StatusOr<int32_t> IdValue(const Json& value, const std::string& label) {
  if (!value.is_number_integer())
    return Corruption("{}: expected an integer id, got {}", label, value.type_name());
  const int64_t id = value.get<int64_t>();
  if (id < 0 || id >= kMaxTokenId)
    return Corruption("{}: id {} is out of range [0, {})", label, id, kMaxTokenId);
  return static_cast<int32_t>(id);
}

}  // namespace

class TokenizerLoader {
 public:
  static StatusOr<std::unique_ptr<Tokenizer>> Build(std::string_view json_text, std::string_view label,
                                                    const std::string_view* config_text,
                                                    std::string_view config_label) {
    std::unique_ptr<Tokenizer> t(new Tokenizer());
    t->label_ = std::string(label);
    RETURN_IF_ERROR(internal::CheckJsonStructure(json_text, kTokenizerJsonLimits, label));
    RETURN_IF_ERROR(ParseTokenizerJson(t.get(), json_text).WithContext(label));
    if (config_text != nullptr) {
      t->has_config_ = true;
      t->config_label_ = std::string(config_label);
      RETURN_IF_ERROR(internal::CheckJsonStructure(*config_text, kTokenizerJsonLimits, config_label));
      RETURN_IF_ERROR(ParseConfig(t.get(), *config_text).WithContext(config_label));
    }
    return t;
  }

 private:
  static Status ParseTokenizerJson(Tokenizer* t, std::string_view text) {
    ASSIGN_OR_RETURN(const Json root, ParseJsonText(text));
    const Json null_value;
    const auto field = [&](std::string_view key) -> const Json& {
      const Json* v = FindField(root, key);
      return v == nullptr ? null_value : *v;
    };
    ASSIGN_OR_RETURN(t->normalizer_, Normalizer::FromJson(field("normalizer"), "normalizer"));
    ASSIGN_OR_RETURN(t->pre_tokenizer_, PreTokenizer::FromJson(field("pre_tokenizer"), "pre_tokenizer"));
    // The family follows from the pre-tokenizer: ByteLevel last means byte-level BPE, anything
    // else SentencePiece-style character BPE; the decoder must undo the same family.
    const bool byte_level = t->pre_tokenizer_->byte_level();
    if (FindField(root, "model") == nullptr)
      return Corruption("model: missing (expected a BPE model object)");
    ASSIGN_OR_RETURN(t->model_, BpeModel::FromJson(field("model"), "model", byte_level));
    ASSIGN_OR_RETURN(t->decoder_, Decoder::FromJson(field("decoder"), "decoder"));
    if (t->decoder_->byte_level() != byte_level) {
      if (byte_level)
        return Unimplemented(
            "decoder: the pre_tokenizer ends in ByteLevel, so the decoder must be ByteLevel");
      return Unimplemented(
          "decoder: ByteLevel needs a pre_tokenizer that ends in ByteLevel (this one does not)");
    }
    RETURN_IF_ERROR(ParseAddedTokens(t, field("added_tokens")));
    BuildIdTables(t);
    RETURN_IF_ERROR(ParsePostProcessor(t, field("post_processor"), "post_processor"));
    BuildTrie(t);
    return Status::Ok();
  }

  static Status ParseAddedTokens(Tokenizer* t, const Json& list) {
    if (list.is_null()) return Status::Ok();
    if (!list.is_array()) return Corruption("added_tokens: expected an array, got {}", list.type_name());
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string label = fmt::format("added_tokens[{}]", i);
      const Json& item = list[i];
      RETURN_IF_ERROR(ExpectObject(item, label));
      AddedToken token;
      const Json* id = FindField(item, "id");
      if (id == nullptr) return Corruption("{}.id: missing (expected an integer id)", label);
      ASSIGN_OR_RETURN(token.id, IdValue(*id, label + ".id"));
      ASSIGN_OR_RETURN(token.content, GetString(item, "content", label));
      if (token.content.empty()) return Corruption("{}.content: is empty", label);
      ASSIGN_OR_RETURN(token.special, GetBool(item, "special", label, false));
      ASSIGN_OR_RETURN(token.lstrip, GetBool(item, "lstrip", label, false));
      ASSIGN_OR_RETURN(token.rstrip, GetBool(item, "rstrip", label, false));
      ASSIGN_OR_RETURN(const bool single_word, GetBool(item, "single_word", label, false));
      if (single_word)
        return Unimplemented("{}.single_word: true is not supported (token '{}')", label, token.content);
      ASSIGN_OR_RETURN(const bool normalized, GetBool(item, "normalized", label, false));
      if (normalized && !t->normalizer_->empty()) {
        return Unimplemented(
            "{}.normalized: true with a normalizer that has steps is not supported (token '{}' would be "
            "matched in normalized text)",
            label, token.content);
      }
      if (auto [it, inserted] = t->added_by_id_.emplace(token.id, static_cast<int>(i)); !inserted) {
        return Corruption("{}.id: {} is also the id of added_tokens[{}]", label, token.id, it->second);
      }
      if (auto [it, inserted] = t->added_by_content_.emplace(token.content, static_cast<int>(i)); !inserted) {
        return Corruption("{}.content: '{}' is also the content of added_tokens[{}]", label, token.content,
                          it->second);
      }
      if (token.id < t->model_->id_bound()) {
        const std::string& vocab_token = t->model_->IdToToken(token.id);
        if (!vocab_token.empty() && vocab_token != token.content) {
          return Corruption("{}: id {} is '{}' here but '{}' in model.vocab", label, token.id, token.content,
                            vocab_token);
        }
      }
      t->added_.push_back(std::move(token));
    }
    return Status::Ok();
  }

  static void BuildIdTables(Tokenizer* t) {
    int32_t size = t->model_->id_bound();
    for (const AddedToken& a : t->added_) size = std::max(size, a.id + 1);
    t->id_bytes_.assign(static_cast<size_t>(size), std::string());
    t->id_kind_.assign(static_cast<size_t>(size), Tokenizer::IdKind::kUnused);
    for (int32_t id = 0; id < t->model_->id_bound(); ++id) {
      const std::string& token = t->model_->IdToToken(id);
      if (token.empty()) continue;
      t->id_kind_[static_cast<size_t>(id)] = Tokenizer::IdKind::kVocab;
      t->id_bytes_[static_cast<size_t>(id)] = t->decoder_->TokenBytes(token, /*first=*/false);
    }
    for (const AddedToken& a : t->added_) {
      // HF runs added tokens through the decoder too; the ByteLevel one keeps them as text.
      t->id_bytes_[static_cast<size_t>(a.id)] =
          t->decoder_->byte_level() ? a.content : t->decoder_->TokenBytes(a.content, /*first=*/false);
      t->id_kind_[static_cast<size_t>(a.id)] =
          a.special ? Tokenizer::IdKind::kSpecial : Tokenizer::IdKind::kAdded;
    }
  }

  // null, ByteLevel (offsets only: no effect on ids), TemplateProcessing ("single" template), or
  // a Sequence of those.
  static Status ParsePostProcessor(Tokenizer* t, const Json& value, const std::string& label) {
    if (value.is_null()) return Status::Ok();
    RETURN_IF_ERROR(ExpectObject(value, label));
    ASSIGN_OR_RETURN(std::string type, GetString(value, "type", label));
    if (type == "ByteLevel") return Status::Ok();
    if (type == "Sequence") {
      const Json* list = FindField(value, "processors");
      if (list == nullptr || !list->is_array()) {
        return Corruption("{}.processors: expected an array, got {}", label,
                          list == nullptr ? "nothing" : list->type_name());
      }
      for (size_t i = 0; i < list->size(); ++i) {
        RETURN_IF_ERROR(ParsePostProcessor(t, (*list)[i], fmt::format("{}.processors[{}]", label, i)));
      }
      return Status::Ok();
    }
    if (type != "TemplateProcessing") {
      return Unimplemented(
          "{}.type: post-processor '{}' is not supported (supported: ByteLevel, TemplateProcessing, "
          "Sequence)",
          label, type);
    }
    if (!t->prefix_ids_.empty() || !t->suffix_ids_.empty()) {
      return Unimplemented("{}: more than one TemplateProcessing", label);
    }
    const Json* single = FindField(value, "single");
    if (single == nullptr || !single->is_array()) return Corruption("{}.single: expected an array", label);
    const Json* specials = FindField(value, "special_tokens");
    bool seen_sequence = false;
    for (size_t i = 0; i < single->size(); ++i) {
      const std::string item_label = fmt::format("{}.single[{}]", label, i);
      const Json& item = (*single)[i];
      RETURN_IF_ERROR(ExpectObject(item, item_label));
      if (const Json* seq = FindField(item, "Sequence")) {
        ASSIGN_OR_RETURN(std::string id, GetString(*seq, "id", item_label + ".Sequence"));
        if (id != "A" || seen_sequence) {
          return Corruption("{}.Sequence.id: '{}' (a single template holds sequence A once)", item_label, id);
        }
        seen_sequence = true;
        continue;
      }
      const Json* special = FindField(item, "SpecialToken");
      if (special == nullptr)
        return Corruption("{}: expected a \"Sequence\" or \"SpecialToken\" item", item_label);
      ASSIGN_OR_RETURN(std::string name, GetString(*special, "id", item_label + ".SpecialToken"));
      const Json* entry = specials == nullptr ? nullptr : FindField(*specials, name);
      const Json* ids = entry == nullptr ? nullptr : FindField(*entry, "ids");
      if (ids == nullptr || !ids->is_array()) {
        return Corruption("{}.special_tokens['{}'].ids: missing (expected an array of ids)", label, name);
      }
      for (size_t k = 0; k < ids->size(); ++k) {
        const std::string id_label = fmt::format("{}.special_tokens['{}'].ids[{}]", label, name, k);
        ASSIGN_OR_RETURN(const int32_t id, IdValue((*ids)[k], id_label));
        if (id >= t->vocab_size() || t->id_kind_[static_cast<size_t>(id)] == Tokenizer::IdKind::kUnused) {
          return Corruption("{}: id {} is not a token (vocab size {})", id_label, id, t->vocab_size());
        }
        (seen_sequence ? t->suffix_ids_ : t->prefix_ids_).push_back(id);
      }
    }
    if (!seen_sequence)
      return Corruption("{}.single: has no {{\"Sequence\": {{\"id\": \"A\"}}}} item", label);
    return Status::Ok();
  }

  static void BuildTrie(Tokenizer* t) {
    t->trie_terminal_.assign(1, -1);
    for (size_t i = 0; i < t->added_.size(); ++i) {
      const std::string& content = t->added_[i].content;
      t->trie_first_byte_[static_cast<unsigned char>(content[0])] = true;
      int32_t node = 0;
      for (char c : content) {
        const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(c);
        auto [it, inserted] = t->trie_edges_.emplace(key, static_cast<int32_t>(t->trie_terminal_.size()));
        if (inserted) t->trie_terminal_.push_back(-1);
        node = it->second;
      }
      t->trie_terminal_[static_cast<size_t>(node)] = static_cast<int32_t>(i);
    }
  }

  static Status ParseConfig(Tokenizer* t, std::string_view text) {
    ASSIGN_OR_RETURN(const Json config, ParseJsonText(text));
    ASSIGN_OR_RETURN(std::optional<std::string> bos, ConfigTokenString(config, "bos_token"));
    ASSIGN_OR_RETURN(std::optional<std::string> eos, ConfigTokenString(config, "eos_token"));
    if (bos.has_value()) {
      ASSIGN_OR_RETURN(t->bos_id_, ResolveToken(*t, *bos, "bos_token"));
      t->bos_token_ = *bos;
    }
    if (eos.has_value()) {
      ASSIGN_OR_RETURN(t->eos_id_, ResolveToken(*t, *eos, "eos_token"));
      t->eos_token_ = *eos;
    }
    const Json* add_bos = FindField(config, "add_bos_token");
    const Json* add_eos = FindField(config, "add_eos_token");
    if (add_bos != nullptr || add_eos != nullptr) {
      ASSIGN_OR_RETURN(const bool want_bos, GetBool(config, "add_bos_token", "", false));
      ASSIGN_OR_RETURN(const bool want_eos, GetBool(config, "add_eos_token", "", false));
      if (want_bos && !t->bos_id_) return Corruption("add_bos_token: true but bos_token is not set");
      if (want_eos && !t->eos_id_) return Corruption("add_eos_token: true but eos_token is not set");
      t->prefix_ids_.clear();
      t->suffix_ids_.clear();
      if (want_bos) t->prefix_ids_.push_back(*t->bos_id_);
      if (want_eos) t->suffix_ids_.push_back(*t->eos_id_);
    }
    const Json* tmpl = FindField(config, "chat_template");
    if (tmpl != nullptr && tmpl->is_string()) {
      t->chat_template_ = tmpl->get<std::string>();
    } else if (tmpl != nullptr && tmpl->is_array()) {
      // [{"name": ..., "template": ...}]: the "default" one.
      for (size_t i = 0; i < tmpl->size(); ++i) {
        const std::string label = fmt::format("chat_template[{}]", i);
        ASSIGN_OR_RETURN(std::string name, GetString((*tmpl)[i], "name", label));
        ASSIGN_OR_RETURN(std::string body, GetString((*tmpl)[i], "template", label));
        if (name == "default") t->chat_template_ = std::move(body);
      }
    } else if (tmpl != nullptr && !tmpl->is_null()) {
      return Corruption("chat_template: expected a string or an array, got {}", tmpl->type_name());
    }
    t->chat_format_ = DetectChatFormat(t->chat_template_);
    return Status::Ok();
  }

  static StatusOr<int32_t> ResolveToken(const Tokenizer& t, const std::string& content,
                                        std::string_view field) {
    if (std::optional<int32_t> id = t.PieceToId(content)) return *id;
    return Corruption("{}: '{}' is not a token of {}", field, content, t.label_);
  }
};

}  // namespace tokenizer_internal

using tokenizer_internal::TokenizerLoader;

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& tokenizer_json_path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(tokenizer_json_path));
  return FromJson(text, tokenizer_json_path);
}

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromDirectory(const std::string& dir) {
  const std::string json_path = (std::filesystem::path(dir) / "tokenizer.json").string();
  const std::string config_path = (std::filesystem::path(dir) / "tokenizer_config.json").string();
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(json_path));
  StatusOr<std::string> config = ReadFileToString(config_path);
  if (!config.ok()) {
    if (config.status().code() != StatusCode::kNotFound) return config.status();
    return FromJson(text, json_path);
  }
  return FromJsonWithConfig(text, json_path, *config, config_path);
}

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view tokenizer_json,
                                                         std::string_view label) {
  return TokenizerLoader::Build(tokenizer_json, label, nullptr, "");
}

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJsonWithConfig(std::string_view tokenizer_json,
                                                                   std::string_view tokenizer_label,
                                                                   std::string_view config_json,
                                                                   std::string_view config_label) {
  return TokenizerLoader::Build(tokenizer_json, tokenizer_label, &config_json, config_label);
}

void Tokenizer::SplitOnAddedTokens(std::string_view text, std::vector<Section>* sections) const {
  size_t start = 0;  // first byte of the pending plain-text section
  size_t pos = 0;
  while (pos < text.size()) {
    int best = -1;
    size_t best_len = 0;
    if (trie_first_byte_[static_cast<unsigned char>(text[pos])]) {
      int32_t node = 0;
      for (size_t k = pos; k < text.size(); ++k) {
        const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(text[k]);
        auto it = trie_edges_.find(key);
        if (it == trie_edges_.end()) break;
        node = it->second;
        if (trie_terminal_[static_cast<size_t>(node)] >= 0) {
          best = trie_terminal_[static_cast<size_t>(node)];
          best_len = k + 1 - pos;
        }
      }
    }
    if (best < 0) {
      ++pos;
      continue;
    }
    if (pos > start) sections->push_back({text.substr(start, pos - start), -1});
    sections->push_back({text.substr(pos, best_len), best});
    pos += best_len;
    start = pos;
  }
  if (start < text.size()) sections->push_back({text.substr(start), -1});

  // lstrip / rstrip: an added token swallows the White_Space beside it.
  for (size_t i = 0; i < sections->size(); ++i) {
    const Section& s = (*sections)[i];
    if (s.added < 0) continue;
    const AddedToken& token = added_[static_cast<size_t>(s.added)];
    if (token.lstrip && i > 0 && (*sections)[i - 1].added < 0) {
      (*sections)[i - 1].text = tokenizer_internal::TrimEndWhitespace((*sections)[i - 1].text);
    }
    if (token.rstrip && i + 1 < sections->size() && (*sections)[i + 1].added < 0) {
      (*sections)[i + 1].text = tokenizer_internal::TrimStartWhitespace((*sections)[i + 1].text);
    }
  }
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  std::string sanitized;
  if (!tokenizer_internal::IsValidUtf8(text)) {
    sanitized = tokenizer_internal::SanitizeUtf8(text);
    text = sanitized;
  }
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = prefix_ids_;
  std::vector<Section> sections;
  SplitOnAddedTokens(text, &sections);
  std::vector<std::string> pieces;
  for (const Section& section : sections) {
    if (section.added >= 0) {
      ids.push_back(added_[static_cast<size_t>(section.added)].id);
      continue;
    }
    pieces.clear();
    // Metaspace's prepend_scheme "first": only the section at the start of the text.
    const bool at_text_start = section.text.data() == text.data();
    if (normalizer_->empty()) {
      pre_tokenizer_->Split(section.text, &pieces, at_text_start);
    } else if (!section.text.empty()) {
      pre_tokenizer_->Split(normalizer_->Normalize(section.text), &pieces, at_text_start);
    }
    for (const std::string& piece : pieces) model_->EncodePiece(piece, &ids);
  }
  if (add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
  return ids;
}

StatusOr<std::string> Tokenizer::DecodeImpl(std::span<const int32_t> ids, bool skip_special_tokens,
                                            bool sequence) const {
  std::string out;
  bool first = true;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab_size()) {
      return OutOfRange("token id {} (position {}) is out of range [0, {})", id, i, vocab_size());
    }
    const IdKind kind = id_kind_[static_cast<size_t>(id)];
    if (kind == IdKind::kUnused)
      return OutOfRange("token id {} (position {}) is not used by any token", id, i);
    if (skip_special_tokens && kind == IdKind::kSpecial) continue;
    if (sequence && first && decoder_->first_token_differs()) {
      out += decoder_->TokenBytes(Piece(id), /*first=*/true);
    } else {
      out += id_bytes_[static_cast<size_t>(id)];
    }
    first = false;
  }
  if (sequence) decoder_->FinishSequence(&out);
  return out;
}

StatusOr<std::string> Tokenizer::DecodeBytes(std::span<const int32_t> ids, bool skip_special_tokens) const {
  return DecodeImpl(ids, skip_special_tokens, /*sequence=*/false);
}

StatusOr<std::string> Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  ASSIGN_OR_RETURN(std::string bytes, DecodeImpl(ids, skip_special_tokens, /*sequence=*/true));
  if (tokenizer_internal::IsValidUtf8(bytes)) return bytes;
  return tokenizer_internal::SanitizeUtf8(bytes);
}

StatusOr<std::string> Tokenizer::ApplyChatTemplate(std::span<const ChatMessage> messages,
                                                   bool add_generation_prompt,
                                                   std::optional<bool> enable_thinking) const {
  if (!has_config_)
    return InvalidArgument("{}: no tokenizer_config.json was loaded, so there is no chat template", label_);
  if (!chat_format_.has_value()) {
    return Unimplemented(
        "{}: chat_template is not one of the recognised templates (DeepSeek-V2, ChatML, Qwen2, Qwen2.5, "
        "Qwen3, Mistral [INST] v0.1, Mixtral [INST] with system; see tokenizer/chat_template.h); there is no "
        "general Jinja engine",
        config_label_);
  }
  return RenderChat(*chat_format_, messages, bos_token_, eos_token_, add_generation_prompt, enable_thinking);
}

std::string_view Tokenizer::Piece(int32_t id) const {
  if (id_kind_[static_cast<size_t>(id)] == IdKind::kVocab) return model_->IdToToken(id);
  return added_[static_cast<size_t>(added_by_id_.at(id))].content;
}

StatusOr<std::string_view> Tokenizer::TokenToPiece(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    return OutOfRange("token id {} is out of range [0, {})", id, vocab_size());
  if (id_kind_[static_cast<size_t>(id)] == IdKind::kUnused)
    return OutOfRange("token id {} is not used by any token", id);
  return Piece(id);
}

std::optional<int32_t> Tokenizer::PieceToId(std::string_view piece) const {
  auto it = added_by_content_.find(std::string(piece));
  if (it != added_by_content_.end()) return added_[static_cast<size_t>(it->second)].id;
  return model_->TokenToId(piece);
}

bool Tokenizer::byte_level() const { return pre_tokenizer_->byte_level(); }

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() && id_kind_[static_cast<size_t>(id)] == IdKind::kSpecial;
}

}  // namespace moerun
