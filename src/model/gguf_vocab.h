// Internal to model/gguf_*.cc: llama.cpp's gpt2 (byte-level BPE) vocabulary, tokenizer.ggml.*, <->
// Hugging Face tokenizer.json + tokenizer_config.json: gguf-py's token types, the pre-tokenizers
// llama.cpp knows by `pre` name (deepseek-llm, deepseek-v3, qwen2, olmo / gpt-2, dbrx) in tokenizer.json
// form, the writer's conversion and the reader's rebuild. (llama's SentencePiece vocabulary:
// model/gguf_spm.h.) Thread safety: constants and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "io/gguf.h"
#include "model/gguf_common.h"
#include "model/gguf_model.h"
#include "model/model_config.h"

namespace moerun::gguf_internal {

// gguf-py TokenType.
enum TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};

// Generated from tests/tokenizer/testdata/make_synthetic.py's DeepSeek LLM pre-tokenizer (HF form) and
// llama.cpp's LLAMA_VOCAB_PRE_TYPE_DEEPSEEK3_LLM regexes (HF form). ASCII JSON with \u escapes.
constexpr std::string_view kDeepseekLlmPreTokenizer =
    R"json({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"[\r\n]"},"behavior":"Isolate)json"
    R"json(d","invert":false},{"type":"Split","pattern":{"Regex":"\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u)json"
    R"json(00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386)json"
    R"json(\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u1)json"
    R"json(3a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f1)json"
    R"json(5\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1)json"
    R"json(fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6)json"
    R"json(-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u213)json"
    R"json(9\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua6)json"
    R"json(40-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17)json"
    R"json(\uff21-\uff3a\uff41-\uff5a\ud801\udc00-\ud801\udc4f\ud801\udcb0-\ud801\udcd3\ud801\udcd8-\ud801\udcf)json"
    R"json(b\ud803\udc80-\ud803\udcb2\ud803\udcc0-\ud803\udcf2\ud806\udca0-\ud806\udcdf\ud83a\udd00-\ud83a\udd4)json"
    R"json(3]+"},"behavior":"Isolated","invert":false},{"type":"Split","pattern":{"Regex":"\\s?[!-/:-~\uff01-\u)json"
    R"json(ff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+"},"behavior":"Isolated","invert":false},{"type":"Split)json"
    R"json(","pattern":{"Regex":"\\s+$"},"behavior":"Isolated","invert":false},{"type":"Split","pattern":{"Rege)json"
    R"json(x":"[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"},"behavior":"Isolated","invert":false},{"type":"Digi)json"
    R"json(ts","individual_digits":true},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_)json"
    R"json(regex":false}]})json";
constexpr std::string_view kDeepseekV3PreTokenizer =
    R"json({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"\\p{N}{1,3}"},"behavior":"Is)json"
    R"json(olated","invert":false},{"type":"Split","pattern":{"Regex":"[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff)json"
    R"json(]+"},"behavior":"Isolated","invert":false},{"type":"Split","pattern":{"Regex":"[!\"#$%&'()*+,\\-./:;)json"
    R"json(<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|)json"
    R"json(\\s*[\r\n]+|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix)json"
    R"json(_space":false,"trim_offsets":true,"use_regex":false}]})json";

// Qwen2's tokenizer.json pre-tokenizer (llama.cpp's LLAMA_VOCAB_PRE_TYPE_QWEN2 regex, with the
// case-insensitive contractions as Qwen2 spells them).
constexpr std::string_view kQwen2PreTokenizer =
    R"json({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"(?i:'s|'t|'re|'ve|'m|'ll|'d)|)json"
    R"json([^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},"b)json"
    R"json(ehavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":false,)json"
    R"json("use_regex":false}]})json";
// The cl100k-style Split regex (digits in runs of up to 3) as OLMo 2 / OLMoE-0125's dolma2 tokenizer and
// DBRX have it: llama.cpp's LLAMA_VOCAB_PRE_TYPE_DBRX regex (pre "dbrx").
constexpr std::string_view kDbrxPreTokenizer =
    R"json({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"(?i:'s|'t|'re|'ve|'m|'ll|'d)|)json"
    R"json([^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},)json"
    R"json("behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,)json"
    R"json("use_regex":false}]})json";
// GPT-2's byte-level pre-tokenizer with its own regex (llama.cpp's gpt-2 / olmo pre types).
constexpr std::string_view kGpt2PreTokenizer =
    R"json({"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true})json";

// tokenizer.ggml.* of a gpt2 (byte-level BPE) vocabulary.
struct TokenizerKvs {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<std::string> merges;
  std::string pre;
  int64_t bos = -1, eos = -1, pad = -1;
  bool add_bos = false, add_eos = false;
  std::string chat_template;
};
// From tokenizer.json + tokenizer_config.json (may be empty). `pres`: llama.cpp's pre names this
// architecture accepts, tried in order by comparing the pre-tokenizer with each one's
// (PreTokenizerJson); Unimplemented naming them when none matches.
StatusOr<TokenizerKvs> ConvertTokenizer(const std::string& tok_text, const std::string& cfg_text,
                                        int64_t vocab_size, const ModelConfig& c,
                                        const std::vector<std::string_view>& pres);
Status AddTokenizerKvs(GgufWriter* w, const TokenizerKvs& tk);

// The tokenizer.json pre_tokenizer a llama.cpp `pre` name stands for; nullopt if unknown.
std::optional<std::string_view> PreTokenizerJson(std::string_view pre);
// tokenizer.json + tokenizer_config.json from a gpt2 file's tokenizer.ggml.*.
StatusOr<HfTokenizerText> ReadGpt2Tokenizer(const GgufFile& f);
// A byte-level BPE tokenizer.json (ByteLevel decoder, no byte fallback) of `vocab` (token -> id),
// `merges` ("a b"), `added_tokens` and a pre_tokenizer JSON text. Also used by
// model/synthetic_tokenizer.cc.
OJson ByteLevelBpeTokenizerJson(OJson added_tokens, std::string_view pre_tokenizer_json, OJson vocab,
                                OJson merges);
// One tokenizer.json added_tokens entry of token type `type` (kControl: special).
OJson AddedTokenJson(size_t id, const std::string& content, int64_t type);
// Both texts: `tokenizer_json` dumped, and a tokenizer_config.json with add_bos_token /
// add_eos_token (absent keys: `add_bos_default` / false), the bos/eos/unk/pad token strings of the
// tokenizer.ggml.*_token_id keys present, and tokenizer.chat_template. InvalidArgument naming a
// token id key not below tokens.size(), or strings that are not UTF-8.
StatusOr<HfTokenizerText> FinishTokenizerText(const GgufFile& f, const std::vector<std::string>& tokens,
                                              const OJson& tokenizer_json, bool add_bos_default);
}  // namespace moerun::gguf_internal
