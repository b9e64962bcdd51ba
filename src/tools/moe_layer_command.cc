// moerun moe-layer: run one MoE block from files and write its output.
#include <filesystem>
#include <string>

#include "core/cpu_features.h"
#include "io/safetensors.h"
#include "moe/moe_block.h"
#include "moe/moe_reference.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace moerun {
namespace {

struct MoeLayerArgs {
  std::string config;   // config.json (default: <weights dir>/config.json)
  std::string weights;  // layer .safetensors, or a checkpoint directory
  std::string prefix;   // e.g. "model.layers.1.mlp." inside a checkpoint
  std::string input;    // safetensors with hidden_states [T, H]
  std::string output;   // safetensors to write
  int threads = 0;      // 0 = all CPUs
  std::string weight_dtype = "auto";
  std::string precision = "auto";
  bool generic = false;
  bool check = false;
  int repeat = 1;
};

StatusOr<Tensor> LoadInput(const std::string& path, int64_t hidden) {
  ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
  const SafetensorsEntry* e = file->Find("hidden_states");
  if (e == nullptr) return NotFound("{}: no tensor 'hidden_states' (expected [n_tokens, {}])", path, hidden);
  if (e->shape.size() != 2 || e->shape[1] != hidden) {
    return InvalidArgument("{}: tensor 'hidden_states' has shape {}, expected [n_tokens, {}]", path,
                           ShapeToString(e->shape), hidden);
  }
  if (e->dtype != DType::kF32 && e->dtype != DType::kBF16 && e->dtype != DType::kF16) {
    return InvalidArgument("{}: tensor 'hidden_states' has dtype {}, expected F32, BF16 or F16", path,
                           DTypeName(e->dtype));
  }
  ASSIGN_OR_RETURN(Tensor x, file->Get("hidden_states"));
  return x.ToF32();
}

Status Run(const MoeLayerArgs& a) {
  std::string config_path = a.config;
  if (config_path.empty()) {
    if (!std::filesystem::is_directory(a.weights)) {
      return InvalidArgument("--config is required when --weights is a file ({})", a.weights);
    }
    config_path = (std::filesystem::path(a.weights) / "config.json").string();
  }
  ASSIGN_OR_RETURN(MoeConfig config, LoadMoeConfig(config_path));
  ASSIGN_OR_RETURN(DType wdtype, ParseWeightDType(a.weight_dtype));
  ASSIGN_OR_RETURN(ActivationPrecision precision, ParsePrecision(a.precision));
  if (a.repeat < 1) return InvalidArgument("--repeat {} must be >= 1", a.repeat);
  ASSIGN_OR_RETURN(Tensor x, LoadInput(a.input, config.hidden_size));
  ThreadPool pool(a.threads > 0 ? a.threads : DefaultThreadCount());

  auto t0 = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(a.weights));
  ASSIGN_OR_RETURN(MoeWeights weights, MoeWeights::Load(config, *ckpt, a.prefix, wdtype, &pool));
  std::fprintf(stderr, "moerun: %s\nmoerun: loaded %s%s in %.2f s (%s weights, %d threads, cpu: %s)\n",
               config.Summary().c_str(), a.weights.c_str(),
               a.prefix.empty() ? "" : (" @ " + a.prefix).c_str(), SecondsSince(t0),
               std::string(DTypeName(weights.weight_dtype)).c_str(), pool.size(),
               GetCpuFeatures().ToString().c_str());

  MoeBlock block(config, std::move(weights), MoeOptions{.precision = precision, .force_generic = a.generic});
  StatusOr<MoeOutput> out = Status(StatusCode::kInternal, "not run");
  double best = 1e30;
  for (int r = 0; r < a.repeat; ++r) {
    t0 = std::chrono::steady_clock::now();
    out = block.Forward(x, &pool);
    if (!out.ok()) return out.status();
    best = std::min(best, SecondsSince(t0));
  }
  const int64_t tokens = x.dim(0), k = config.num_experts_per_tok;
  ASSIGN_OR_RETURN(Tensor y, out->Sum());
  std::printf("moe-layer: %lld tokens in %.3f ms (%.1f tokens/s, best of %d)\n",
              static_cast<long long>(tokens), best * 1e3, best > 0 ? static_cast<double>(tokens) / best : 0.0,
              a.repeat);

  if (a.check) {
    ASSIGN_OR_RETURN(ReferenceMoeOutput ref, ReferenceMoe(config, *ckpt, a.prefix, x));
    // f32 weights: f32 rounding only; bf16 weights may round activations to bf16 (relative ~4e-3).
    const bool bf16 = block.weights().weight_dtype == DType::kBF16;
    const double rtol = bf16 ? 2e-2 : 1e-4;
    const MoeComparison cmp = CompareWithReference(ref, y.data<float>(), out->routing.ids.data(), tokens,
                                                   config.hidden_size, k, 1e-5, rtol);
    std::printf(
        "check: %s against the double-precision reference: max |diff| %.3g, max scaled error %.3f "
        "(rtol %.0e), routing mismatches %lld, near-ties skipped %lld\n",
        cmp.ok ? "PASS" : "FAIL", cmp.max_abs_diff, cmp.max_scaled_err, rtol,
        static_cast<long long>(cmp.routing_mismatches), static_cast<long long>(cmp.near_ties));
    if (!cmp.ok) return Internal("output differs from the reference beyond tolerance");
  }

  ASSIGN_OR_RETURN(Tensor ids, Tensor::Zeros(DType::kI32, {tokens, k}));
  ASSIGN_OR_RETURN(Tensor wts, Tensor::Zeros(DType::kF32, {tokens, k}));
  std::copy(out->routing.ids.begin(), out->routing.ids.end(), ids.data<int32_t>());
  std::copy(out->routing.weights.begin(), out->routing.weights.end(), wts.data<float>());
  RETURN_IF_ERROR(
      WriteSafetensors(a.output, {{"hidden_states", y}, {"topk_ids", ids}, {"topk_weights", wts}}));
  std::fprintf(stderr, "moerun: wrote %s\n", a.output.c_str());
  return Status::Ok();
}

}  // namespace

void RegisterMoeLayerCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<MoeLayerArgs>();
  CLI::App* cmd = app.add_subcommand("moe-layer", "Run one MoE block on hidden states from a file");
  cmd->add_option("--config", args->config, "HF config.json (default: <weights dir>/config.json)");
  cmd->add_option("--weights,-m", args->weights, "Block .safetensors file or checkpoint directory")
      ->required();
  cmd->add_option("--prefix", args->prefix, "Name prefix of the block, e.g. model.layers.1.mlp.");
  cmd->add_option("--input,-i", args->input, "safetensors file with hidden_states [n_tokens, H]")->required();
  cmd->add_option("--output,-o", args->output, "Output safetensors (hidden_states, topk_ids, topk_weights)")
      ->required();
  cmd->add_option("-t,--threads", args->threads, "Threads (default: all CPUs)")->check(CLI::Range(0, 1024));
  cmd->add_option("--weight-dtype", args->weight_dtype, "Packed expert weights: auto|bf16|f32");
  cmd->add_option("--precision", args->precision, "Activation rounding for bf16 weights: auto|f32|bf16");
  cmd->add_flag("--generic", args->generic, "Use the portable kernels, not AVX-512");
  cmd->add_flag("--check", args->check, "Compare with the double-precision reference; fail if it differs");
  cmd->add_option("--repeat", args->repeat, "Run the forward N times, report the best time");
  cmd->callback([args, exit_code] {
    const Status s = Run(*args);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });
}

}  // namespace moerun
