// llama.cpp's gpt2 vocabulary <-> HF tokenizer.json (model/gguf_vocab.h).
#include "model/gguf_vocab.h"

#include <utility>

namespace moerun::gguf_internal {
namespace {

// What llama.cpp's convert_hf_to_gguf.py's does_token_look_special() calls special.
bool LooksSpecial(std::string_view t) {
  auto wrapped = [&](std::string_view open, std::string_view close) {
    return t.size() >= open.size() + close.size() && t.substr(0, open.size()) == open && EndsWith(t, close);
  };
  return t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]" || wrapped("<|", "|>") ||
         wrapped("<\xef\xbd\x9c", "\xef\xbd\x9c>") || wrapped("<unused", ">");
}

StatusOr<std::optional<std::string>> TokenContent(const Json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return std::optional<std::string>();
  if (it->is_string()) return std::optional<std::string>(it->get<std::string>());
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return std::optional<std::string>((*it)["content"].get<std::string>());
  }
  return InvalidArgument("tokenizer_config.json: '{}' must be a string or {{\"content\": ...}}", key);
}

// What decides llama.cpp's `pre`: the Regex patterns of the pre-tokenizer's Split steps in order
// (a Sequence or a single step), and "<ByteLevel regex>" for a ByteLevel step that applies GPT-2's
// own regex (use_regex true). convert_hf_to_gguf.py hashes the ids of a check text instead, which
// needs transformers; for the known tokenizers comparing the regexes is equivalent.
std::vector<std::string> PreSignature(const Json& pre) {
  std::vector<std::string> out;
  const auto one = [&](const Json& p) {
    if (!p.is_object()) return;
    const std::string type = p.value("type", "");
    if (type == "Split" && p.contains("pattern") && p["pattern"].is_object() &&
        p["pattern"].contains("Regex") && p["pattern"]["Regex"].is_string()) {
      out.push_back(p["pattern"]["Regex"].get<std::string>());
    } else if (type == "ByteLevel" && p.value("use_regex", true)) {
      out.push_back("<ByteLevel regex>");
    }
  };
  if (pre.is_object() && pre.value("type", "") == "Sequence" && pre.contains("pretokenizers") &&
      pre["pretokenizers"].is_array()) {
    for (const Json& p : pre["pretokenizers"]) one(p);
  } else {
    one(pre);
  }
  return out;
}

bool PreMatches(const std::vector<std::string>& got, std::string_view pre) {
  const std::optional<std::string_view> json = PreTokenizerJson(pre);
  if (!json) return false;
  std::vector<std::string> want = PreSignature(Json::parse(*json));
  if (got == want) return true;
  // DeepSeek LLM: the digit step may be a Digits pre-tokenizer or a \p{N}+ Split.
  want.push_back("\\p{N}+");
  return pre == "deepseek-llm" && got == want;
}

}  // namespace

