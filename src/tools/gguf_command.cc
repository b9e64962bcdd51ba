// moerun convert-gguf: write a Hugging Face DeepSeek-V2/V3 checkpoint directory as a llama.cpp
// `deepseek2` GGUF file (model/gguf_deepseek2.h; docs/gguf.md). The result loads in llama.cpp and
// in moerun (`-m FILE.gguf` on every model command).
#include <cstdio>
#include <filesystem>

#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "model/gguf_deepseek2.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace moerun {
namespace {

struct ConvertGgufArgs {
  std::string model_dir;
  std::string out;
  std::string type = "f16";
  std::string name;
  std::string tokenizer_dir;  // default: model_dir
};

StatusOr<DType> ParseGgufType(const std::string& s) {
  if (s == "f32") return DType::kF32;
  if (s == "f16") return DType::kF16;
  if (s == "bf16") return DType::kBF16;
  if (s == "q8_0") return DType::kQ8_0;
  if (s == "q4_0") return DType::kQ4_0;
  if (s == "q4_k") return DType::kQ4_K;
  if (s == "q6_k") return DType::kQ6_K;
  return InvalidArgument("--type '{}' is not one of f32, f16, bf16, q8_0, q4_0, q4_k, q6_k", s);
}

Status Run(const ConvertGgufArgs& a) {
  Deepseek2GgufOptions opt;
  ASSIGN_OR_RETURN(opt.target, ParseGgufType(a.type));
  opt.name = a.name.empty() ? std::filesystem::path(a.model_dir).filename().string() : a.name;
  ASSIGN_OR_RETURN(std::string config, ReadFileToString(a.model_dir + "/config.json"));
  const std::string tok_dir = a.tokenizer_dir.empty() ? a.model_dir : a.tokenizer_dir;
  ASSIGN_OR_RETURN(std::string tokenizer, ReadFileToString(tok_dir + "/tokenizer.json"));
  std::string tokenizer_config;
  if (std::filesystem::exists(tok_dir + "/tokenizer_config.json")) {
    ASSIGN_OR_RETURN(tokenizer_config, ReadFileToString(tok_dir + "/tokenizer_config.json"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(a.model_dir));
  RETURN_IF_ERROR(WriteDeepseek2Gguf(*ckpt, config, tokenizer, tokenizer_config, opt, a.out));
  std::fprintf(stderr, "moerun: wrote %s (%s)\n", a.out.c_str(), a.type.c_str());
  return Status::Ok();
}

}  // namespace

void RegisterConvertGgufCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<ConvertGgufArgs>();
  CLI::App* cmd =
      app.add_subcommand("convert-gguf", "Write an HF DeepSeek-V2/V3 checkpoint as a llama.cpp GGUF");
  cmd->add_option("-m,--model", args->model_dir,
                  "HF checkpoint directory (config.json, safetensors, tokenizer.json)")
      ->required();
  cmd->add_option("-o,--out", args->out, "Output .gguf file")->required();
  cmd->add_option("--type", args->type,
                  "Weight type: f32|f16|bf16|q8_0|q4_0|q4_k|q6_k (norms/router stay f32)");
  cmd->add_option("--name", args->name, "general.name (default: the directory name)");
  cmd->add_option("--tokenizer", args->tokenizer_dir,
                  "Directory with tokenizer.json (+ tokenizer_config.json) if not the model's");
  cmd->callback([args, exit_code] {
    const Status s = Run(*args);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });
}

}  // namespace moerun
