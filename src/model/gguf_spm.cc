// llama.cpp's SPM vocabulary <-> HF SentencePiece-style BPE (model/gguf_spm.h).
#include "model/gguf_spm.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <unordered_map>

#include "model/gguf_common.h"
#include "model/gguf_vocab.h"

namespace moerun {
namespace {

using namespace gguf_internal;  // NOLINT(build/namespaces,google-build-using-namespace)

constexpr float kUnreachableScore = -1e9f;
const std::string kSpace = "\xe2\x96\x81";  // "▁"

bool IsByteToken(const std::string& t) {
  return t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
         std::isxdigit(static_cast<unsigned char>(t[3])) && std::isxdigit(static_cast<unsigned char>(t[4]));
}

// Number of UTF-8 characters (lead bytes) in s.
size_t CharCount(const std::string& s) {
  size_t n = 0;
  for (unsigned char ch : s) n += (ch & 0xC0) != 0x80;
  return n;
}

bool NormalizerPrepends(const Json& n) {
  if (!n.is_object()) return false;
  if (n.value("type", "") == "Prepend") return n.value("prepend", "") == kSpace;
  if (n.value("type", "") == "Sequence" && n.contains("normalizers") && n["normalizers"].is_array()) {
    for (const Json& s : n["normalizers"])
      if (NormalizerPrepends(s)) return true;
  }
  return false;
}

}  // namespace

bool IsSpmStyleTokenizer(const std::string& tokenizer_json) {
  const Json tok = Json::parse(tokenizer_json, nullptr, false);
  if (tok.is_discarded() || !tok.is_object() || !tok.contains("model") || !tok["model"].is_object())
    return false;
  const Json& m = tok["model"];
  return m.value("type", "") == "BPE" && m.value("byte_fallback", false);
}

StatusOr<SpmVocab> SpmVocabFromHf(const std::string& tokenizer_json, const std::string& tokenizer_config_json,
                                  int64_t vocab_size, const ModelConfig& c) {
  const Json tok = Json::parse(tokenizer_json, nullptr, false);
  if (tok.is_discarded() || !tok.is_object()) return InvalidArgument("tokenizer.json: not a JSON object");
  const Json cfg =
      tokenizer_config_json.empty() ? Json::object() : Json::parse(tokenizer_config_json, nullptr, false);
  if (cfg.is_discarded() || !cfg.is_object())
    return InvalidArgument("tokenizer_config.json: not a JSON object");
  const Json& model = tok["model"];
  if (!model.contains("vocab") || !model["vocab"].is_object())
    return InvalidArgument("tokenizer.json: model.vocab must be an object");
  if (tok.contains("pre_tokenizer") && !tok["pre_tokenizer"].is_null()) {
    return Unimplemented(
        "tokenizer.json: a SentencePiece-style tokenizer with a pre_tokenizer (Metaspace) is not supported; "
        "llama.cpp's SPM expects the normalizer form (Prepend + Replace \"▁\")");
  }
  SpmVocab v;
  v.add_space_prefix = tok.contains("normalizer") && NormalizerPrepends(tok["normalizer"]);
  v.tokens.assign(static_cast<size_t>(vocab_size), "");
  v.types.assign(static_cast<size_t>(vocab_size), kUnused);
  v.scores.assign(static_cast<size_t>(vocab_size), 0.0f);
  std::vector<bool> placed(static_cast<size_t>(vocab_size), false);
  std::unordered_map<std::string, int64_t> ids;
  auto place = [&](const std::string& content, int64_t id, int32_t type) -> Status {
    if (id < 0 || id >= vocab_size) {
      return InvalidArgument("tokenizer.json: token '{}' has id {}, outside the config's vocab_size {}",
                             content, id, vocab_size);
    }
    v.tokens[static_cast<size_t>(id)] = content;
    v.types[static_cast<size_t>(id)] = type;
    placed[static_cast<size_t>(id)] = true;
    ids[content] = id;
    return Status::Ok();
  };
  const std::string unk = model.contains("unk_token") && model["unk_token"].is_string()
                              ? model["unk_token"].get<std::string>()
                              : "";
  for (const auto& [content, id] : model["vocab"].items()) {
    if (!id.is_number_integer())
      return InvalidArgument("tokenizer.json: vocab '{}' is not an integer id", content);
    const int32_t type = content == unk ? kUnknown : (IsByteToken(content) ? kByte : kNormal);
    RETURN_IF_ERROR(place(content, id.get<int64_t>(), type));
  }
  if (tok.contains("added_tokens") && tok["added_tokens"].is_array()) {
    for (const Json& a : tok["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
          !a["content"].is_string()) {
        return InvalidArgument(
            "tokenizer.json: added_tokens entries need an integer id and a string content");
      }
      const std::string content = a["content"].get<std::string>();
      const int64_t id = a["id"].get<int64_t>();
      const int32_t type = content == unk ? kUnknown : (a.value("special", false) ? kControl : kUserDefined);
      RETURN_IF_ERROR(place(content, id, type));
    }
  }
  for (size_t i = 0; i < placed.size(); ++i) {
    if (!placed[i]) v.tokens[i] = fmt::format("[PAD{}]", i);
    // Multi-character normal tokens no merge produces (fixed below for the merged ones).
    if (v.types[i] == kNormal && CharCount(v.tokens[i]) > 1) v.scores[i] = kUnreachableScore;
  }
  const Json& merges = model.contains("merges") ? model["merges"] : Json::array();
  int64_t rank = 0;
  for (const Json& m : merges) {
    std::string merged;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos) return InvalidArgument("tokenizer.json: merge '{}' has no space", s);
      merged = s.substr(0, sp) + s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merged = m[0].get<std::string>() + m[1].get<std::string>();
    } else {
      return InvalidArgument("tokenizer.json: a merge is neither \"a b\" nor [\"a\", \"b\"]");
    }
    ++rank;
    auto it = ids.find(merged);
    if (it == ids.end()) continue;
    float& score = v.scores[static_cast<size_t>(it->second)];
    if (score == kUnreachableScore) score = -static_cast<float>(rank);
  }
  auto id_of = [&](const std::optional<std::string>& s, int64_t fallback) -> int64_t {
    if (!s) return fallback;
    auto it = ids.find(*s);
    return it == ids.end() ? -1 : it->second;
  };
  auto content = [&](const char* key) -> std::optional<std::string> {
    auto it = cfg.find(key);
    if (it == cfg.end() || it->is_null()) return std::nullopt;
    if (it->is_string()) return it->get<std::string>();
    if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
      return (*it)["content"].get<std::string>();
    return std::nullopt;
  };
  v.bos = id_of(content("bos_token"), c.bos_token_id);
  v.eos = id_of(content("eos_token"), c.eos_token_id);
  v.pad = id_of(content("pad_token"), -1);
  v.unk = unk.empty() ? -1 : id_of(unk, -1);
  v.add_bos = cfg.value("add_bos_token", true);
  v.add_eos = cfg.value("add_eos_token", false);
  if (cfg.contains("chat_template") && cfg["chat_template"].is_string())
    v.chat_template = cfg["chat_template"].get<std::string>();
  return v;
}

