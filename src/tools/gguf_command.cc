// moerun quantize (alias convert-gguf): write a Hugging Face checkpoint directory as a llama.cpp GGUF file:
// DeepSeek-V2/V3 as `deepseek2`, Qwen2-MoE as `qwen2moe`, Qwen3-MoE as `qwen3moe`, OLMoE as `olmoe`,
// Mixtral as `llama` with experts (model/gguf_model.h; docs/gguf.md). The result loads in llama.cpp and
// in moerun (`-m FILE.gguf` on every model command).
#include <cstdio>
#include <filesystem>

#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "kernels/weight_format.h"
#include "model/arch.h"
#include "model/gguf_deepseek2.h"
#include "model/gguf_model.h"
#include "model/model_loading.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/model_cli.h"

namespace moerun {
namespace {

struct ConvertGgufArgs {
  std::string model_dir;
  std::string out;
  std::string type = "f16";
  std::string name;
  std::string tokenizer_dir;   // default: model_dir
  bool check_tensors = false;  // scan every tensor for NaN/Inf before converting
};

StatusOr<DType> ParseGgufType(const std::string& s) {
  const std::optional<WeightFormat> f = ParseWeightFormat(s);
  if (!f) return InvalidArgument("--type '{}' is not one of {}", s, WeightFormatChoices());
  return Traits(*f).storage;
}

Status Run(const ConvertGgufArgs& a) {
  GgufWriteOptions opt;
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
  if (a.check_tensors) RETURN_IF_ERROR(CheckFinite(*ckpt));
  RETURN_IF_ERROR(WriteGgufModel(*ckpt, config, tokenizer, tokenizer_config, opt, a.out));
  std::fprintf(stderr, "moerun: wrote %s (%s)\n", a.out.c_str(), a.type.c_str());
  return Status::Ok();
}

// A short rendering of a metadata value: scalars in full (strings up to 80 bytes), arrays by
// element type and count with their first elements.
std::string ShortValue(const GgufValue& v) {
  auto clip = [](const std::string& s) { return s.size() > 80 ? s.substr(0, 77) + "..." : s; };
  switch (v.type) {
    case GgufType::kString:
      return fmt::format("\"{}\"", clip(v.s));
    case GgufType::kF32:
    case GgufType::kF64:
      return fmt::format("{}", v.f);
    case GgufType::kBool:
      return v.u ? "true" : "false";
    case GgufType::kU64:
      return std::to_string(v.u);
    case GgufType::kArray: {
      std::string head;
      for (size_t i = 0; i < std::min<size_t>(v.ArraySize(), 4); ++i) {
        if (i) head += ", ";
        if (!v.strings.empty()) head += fmt::format("\"{}\"", clip(v.strings[i]));
        if (!v.floats.empty()) head += fmt::format("{}", v.floats[i]);
        if (!v.ints.empty()) head += std::to_string(v.ints[i]);
      }
      return fmt::format("[{}{}] ({} x {})", head, v.ArraySize() > 4 ? ", ..." : "", v.ArraySize(),
                         GgufTypeName(v.elem));
    }
    default:
      return std::to_string(v.i);
  }
}

}  // namespace

Status InspectGguf(const ModelArgs& a) {
  ASSIGN_OR_RETURN(std::shared_ptr<GgufFile> f, GgufFile::Open(a.model_dir));
  std::printf("GGUF v%u, alignment %u, %zu keys, %zu tensors\n", f->version(), f->alignment(),
              f->metadata().size(), f->tensors().size());
  std::printf("| key | type | value |\n|---|---|---|\n");
  for (const auto& [key, value] : f->metadata()) {
    std::printf("| %s | %s | %s |\n", key.c_str(), std::string(GgufTypeName(value.type)).c_str(),
                ShortValue(value).c_str());
  }
  ASSIGN_OR_RETURN(const std::optional<WeightFormat> requested, a.kernels.Format());
  std::printf(
      "| tensor | ggml type | ne | offset | held as (--weight-format %s) | bytes held |\n"
      "|---|---|---|---|---|---:|\n",
      a.kernels.weight_format.c_str());
  ASSIGN_OR_RETURN(const std::string gguf_arch, f->GetStringOr("general.architecture", "?"));
  uint64_t bytes = 0;
  double resident = 0;
  for (const GgufTensorInfo& t : f->tensors()) {
    const std::optional<GgmlTypeTraits> traits = GgmlTypeInfo(t.type);
    const std::optional<DType> dtype = DTypeFromGgml(t.type);
    const Shape shape = t.shape();
    ResidentForm held =
        dtype ? ResidentFormOf(t.name, *dtype, shape, requested) : ResidentForm{"unreadable", 0};
    if (gguf_arch == "deepseek2" && Deepseek2TensorUnused(*f, t.name))
      held = {"unused (attn_kv_b is loaded)", 0};
    std::printf("| %s | %s | %s | %llu | %s | %.0f |\n", t.name.c_str(),
                std::string(traits ? traits->name : "?").c_str(), ShapeToString(t.ne).c_str(),
                static_cast<unsigned long long>(t.offset), held.format.c_str(), held.bytes);
    bytes += t.nbytes;
    resident += held.bytes;
  }
  std::printf("tensor bytes: %llu\n", static_cast<unsigned long long>(bytes));
  ASSIGN_OR_RETURN(std::string config, GgufConfigJson(*f));
  ASSIGN_OR_RETURN(ModelConfig c, ModelConfig::FromJson(config, a.model_dir + " (metadata)"));
  std::printf("family: %s; general.architecture %s -> model_type %s\n", FindArch(c.model_type)->family,
              gguf_arch.c_str(), c.model_type.c_str());
  std::printf("config: %s\n", c.Summary().c_str());
  PrintMemorySummary(c, resident);
  ThreadPool pool(a.threads > 0 ? a.threads : DefaultThreadCount());
  Status s = LoadModel(a, &pool).status();
  std::printf("validation: %s\n", s.ok() ? "OK" : s.ToString().c_str());
  return s;
}

void RegisterConvertGgufCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<ConvertGgufArgs>();
  CLI::App* cmd = app.add_subcommand("quantize",
                                     "Write an HF MoE checkpoint (DeepSeek-V2/V3, Qwen2/3-MoE, OLMoE, "
                                     "Mixtral) as a llama.cpp GGUF in a chosen type "
                                     "(alias convert-gguf)");
  cmd->alias("convert-gguf");
  cmd->add_option("-m,--model", args->model_dir,
                  "HF checkpoint directory (config.json, safetensors, tokenizer.json)")
      ->required();
  cmd->add_option("-o,--out", args->out, "Output .gguf file")->required();
  cmd->add_option("--type", args->type, "Weight type: " + WeightFormatChoices() + " (norms/router stay f32)");
  cmd->add_flag("--check-tensors", args->check_tensors, "Scan every tensor for NaN/Inf before converting");
  cmd->add_option("--name", args->name, "general.name (default: the directory name)");
  cmd->add_option("--tokenizer", args->tokenizer_dir,
                  "Directory with tokenizer.json (+ tokenizer_config.json) if not the model's");
  cmd->callback([args, exit_code] {
    const Status s = Run(*args);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });
}

}  // namespace moerun
