// moerun bench-moe: MoE block throughput on synthetic weights of real model shapes.
#include <algorithm>
#include <filesystem>
#include <set>
#include <vector>

#include "core/cpu_features.h"
#include "io/safetensors.h"
#include "moe/moe_block.h"
#include "moe/synthetic_block.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace moerun {
namespace {

struct BenchArgs {
  std::string preset = "v2-lite";
  std::vector<int64_t> tokens = {1, 16, 128, 1024};
  int threads = 0;
  std::string weight_dtype = "bf16";
  std::string precision = "auto";
  double min_time = 1.0;
  int min_iters = 3;
  std::string cache_dir;  // where the synthetic layer file is kept between runs
  bool json = false;
};

// Writes (once) and opens the synthetic layer file for `preset`.
StatusOr<std::unique_ptr<Checkpoint>> SyntheticLayer(const BenchArgs& a, const MoeConfig& config,
                                                     DType dtype) {
  const std::filesystem::path dir =
      a.cache_dir.empty() ? std::filesystem::temp_directory_path() : std::filesystem::path(a.cache_dir);
  const std::string path =
      (dir / fmt::format("moerun-bench-{}-{}.safetensors", a.preset, DTypeName(dtype))).string();
  if (std::filesystem::exists(path)) {
    auto ckpt = Checkpoint::Open(path);
    if (ckpt.ok()) return ckpt;
  }
  std::fprintf(stderr, "bench-moe: generating synthetic weights into %s ...\n", path.c_str());
  ASSIGN_OR_RETURN(std::vector<NamedTensor> tensors, MakeSyntheticMoeTensors(config, 1234, dtype));
  RETURN_IF_ERROR(WriteSafetensors(path, tensors));
  return Checkpoint::Open(path);
}

struct CallCost {
  double weight_bytes = 0;  // bytes of weights touched (distinct experts + shared + router)
  double flops = 0;
};

CallCost CostOf(const MoeConfig& c, const MoeOutput& out, double bytes_per_weight) {
  const double h = static_cast<double>(c.hidden_size), i = static_cast<double>(c.moe_intermediate_size);
  const double s = static_cast<double>(c.shared_intermediate_size),
               e = static_cast<double>(c.n_routed_experts);
  const double t = static_cast<double>(out.routing.tokens), k = static_cast<double>(c.num_experts_per_tok);
  const std::set<int32_t> touched(out.routing.ids.begin(), out.routing.ids.end());
  CallCost cost;
  cost.weight_bytes =
      (static_cast<double>(touched.size()) * 3 * h * i + 3 * h * s) * bytes_per_weight + e * h * 4;
  cost.flops = 2 * t * (k * 3 * h * i + 3 * h * s + e * h);
  return cost;
}

Status Run(const BenchArgs& a) {
  ASSIGN_OR_RETURN(std::string config_json, PresetConfigJson(a.preset, /*small=*/false));
  ASSIGN_OR_RETURN(MoeConfig config, MoeConfig::FromJson(config_json, "preset " + a.preset));
  ASSIGN_OR_RETURN(DType dtype, ParseWeightDType(a.weight_dtype));
  if (dtype == DType::kU8) dtype = DType::kBF16;
  ASSIGN_OR_RETURN(ActivationPrecision precision, ParsePrecision(a.precision));
  for (int64_t t : a.tokens) {
    if (t < 1) return InvalidArgument("--tokens {} must be >= 1", t);
  }
  ThreadPool pool(a.threads > 0 ? a.threads : DefaultThreadCount());
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, SyntheticLayer(a, config, dtype));
  ASSIGN_OR_RETURN(MoeWeights weights, MoeWeights::Load(config, *ckpt, "", dtype, &pool));
  MoeBlock block(config, std::move(weights), MoeOptions{.precision = precision});
  const double bytes_per_weight = static_cast<double>(DTypeSize(dtype));
  std::fprintf(stderr, "bench-moe: %s, %s weights, %d threads, cpu: %s\n", config.Summary().c_str(),
               std::string(DTypeName(dtype)).c_str(), pool.size(), GetCpuFeatures().ToString().c_str());
  if (!a.json) {
    std::printf("| tokens | median ms | min ms | tokens/s | weights GB/s | GFLOP/s | iters |\n");
    std::printf("|---:|---:|---:|---:|---:|---:|---:|\n");
  }
  for (int64_t t_count : a.tokens) {
    std::vector<Tensor> inputs;
    for (uint64_t s = 0; s < 8; ++s) {
      ASSIGN_OR_RETURN(Tensor x, MakeSyntheticInput(t_count, config.hidden_size, 100 + s, DType::kF32));
      inputs.push_back(std::move(x));
    }
    for (int w = 0; w < 2; ++w)
      RETURN_IF_ERROR(block.Forward(inputs[static_cast<size_t>(w)], &pool).status());
    std::vector<double> times;
    CallCost total;
    const auto start = std::chrono::steady_clock::now();
    while ((SecondsSince(start) < a.min_time || static_cast<int>(times.size()) < a.min_iters) &&
           times.size() < 1000) {
      const Tensor& x = inputs[times.size() % inputs.size()];
      const auto t0 = std::chrono::steady_clock::now();
      ASSIGN_OR_RETURN(MoeOutput out, block.Forward(x, &pool));
      times.push_back(SecondsSince(t0));
      const CallCost c = CostOf(config, out, bytes_per_weight);
      total.weight_bytes += c.weight_bytes;
      total.flops += c.flops;
    }
    std::vector<double> sorted = times;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted[sorted.size() / 2];
    double sum = 0;
    for (double v : times) sum += v;
    const double gbs = total.weight_bytes / sum / 1e9, gflops = total.flops / sum / 1e9;
    const double tps = static_cast<double>(t_count) / median;
    if (a.json) {
      std::printf(
          "{\"preset\": \"%s\", \"dtype\": \"%s\", \"threads\": %d, \"tokens\": %lld, \"median_ms\": %.4f, "
          "\"min_ms\": %.4f, \"tokens_per_s\": %.2f, \"weights_gb_per_s\": %.2f, \"gflop_per_s\": %.2f, "
          "\"iters\": %zu}\n",
          a.preset.c_str(), std::string(DTypeName(dtype)).c_str(), pool.size(),
          static_cast<long long>(t_count), median * 1e3, sorted[0] * 1e3, tps, gbs, gflops, times.size());
    } else {
      std::printf("| %lld | %.3f | %.3f | %.1f | %.1f | %.1f | %zu |\n", static_cast<long long>(t_count),
                  median * 1e3, sorted[0] * 1e3, tps, gbs, gflops, times.size());
    }
    std::fflush(stdout);
  }
  return Status::Ok();
}

}  // namespace

void RegisterBenchMoeCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd =
      app.add_subcommand("bench-moe", "Benchmark one MoE block on synthetic weights of real shapes");
  cmd->add_option("--preset", args->preset, "v2-lite|v2|v3|qwen2|qwen3 (full-size shapes)");
  cmd->add_option("--tokens,-n", args->tokens, "Token counts, e.g. 1,16,128,1024")->delimiter(',');
  cmd->add_option("-t,--threads", args->threads, "Threads (default: all CPUs)")->check(CLI::Range(0, 1024));
  cmd->add_option("--weight-dtype", args->weight_dtype, "bf16|f32");
  cmd->add_option("--precision", args->precision, "Activation rounding for bf16 weights: auto|f32|bf16");
  cmd->add_option("--min-time", args->min_time, "Seconds per token count (at least 3 iterations)");
  cmd->add_option("--cache-dir", args->cache_dir,
                  "Where to keep the synthetic layer file (default: $TMPDIR)");
  cmd->add_flag("--json", args->json, "One JSON object per line instead of a markdown table");
  cmd->callback([args, exit_code] {
    const Status s = Run(*args);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });
}

}  // namespace moerun