StatusOr<TokenizerKvs> ConvertTokenizer(const std::string& tok_text, const std::string& cfg_text,
                                        int64_t vocab_size, const ModelConfig& c,
                                        const std::vector<std::string_view>& pres) {
  const Json tok = Json::parse(tok_text, nullptr, /*allow_exceptions=*/false);
  if (tok.is_discarded() || !tok.is_object()) return InvalidArgument("tokenizer.json: not a JSON object");
  const Json cfg = cfg_text.empty() ? Json::object() : Json::parse(cfg_text, nullptr, false);
  if (cfg.is_discarded() || !cfg.is_object())
    return InvalidArgument("tokenizer_config.json: not a JSON object");
  TokenizerKvs k;
  const Json& model = tok.contains("model") ? tok["model"] : Json();
  if (!model.is_object() || model.value("type", "") != "BPE" || !model.contains("vocab") ||
      !model["vocab"].is_object()) {
    return Unimplemented(
        "tokenizer.json: model must be a BPE model with a vocab (llama.cpp's gpt2 tokenizer)");
  }
  const std::vector<std::string> got =
      PreSignature(tok.contains("pre_tokenizer") ? tok["pre_tokenizer"] : Json());
  for (std::string_view pre : pres) {
    if (PreMatches(got, pre)) {
      k.pre = std::string(pre);
      break;
    }
  }
  if (k.pre.empty()) {
    std::string names;
    for (std::string_view pre : pres) names += (names.empty() ? "" : ", ") + std::string(pre);
    return Unimplemented(
        "tokenizer.json: pre_tokenizer matches none of the llama.cpp pre-tokenizers this architecture "
        "takes ({}), so tokenizer.ggml.pre is unknown",
        names);
  }
  std::vector<std::optional<std::pair<std::string, int32_t>>> by_id(static_cast<size_t>(vocab_size));
  auto place = [&](const std::string& content, int64_t id, int32_t type) -> Status {
    if (id < 0 || id >= vocab_size) {
      return InvalidArgument("tokenizer.json: token '{}' has id {}, outside the config's vocab_size {}",
                             content, id, vocab_size);
    }
    by_id[static_cast<size_t>(id)] = std::make_pair(content, type);
    return Status::Ok();
  };
  for (const auto& [content, id] : model["vocab"].items()) {
    if (!id.is_number_integer())
      return InvalidArgument("tokenizer.json: vocab '{}' is not an integer id", content);
    RETURN_IF_ERROR(place(content, id.get<int64_t>(), kNormal));
  }
  if (tok.contains("added_tokens") && tok["added_tokens"].is_array()) {
    for (const Json& a : tok["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a.contains("content") || !a["id"].is_number_integer() ||
          !a["content"].is_string()) {
        return InvalidArgument(
            "tokenizer.json: added_tokens entries need an integer id and a string content");
      }
      const std::string content = a["content"].get<std::string>();
      const bool special = a.value("special", false) || LooksSpecial(content);
      RETURN_IF_ERROR(place(content, a["id"].get<int64_t>(), special ? kControl : kUserDefined));
    }
  }
  for (size_t i = 0; i < by_id.size(); ++i) {
    if (by_id[i]) {
      k.tokens.push_back(by_id[i]->first);
      k.types.push_back(by_id[i]->second);
    } else {
      k.tokens.push_back(fmt::format("[PAD{}]", i));
      k.types.push_back(kUnused);
    }
  }
  const Json& merges = model.contains("merges") ? model["merges"] : Json::array();
  for (const Json& m : merges) {
    if (m.is_string()) {
      k.merges.push_back(m.get<std::string>());
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      k.merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    } else {
      return InvalidArgument("tokenizer.json: a merge is neither \"a b\" nor [\"a\", \"b\"]");
    }
  }
  auto id_of = [&](const std::string& content) -> int64_t {
    for (size_t i = 0; i < k.tokens.size(); ++i) {
      if (k.types[i] != kUnused && k.tokens[i] == content) return static_cast<int64_t>(i);
    }
    return -1;
  };
  // gguf-py SpecialVocab: tokenizer_config.json's tokens first, then config.json's ids.
  ASSIGN_OR_RETURN(auto bos, TokenContent(cfg, "bos_token"));
  ASSIGN_OR_RETURN(auto eos, TokenContent(cfg, "eos_token"));
  ASSIGN_OR_RETURN(auto pad, TokenContent(cfg, "pad_token"));
  k.bos = bos ? id_of(*bos) : c.bos_token_id;
  k.eos = eos ? id_of(*eos) : c.eos_token_id;
  k.pad = pad ? id_of(*pad) : -1;
  k.add_bos = cfg.value("add_bos_token", false);
  k.add_eos = cfg.value("add_eos_token", false);
  if (cfg.contains("chat_template") && cfg["chat_template"].is_string()) {
    k.chat_template = cfg["chat_template"].get<std::string>();
  }
  return k;
}

Status AddTokenizerKvs(GgufWriter* w, const TokenizerKvs& tk) {
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.model", GgufValue::String("gpt2")));
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.pre", GgufValue::String(tk.pre)));
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.tokens", GgufValue::StringArray(tk.tokens)));
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.token_type", GgufValue::I32Array(tk.types)));
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.merges", GgufValue::StringArray(tk.merges)));
  for (const auto& [key, id] : {std::pair<const char*, int64_t>{"tokenizer.ggml.bos_token_id", tk.bos},
                                {"tokenizer.ggml.eos_token_id", tk.eos},
                                {"tokenizer.ggml.padding_token_id", tk.pad}}) {
    if (id >= 0) RETURN_IF_ERROR(w->AddKv(key, GgufValue::U32(static_cast<uint32_t>(id))));
  }
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.add_bos_token", GgufValue::Bool(tk.add_bos)));
  RETURN_IF_ERROR(w->AddKv("tokenizer.ggml.add_eos_token", GgufValue::Bool(tk.add_eos)));
  if (!tk.chat_template.empty())
    RETURN_IF_ERROR(w->AddKv("tokenizer.chat_template", GgufValue::String(tk.chat_template)));
  return Status::Ok();
}

std::optional<std::string_view> PreTokenizerJson(std::string_view pre) {
  if (pre == "deepseek-llm") return kDeepseekLlmPreTokenizer;
  if (pre == "deepseek-v3") return kDeepseekV3PreTokenizer;
  if (pre == "qwen2") return kQwen2PreTokenizer;
  if (pre == "olmo" || pre == "gpt-2") return kGpt2PreTokenizer;
  if (pre == "dbrx") return kDbrxPreTokenizer;
  return std::nullopt;
}

