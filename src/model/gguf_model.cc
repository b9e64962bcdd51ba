// The architecture dispatch of model/gguf_model.h: general.architecture (reading) or config.json's
// model_type (writing) picks the deepseek2 or the GQA mapping; tokenizer.ggml.model picks gpt2 or
// llama (SPM).
#include "model/gguf_model.h"

#include <nlohmann/json.hpp>

#include "model/gguf_common.h"
#include "model/gguf_deepseek2.h"
#include "model/gguf_gqa.h"
#include "model/gguf_spm.h"
#include "model/gguf_vocab.h"

namespace moerun {

StatusOr<std::string> GgufConfigJson(const GgufFile& file) {
  ASSIGN_OR_RETURN(std::string arch, file.GetString("general.architecture"));
  if (arch == "deepseek2") return Deepseek2ConfigJsonFromGguf(file);
  if (IsGqaGgufArch(arch)) return GqaConfigJsonFromGguf(file);
  return Unimplemented(
      "{}: general.architecture '{}' is not supported (deepseek2, qwen2moe, qwen3moe, olmoe, llama)",
      file.path(), arch);
}

StatusOr<HfTokenizerText> GgufTokenizerText(const GgufFile& file) {
  ASSIGN_OR_RETURN(std::string model, file.GetString("tokenizer.ggml.model"));
  if (model == "gpt2") return gguf_internal::ReadGpt2Tokenizer(file);
  if (model == "llama") return SpmTokenizerFromGguf(file);
  return Unimplemented(
      "{}: tokenizer.ggml.model '{}' is not supported (gpt2 byte-level BPE, llama SentencePiece)",
      file.path(), model);
}

StatusOr<GgufModel> OpenGgufModel(const std::string& path) {
  GgufModel m;
  ASSIGN_OR_RETURN(m.file, GgufFile::Open(path));
  ASSIGN_OR_RETURN(m.config_json, GgufConfigJson(*m.file));
  ASSIGN_OR_RETURN(m.config, ModelConfig::FromJson(m.config_json, path + " (metadata as config.json)"));
  ASSIGN_OR_RETURN(std::string arch, m.file->GetString("general.architecture"));
  if (arch == "deepseek2") {
    ASSIGN_OR_RETURN(m.tensors, MakeDeepseek2TensorSource(m.file, m.config));
  } else {
    ASSIGN_OR_RETURN(m.tensors, MakeGqaTensorSource(m.file, m.config));
  }
  if (m.file->FindKey("tokenizer.ggml.tokens") != nullptr) {
    ASSIGN_OR_RETURN(m.tokenizer, GgufTokenizerText(*m.file));
  }
  return m;
}

Status WriteGgufModel(const TensorSource& hf, const std::string& config_json,
                      const std::string& tokenizer_json, const std::string& tokenizer_config_json,
                      const GgufWriteOptions& options, const std::string& out_path) {
  const nlohmann::json j = nlohmann::json::parse(config_json, nullptr, false);
  const std::string model_type = j.is_object() && j.contains("model_type") && j["model_type"].is_string()
                                     ? j["model_type"].get<std::string>()
                                     : "";
  if (!GqaGgufArch(model_type).empty()) {
    return WriteGqaGguf(hf, config_json, tokenizer_json, tokenizer_config_json, options, out_path);
  }
  return WriteDeepseek2Gguf(hf, config_json, tokenizer_json, tokenizer_config_json, options, out_path);
}

}  // namespace moerun
