// moerun make-example: write a synthetic MoE block (config.json, layer.safetensors, x.safetensors).
#include <filesystem>

#include "io/atomic_file.h"
#include "moe/synthetic_block.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace moerun {
namespace {

struct MakeExampleArgs {
  std::string out_dir;
  std::string preset = "v2-lite";
  bool small = false;
  int64_t tokens = 64;
  std::string dtype = "bf16";
  uint64_t seed = 1;
  bool fused = false;
};

Status Run(const MakeExampleArgs& a) {
  DType dtype;
  if (a.dtype == "bf16") {
    dtype = DType::kBF16;
  } else if (a.dtype == "f32") {
    dtype = DType::kF32;
  } else if (a.dtype == "f16") {
    dtype = DType::kF16;
  } else {
    return InvalidArgument("--dtype '{}' is not one of bf16, f32, f16", a.dtype);
  }
  if (a.tokens < 0) return InvalidArgument("--tokens {} must be >= 0", a.tokens);
  ASSIGN_OR_RETURN(std::string config_json, PresetConfigJson(a.preset, a.small));
  ASSIGN_OR_RETURN(MoeConfig config, MoeConfig::FromJson(config_json, "preset " + a.preset));
  std::error_code ec;
  std::filesystem::create_directories(a.out_dir, ec);
  if (ec) return IOError("cannot create directory {}: {}", a.out_dir, ec.message());
  const std::filesystem::path dir(a.out_dir);
  RETURN_IF_ERROR(WriteFileAtomically((dir / "config.json").string(), config_json + "\n"));
  std::fprintf(stderr, "moerun: generating %s weights for %s\n", std::string(DTypeName(dtype)).c_str(),
               config.Summary().c_str());
  ASSIGN_OR_RETURN(std::vector<NamedTensor> tensors, MakeSyntheticMoeTensors(config, a.seed, dtype, a.fused));
  RETURN_IF_ERROR(WriteSafetensors((dir / "layer.safetensors").string(), tensors, {{"format", "pt"}}));
  ASSIGN_OR_RETURN(Tensor x, MakeSyntheticInput(a.tokens, config.hidden_size, a.seed + 1, DType::kF32));
  RETURN_IF_ERROR(WriteSafetensors((dir / "x.safetensors").string(), {{"hidden_states", x}}));
  std::fprintf(stderr, "moerun: wrote %s/{config.json,layer.safetensors,x.safetensors}\n", a.out_dir.c_str());
  return Status::Ok();
}

}  // namespace

void RegisterMakeExampleCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<MakeExampleArgs>();
  CLI::App* cmd = app.add_subcommand("make-example", "Write a synthetic MoE block and input for moe-layer");
  cmd->add_option("--out,-o", args->out_dir, "Output directory")->required();
  cmd->add_option("--preset", args->preset, "v2-lite|v2|v3|qwen2|qwen3");
  cmd->add_flag("--small", args->small, "Shrink H/I/E (for tests)");
  cmd->add_option("--tokens,-n", args->tokens, "Rows of hidden_states in x.safetensors");
  cmd->add_option("--dtype", args->dtype, "Weight dtype: bf16|f32|f16");
  cmd->add_option("--seed", args->seed, "Random seed");
  cmd->add_flag("--fused", args->fused, "Write transformers-v5 fused expert tensors");
  cmd->callback([args, exit_code] {
    const Status s = Run(*args);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });
}

}  // namespace moerun