Status AddSpmKvs(GgufWriter* w, const SpmVocab& v) {
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.model", GgufValue::String("llama")));
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.pre", GgufValue::String("default")));
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.tokens", GgufValue::StringArray(v.tokens)));
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.scores", GgufValue::F32Array(v.scores)));
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.token_type", GgufValue::I32Array(v.types)));
  for (const auto& [key, id] : {std::pair<const char*, int64_t>{"tokenizer.ggml.bos_token_id", v.bos},
                                {"tokenizer.ggml.eos_token_id", v.eos},
                                {"tokenizer.ggml.unknown_token_id", v.unk},
                                {"tokenizer.ggml.padding_token_id", v.pad}}) {
    if (id >= 0) RETURN_IF_ERROR(w->AddKv(key, GgufValue::U32(static_cast<uint32_t>(id))));
  }
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.add_bos_token", GgufValue::Bool(v.add_bos)));
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.add_eos_token", GgufValue::Bool(v.add_eos)));
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.add_space_prefix", GgufValue::Bool(v.add_space_prefix)));
  if (!v.chat_template.empty())
    RETURN_IF_ERROR(w->AddKv("tokenizer.chat_template", GgufValue::String(v.chat_template)));
  return Status::Ok();
}

StatusOr<HfTokenizerText> SpmTokenizerFromGguf(const GgufFile& f) {
  ASSIGN_OR_RETURN(std::vector<std::string> tokens, f.GetStringArray("tokenizer.ggml.tokens"));
  const size_t n = tokens.size();
  std::vector<double> scores(n, 0.0);
  if (const GgufValue* s = f.FindKey("tokenizer.ggml.scores"); s != nullptr) {
    if (s->type != GgufType::kArray || s->floats.size() != n) {
      return InvalidArgument("{}: key 'tokenizer.ggml.scores' must be an array of {} floats (one per token)",
                             f.path(), n);
    }
    scores = s->floats;
  }
  std::vector<int64_t> types(n, kNormal);
  if (f.FindKey("tokenizer.ggml.token_type") != nullptr) {
    ASSIGN_OR_RETURN(types, f.GetIntArray("tokenizer.ggml.token_type"));
    if (types.size() != n) {
      return InvalidArgument("{}: tokenizer.ggml.token_type has {} entries, tokenizer.ggml.tokens {}",
                             f.path(), types.size(), n);
    }
  }
  ASSIGN_OR_RETURN(bool space_prefix, f.GetBoolOr("tokenizer.ggml.add_space_prefix", true));
  ASSIGN_OR_RETURN(int64_t unk_id, f.GetIntOr("tokenizer.ggml.unknown_token_id", -1));
  OrderedObjectBuilder vocab;
  OJson added = OJson::array();
  std::unordered_map<std::string, int64_t> ids;
  for (size_t i = 0; i < n; ++i) {
    const int64_t t = types[i];
    if (t == kUnused) continue;
    if (t == kControl || t == kUserDefined) {
      added.push_back(AddedTokenJson(i, tokens[i], t));
      continue;
    }
    vocab.Put(tokens[i], i);
    if (t == kNormal) ids.emplace(tokens[i], static_cast<int64_t>(i));
  }
  // Every split (A, B) of every normal token T = A + B with A, B normal tokens, by score(T)
  // descending (ties: token id, then split point).
  struct Merge {
    double score;
    int64_t id;
    size_t split;
  };
  std::vector<Merge> merges;
  for (const auto& [text, id] : ids) {
    for (size_t k = 1; k < text.size(); ++k) {
      if ((static_cast<unsigned char>(text[k]) & 0xC0) == 0x80) continue;  // inside a character
      if (ids.count(text.substr(0, k)) && ids.count(text.substr(k)))
        merges.push_back({scores[static_cast<size_t>(id)], id, k});
    }
  }
  std::sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.id != b.id) return a.id < b.id;
    return a.split < b.split;
  });
  OJson merge_list = OJson::array();
  for (const Merge& m : merges) {
    const std::string& t = tokens[static_cast<size_t>(m.id)];
    merge_list.push_back(t.substr(0, m.split) + " " + t.substr(m.split));
  }
  OJson normalizers = OJson::array();
  if (space_prefix) normalizers.push_back(OJson{{"type", "Prepend"}, {"prepend", kSpace}});
  normalizers.push_back(OJson{{"type", "Replace"}, {"pattern", OJson{{"String", " "}}}, {"content", kSpace}});
  OJson decoders = OJson::array();
  decoders.push_back(OJson{{"type", "Replace"}, {"pattern", OJson{{"String", kSpace}}}, {"content", " "}});
  decoders.push_back(OJson{{"type", "ByteFallback"}});
  decoders.push_back(OJson{{"type", "Fuse"}});
  if (space_prefix) decoders.push_back(OJson{{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  OJson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = std::move(added);
  j["normalizer"] = OJson{{"type", "Sequence"}, {"normalizers", std::move(normalizers)}};
  j["pre_tokenizer"] = nullptr;
  j["post_processor"] = nullptr;
  j["decoder"] = OJson{{"type", "Sequence"}, {"decoders", std::move(decoders)}};
  j["model"] = OJson{{"type", "BPE"},
                     {"dropout", nullptr},
                     {"unk_token", unk_id >= 0 && unk_id < static_cast<int64_t>(n)
                                       ? OJson(tokens[static_cast<size_t>(unk_id)])
                                       : OJson(nullptr)},
                     {"continuing_subword_prefix", nullptr},
                     {"end_of_word_suffix", nullptr},
                     {"fuse_unk", true},
                     {"byte_fallback", true},
                     {"vocab", std::move(vocab).Take()},
                     {"merges", std::move(merge_list)}};
  return FinishTokenizerText(f, tokens, j, /*add_bos_default=*/true);
}

}  // namespace moerun
