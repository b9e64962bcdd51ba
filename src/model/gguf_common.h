// Internal to model/gguf_*.cc: what the llama.cpp architecture mappings (deepseek2: model/gguf_deepseek2.h;
// qwen2moe, qwen3moe, olmoe, llama: model/gguf_gqa.h) share — gguf-py's enums, the GGUF <-> HF names
// every architecture has, the known pre-tokenizers, the writer's type rules and row encoder, the
// tokenizer.json <-> tokenizer.ggml.* conversions, and the HF-named tensor view of a GGUF file.
// Not part of the public API (model/gguf_model.h). Thread safety: constants, pure functions and
// an immutable TensorSource.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "io/gguf.h"
#include "io/tensor_source.h"
#include "model/gguf_model.h"
#include "model/model_config.h"

namespace moerun::gguf_internal {

using Json = nlohmann::json;
using OJson = nlohmann::ordered_json;

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
// GPT-2's byte-level pre-tokenizer with its own regex (llama.cpp's gpt-2 / olmo pre types).
constexpr std::string_view kGpt2PreTokenizer =
    R"json({"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true})json";

inline bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

inline bool IsFloat(DType t) { return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16; }

// A GGUF tensor name (after "blk.N." for a layer's) <-> its HF name (after "model.layers.N.").
struct LayerName {
  std::string_view gguf;
  std::string_view hf;
};
constexpr LayerName kGlobalNames[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

// "blk.12.attn_q.weight" -> (12, "attn_q.weight").
std::optional<std::pair<int64_t, std::string_view>> SplitBlockName(std::string_view name);

// The value written to "<arch>.<suffix>".
inline std::string ArchKey(std::string_view arch, std::string_view suffix) {
  return fmt::format("{}.{}", arch, suffix);
}

// ---------------------------------------------------------------------------------------------
// Writing

// llama.cpp's llama_ftype for general.file_type.
uint32_t FileType(DType target);
// InvalidArgument naming out_path unless target is one of the writable types.
Status CheckTargetType(DType target, const std::string& out_path);
// The general.* keys every writer starts with.
Status AddGeneralKvs(GgufWriter* w, std::string_view arch, const GgufWriteOptions& options);

// Encodes one f32 row as `type` and appends it.
Status AppendRow(GgufWriter* w, DType type, const float* row, int64_t n, std::vector<uint8_t>* buf);
// Appends rows [begin, end) of `t` (F32/BF16/F16 or a block type, any rank, rows along the last
// dim; end < 0: all rows) converted to `type` (as stored when t already has it).
Status AppendTensor(GgufWriter* w, const Tensor& t, DType type, const std::string& name,
                    std::vector<float>* f32, std::vector<uint8_t>* buf, int64_t begin = 0, int64_t end = -1);

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

// One tensor of the output: its GGUF name, type, shape and how to produce its rows from the HF
// checkpoint.
struct PlannedTensor {
  std::string name;
  DType type = DType::kF32;
  Shape shape;
  // kCopy: the HF tensor `hf`; kExperts: hf is a pattern "...experts.{}.<proj>.weight" for the E
  // experts, stacked; kFusedGate / kFusedUp: the gate / up half of the transformers-v5
  // experts.gate_up_proj [E, 2I, H] (gate rows first); kRowOrder: the HF tensor with its rows
  // reordered (output row r = HF row rows[r]); kCustom: `custom` appends the rows.
  enum class Kind { kCopy, kExperts, kFusedGate, kFusedUp, kRowOrder, kCustom } kind = Kind::kCopy;
  std::string hf;
  std::vector<int64_t> rows;
  std::function<Status(GgufWriter*, std::vector<float>* row, std::vector<uint8_t>* buf)> custom;
};

// The tensors of one output file in llama.cpp's order, planned from an HF checkpoint: every HF
// tensor the plan reads is marked used, so leftovers can be refused.
class TensorPlan {
 public:
  TensorPlan(const TensorSource& hf, DType target) : hf_(hf), target_(target) {}

  // The HF tensor's meta, marked used; NotFound naming it.
  StatusOr<const TensorMeta*> Need(const std::string& hf_name);
  // gguf <- hf as stored (type by GgufTensorType).
  Status Copy(const std::string& gguf, const std::string& hf_name);
  // gguf <- hf with its rows reordered: output row r = HF row rows[r] (rows.size() = HF rows).
  Status CopyRowOrder(const std::string& gguf, const std::string& hf_name, std::vector<int64_t> rows);
  // blk.N.ffn_{gate,up,down}_exps.weight [E, rows, cols] from "<hf_prefix>experts.{e}.<name>.weight"
  // (names: the HF gate / up / down matrix names) or the fused "<hf_prefix>experts.gate_up_proj" /
  // "experts.down_proj".
  Status Experts(const std::string& gguf_prefix, const std::string& hf_prefix, const std::string& gate,
                 const std::string& up, const std::string& down, int64_t n_experts);
  void Add(PlannedTensor t) { plan_.push_back(std::move(t)); }
  DType TypeFor(const std::string& gguf, const Shape& shape) const {
    return GgufTensorType(gguf, shape, target_);
  }
  // InvalidArgument naming the first HF tensor the plan does not use.
  Status CheckAllUsed(std::string_view arch) const;
  // Declares every tensor, then streams their bytes.
  Status Write(GgufWriter* w) const;

 private:
  const TensorSource& hf_;
  DType target_;
  std::vector<PlannedTensor> plan_;
  std::set<std::string> used_;
};

// ---------------------------------------------------------------------------------------------
// Reading

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
// The fields every architecture has, from "<arch>.*" into `j`: vocab_size (GgufVocabSize),
// hidden_size (embedding_length), num_hidden_layers (block_count), rms_norm_eps
// (attention.layer_norm_rms_epsilon), rope_theta (rope.freq_base, default 10000) and
// max_position_embeddings (context_length, default 4096).
Status AddCommonHparams(const GgufFile& f, std::string_view arch, OJson* j);
// bos_token_id / eos_token_id (tokenizer.ggml.*_token_id, when present), tie_word_embeddings (no
// output.weight) and hidden_act silu into `j`.
Status AddTrailingFields(const GgufFile& f, OJson* j);
// The vocabulary size: "<arch>.vocab_size", else token_embd's rows, else the token count.
StatusOr<int64_t> GgufVocabSize(const GgufFile& f, std::string_view arch);

Status CheckShape(const GgufFile& f, const std::string& name, const Shape& got, const Shape& want);

// The HF-named view of a GGUF file: each entry serves one GGUF tensor as stored, one expert of a
// merged 3-D expert tensor (a row view), the stored rows in another order (same dtype, a copy), or
// whatever a function computes.
class GgufHfSource : public TensorSource {
 public:
  enum class Kind { kDirect, kExpert, kRowOrder, kComputed };
  struct Entry {
    TensorMeta meta;
    Kind kind = Kind::kDirect;
    std::string gguf;                           // the source tensor (kDirect, kExpert, kRowOrder)
    int64_t expert = 0;                         // kExpert
    std::vector<int64_t> rows;                  // kRowOrder: output row r = stored row rows[r]
    std::function<StatusOr<Tensor>()> compute;  // kComputed
  };
  using Map = std::map<std::string, Entry, std::less<>>;

  // `internal`: entries Get/Find serve but Names() does not list.
  GgufHfSource(std::shared_ptr<GgufFile> file, Map map, Map internal = {})
      : file_(std::move(file)), map_(std::move(map)), internal_(std::move(internal)) {}

  StatusOr<Tensor> Get(std::string_view name) const override;
  const TensorMeta* Find(std::string_view name) const override;
  std::vector<std::string> Names() const override;
  const std::string& path() const override { return file_->path(); }
  void ReleaseResidentPages() const override { file_->ReleaseResidentPages(); }

  // Adds a kDirect entry `hf` for GGUF tensor `gguf`.
  static void AddDirect(const GgufFile& f, const std::string& gguf, const std::string& hf, Map* map);
  // Adds one kExpert entry per expert of the merged GGUF tensor `gguf` [E, rows, cols] under
  // fmt::format(hf_pattern, e); InvalidArgument naming the tensor if it is not [n_experts, r, c].
  static Status AddExperts(const GgufFile& f, const std::string& gguf, const std::string& hf_pattern,
                           int64_t n_experts, Map* map);

 private:
  std::shared_ptr<GgufFile> file_;
  Map map_;
  Map internal_;
};

// Maps every tensor of `f` into `map`: the global names (kGlobalNames) directly, each layer tensor
// "blk.N.<part>" (N < n_layers) through `layer_tensor(gguf_name, N, part, "model.layers.N.")`,
// which adds its entries and returns whether it knew `part`. A tensor of a type moerun cannot read
// is Unimplemented naming it; one nothing maps is InvalidArgument naming it and `arch`.
using LayerTensorMapper = std::function<StatusOr<bool>(const std::string& gguf, int64_t layer,
                                                       std::string_view part, const std::string& hf_prefix)>;
Status MapGgufTensors(const GgufFile& f, int64_t n_layers, std::string_view arch, GgufHfSource::Map* map,
                      const LayerTensorMapper& layer_tensor);

}  // namespace moerun::gguf_internal
