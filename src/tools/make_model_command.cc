// moerun make-model: a random-weight DeepSeek-V2-Lite-shaped model of any layer count, for
// benchmarks on models nobody has to download. `-o FILE.gguf` writes a llama.cpp deepseek2 GGUF
// straight in the chosen type (random blocks, streamed tensor by tensor, no bf16 copy in memory)
// with a synthetic byte-level tokenizer of the real vocabulary size; `-o DIR` writes config.json
// + model.safetensors (bf16).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "kernels/weight_format.h"
#include "model/gguf_deepseek2.h"
#include "model/synthetic_model.h"
#include "model/synthetic_tokenizer.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace moerun {
namespace {

struct MakeModelArgs {
  std::string preset = "deepseek-v2-lite";
  std::string out;            // FILE.gguf or a directory
  std::string type = "bf16";  // a WeightFormat name: f32, q4_k, q5_k, ...
  int64_t layers = 27;        // layer 0 dense, the rest MoE
  uint64_t seed = 1;
  int threads = 0;
};

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Status WriteGguf(const MakeModelArgs& a, ThreadPool* pool) {
  const std::optional<WeightFormat> format = ParseWeightFormat(a.type);
  if (!format) return InvalidArgument("--type '{}' is not one of {}", a.type, WeightFormatChoices());
  const std::string config_json = SyntheticV2LiteConfigJson(a.layers);
  ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromJson(config_json, "synthetic V2-Lite"));
  ASSIGN_OR_RETURN(auto source, SyntheticTensorSource::Create(config, Traits(*format).storage, a.seed, pool));
  ASSIGN_OR_RETURN(std::string tokenizer,
                   SyntheticTokenizerJson(config.vocab_size, config.bos_token_id, config.eos_token_id));
  const nlohmann::json tokenizer_config = {{"add_bos_token", true},
                                           {"bos_token",
                                            "<\xef\xbd\x9c"
                                            "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"},
                                           {"eos_token",
                                            "<\xef\xbd\x9c"
                                            "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"}};
  Deepseek2GgufOptions opt;
  opt.target = Traits(*format).storage;
  opt.name = "DeepSeek-V2-Lite-random-" + a.type;
  std::fprintf(stderr, "moerun: writing %s (%lld layers, %s, random weights, seed %llu)\n", a.out.c_str(),
               static_cast<long long>(a.layers), a.type.c_str(), static_cast<unsigned long long>(a.seed));
  return WriteDeepseek2Gguf(*source, config_json, tokenizer, tokenizer_config.dump(), opt, a.out);
}

Status Run(const MakeModelArgs& a) {
  if (a.preset != "deepseek-v2-lite") {
    return InvalidArgument("--preset '{}': only deepseek-v2-lite is available", a.preset);
  }
  if (a.layers < 1 || a.layers > 1000) return InvalidArgument("--layers {} is not in [1, 1000]", a.layers);
  ThreadPool pool(a.threads > 0 ? a.threads : DefaultThreadCount());
  const auto t0 = std::chrono::steady_clock::now();
  if (EndsWith(a.out, ".gguf")) {
    RETURN_IF_ERROR(WriteGguf(a, &pool));
  } else {
    if (a.type != "bf16") {
      return InvalidArgument("--type {} needs a .gguf output (the safetensors directory is bf16)", a.type);
    }
    RETURN_IF_ERROR(WriteSyntheticV2Lite(a.out, a.layers, a.seed, &pool));
  }
  std::fprintf(stderr, "moerun: wrote %s in %.1f s\n", a.out.c_str(), SecondsSince(t0));
  return Status::Ok();
}

}  // namespace

void RegisterMakeModelCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<MakeModelArgs>();
  CLI::App* cmd = app.add_subcommand(
      "make-model",
      "Write a random-weight DeepSeek-V2-Lite-shaped model (GGUF in any type, or bf16 safetensors)");
  cmd->add_option("--preset", args->preset, "deepseek-v2-lite")->capture_default_str();
  cmd->add_option("-o,--out", args->out, "Output: FILE.gguf, or a directory for safetensors")->required();
  cmd->add_option("--type", args->type, "Weight type: " + WeightFormatChoices())->capture_default_str();
  cmd->add_option("--layers", args->layers, "Layers (layer 0 dense, the rest MoE)")->capture_default_str();
  cmd->add_option("--seed", args->seed, "Random seed")->capture_default_str();
  cmd->add_option("-t,--threads", args->threads, "Threads (default: all CPUs)")->check(CLI::Range(0, 1024));
  cmd->callback([args, exit_code] {
    const Status s = Run(*args);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });
}

}  // namespace moerun