StatusOr<HfTokenizerText> ReadGpt2Tokenizer(const GgufFile& f) {
  ASSIGN_OR_RETURN(std::string pre, f.GetStringOr("tokenizer.ggml.pre", "default"));
  const std::optional<std::string_view> pre_json = PreTokenizerJson(pre);
  if (!pre_json) {
    return Unimplemented(
        "{}: tokenizer.ggml.pre '{}' is not supported (deepseek-llm, deepseek-v3, qwen2, olmo, gpt-2, dbrx)",
        f.path(), pre);
  }
  ASSIGN_OR_RETURN(std::vector<std::string> tokens, f.GetStringArray("tokenizer.ggml.tokens"));
  std::vector<int64_t> types(tokens.size(), kNormal);
  if (f.FindKey("tokenizer.ggml.token_type") != nullptr) {
    ASSIGN_OR_RETURN(types, f.GetIntArray("tokenizer.ggml.token_type"));
    if (types.size() != tokens.size()) {
      return InvalidArgument("{}: tokenizer.ggml.token_type has {} entries, tokenizer.ggml.tokens {}",
                             f.path(), types.size(), tokens.size());
    }
  }
  ASSIGN_OR_RETURN(std::vector<std::string> merges, f.GetStringArray("tokenizer.ggml.merges"));
  OrderedObjectBuilder vocab;
  OJson added = OJson::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int64_t t = types[i];
    if (t == kUnused) continue;
    if (t == kControl || t == kUserDefined) {
      added.push_back(AddedTokenJson(i, tokens[i], t));
    } else {
      vocab.Put(tokens[i], i);
    }
  }
  const OJson j = ByteLevelBpeTokenizerJson(std::move(added), *pre_json, std::move(vocab).Take(), merges);
  return FinishTokenizerText(f, tokens, j, /*add_bos_default=*/false);
}

OJson ByteLevelBpeTokenizerJson(OJson added_tokens, std::string_view pre_tokenizer_json, OJson vocab,
                                OJson merges) {
  OJson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = std::move(added_tokens);
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = OJson::parse(pre_tokenizer_json);
  j["post_processor"] = nullptr;
  j["decoder"] =
      OJson{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  j["model"] = OJson{{"type", "BPE"},
                     {"dropout", nullptr},
                     {"unk_token", nullptr},
                     {"continuing_subword_prefix", nullptr},
                     {"end_of_word_suffix", nullptr},
                     {"fuse_unk", false},
                     {"byte_fallback", false},
                     {"vocab", std::move(vocab)},
                     {"merges", std::move(merges)}};
  return j;
}

OJson AddedTokenJson(size_t id, const std::string& content, int64_t type) {
  return OJson{{"id", id},
               {"content", content},
               {"single_word", false},
               {"lstrip", false},
               {"rstrip", false},
               {"normalized", type != kControl},
               {"special", type == kControl}};
}

StatusOr<HfTokenizerText> FinishTokenizerText(const GgufFile& f, const std::vector<std::string>& tokens,
                                              const OJson& tokenizer_json, bool add_bos_default) {
  OJson cfg;
  ASSIGN_OR_RETURN(bool add_bos, f.GetBoolOr("tokenizer.ggml.add_bos_token", add_bos_default));
  ASSIGN_OR_RETURN(bool add_eos, f.GetBoolOr("tokenizer.ggml.add_eos_token", false));
  cfg["add_bos_token"] = add_bos;
  cfg["add_eos_token"] = add_eos;
  for (const auto& [key, field] :
       {std::pair<const char*, const char*>{"tokenizer.ggml.bos_token_id", "bos_token"},
        {"tokenizer.ggml.eos_token_id", "eos_token"},
        {"tokenizer.ggml.unknown_token_id", "unk_token"},
        {"tokenizer.ggml.padding_token_id", "pad_token"}}) {
    ASSIGN_OR_RETURN(int64_t id, f.GetIntOr(key, -1));
    if (id < 0) continue;
    if (id >= static_cast<int64_t>(tokens.size())) {
      return InvalidArgument("{}: key '{}' = {} is not below the {} tokens", f.path(), key, id,
                             tokens.size());
    }
    cfg[field] = tokens[static_cast<size_t>(id)];
  }
  ASSIGN_OR_RETURN(std::string chat, f.GetStringOr("tokenizer.chat_template", ""));
  if (!chat.empty()) cfg["chat_template"] = chat;
  HfTokenizerText out;
  try {
    out.tokenizer_json = tokenizer_json.dump();
    out.tokenizer_config_json = cfg.dump(2);
  } catch (const nlohmann::json::exception& ex) {
    return InvalidArgument("{}: tokenizer strings are not valid UTF-8: {}", f.path(), ex.what());
  }
  return out;
}

}  // namespace moerun::gguf_internal
