// moerun bench-moe: MoE block throughput on synthetic weights of real model shapes.
#include <algorithm>
#include <filesystem>
#include <set>
#include <vector>

#include "comm/mpi_comm.h"
#include "core/cpu_features.h"
#include "io/safetensors.h"
#include "moe/parallel_moe.h"
#include "moe/synthetic_block.h"
#include "tools/bandwidth_probe.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/file_identity.h"
#include "tools/kernel_flags.h"
#include "tools/parallel_flags.h"

namespace moerun {
namespace {

struct BenchArgs {
  std::string preset = "v2-lite";
  std::vector<int64_t> tokens = {1, 16, 128, 1024};
  int threads = 0;
  KernelFlags kernels;
  double min_time = 1.0;
  int min_iters = 3;
  std::string cache_dir;  // where the synthetic layer file is kept between runs
  bool json = false;
  ParallelFlags parallel;
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

// Eight different random inputs per token count, so consecutive calls hit different experts.
StatusOr<std::vector<Tensor>> BenchInputs(const MoeConfig& config, int64_t t_count) {
  std::vector<Tensor> inputs;
  for (uint64_t s = 0; s < 8; ++s) {
    ASSIGN_OR_RETURN(Tensor x, MakeSyntheticInput(t_count, config.hidden_size, 100 + s, DType::kF32));
    inputs.push_back(std::move(x));
  }
  return inputs;
}

struct CallCost {
  double weight_bytes = 0;  // bytes of weights touched (distinct experts + shared + router)
  double flops = 0;
};

// `routing`: the routed ids of the call (on several ranks, rank 0's tokens: an estimate of the
// distinct experts touched); `t`: the call's tokens (all ranks).
CallCost CostOf(const MoeConfig& c, const Routing& routing, int64_t tokens, double bytes_per_weight) {
  const double h = static_cast<double>(c.hidden_size), i = static_cast<double>(c.moe_intermediate_size);
  const double s = static_cast<double>(c.shared_intermediate_size),
               e = static_cast<double>(c.n_routed_experts);
  const double t = static_cast<double>(tokens), k = static_cast<double>(c.num_experts_per_tok);
  const std::set<int32_t> touched(routing.ids.begin(), routing.ids.end());
  CallCost cost;
  cost.weight_bytes =
      (static_cast<double>(touched.size()) * 3 * h * i + 3 * h * s) * bytes_per_weight + e * h * 4;
  cost.flops = 2 * t * (k * 3 * h * i + 3 * h * s + e * h);
  return cost;
}

// The timed calls of one token count. The host preempts a vCPU for tens of ms now and then (a 3.4 ms
// call once in ~50 takes 30-40 ms), so the headline rates are at the median call time, as the read
// probe is the best of its passes; the rates at the mean time (preemptions included) are kept
// beside them.
struct Timing {
  double median = 0, min = 0, mean = 0;  // seconds per call
  double gbs = 0, gflops = 0;            // mean weight bytes (flops) per call / the median time
  double gbs_mean = 0, gflops_mean = 0;  // ... / the mean time
  size_t iters = 0;
};

// times[i]: call i's seconds; costs[i]: its weight bytes and flops. REQUIRES: both the same
// non-zero size.
Timing Summarise(std::vector<double> times, const std::vector<CallCost>& costs) {
  Timing t;
  const double n = static_cast<double>(times.size());
  double seconds = 0, bytes = 0, flops = 0;
  for (size_t i = 0; i < times.size(); ++i) {
    seconds += times[i];
    bytes += costs[i].weight_bytes;
    flops += costs[i].flops;
  }
  std::sort(times.begin(), times.end());
  t.iters = times.size();
  t.median = times[times.size() / 2];
  t.min = times[0];
  t.mean = seconds / n;
  t.gbs = bytes / n / t.median / 1e9;
  t.gflops = flops / n / t.median / 1e9;
  t.gbs_mean = bytes / seconds / 1e9;
  t.gflops_mean = flops / seconds / 1e9;
  return t;
}

void PrintRow(const BenchArgs& a, WeightFormat format, const std::string& layout, int ranks, int threads,
              int64_t t_count, const Timing& t, const ReadProbes& read, uint64_t comm_bytes) {
  const double tps = static_cast<double>(t_count) / t.median;
  const double read_gbs = read.Mean();
  if (a.json) {
    std::printf(
        "{\"preset\": \"%s\", \"format\": \"%s\", \"layout\": \"%s\", \"ranks\": %d, \"threads\": %d, "
        "\"tokens\": %lld, \"median_ms\": %.4f, \"mean_ms\": %.4f, \"min_ms\": %.4f, \"tokens_per_s\": %.2f, "
        "\"weights_gb_per_s\": %.4f, \"weights_gb_per_s_mean\": %.4f, \"read_gb_per_s\": %.4f, "
        "\"read_before_gb_per_s\": %.4f, \"read_after_gb_per_s\": %.4f, \"bound_fraction\": %.5f, "
        "\"bound_fraction_mean\": %.5f, \"gflop_per_s\": %.2f, \"gflop_per_s_mean\": %.2f, "
        "\"collective_bytes\": %llu, \"iters\": %zu}\n",
        a.preset.c_str(), WeightFormatName(format), layout.c_str(), ranks, threads,
        static_cast<long long>(t_count), t.median * 1e3, t.mean * 1e3, t.min * 1e3, tps, t.gbs, t.gbs_mean,
        read_gbs, read.before, read.after, t.gbs / read_gbs, t.gbs_mean / read_gbs, t.gflops, t.gflops_mean,
        static_cast<unsigned long long>(comm_bytes), t.iters);
  } else {
    std::printf(
        "| %lld | %.3f | %.3f | %.3f | %.1f | %.1f | %.1f / %.1f | %.0f%% | %.0f%% | %.1f | %llu | %zu |\n",
        static_cast<long long>(t_count), t.median * 1e3, t.mean * 1e3, t.min * 1e3, tps, t.gbs, read.before,
        read.after, 100 * t.gbs / read_gbs, 100 * t.gbs_mean / read_gbs, t.gflops,
        static_cast<unsigned long long>(comm_bytes), t.iters);
  }
  std::fflush(stdout);
}

// The synthetic layer file's dtype: f32 for f32 weights, bf16 otherwise (quantised at load).
DType StorageFor(WeightFormat f) { return f == WeightFormat::kF32 ? DType::kF32 : DType::kBF16; }

// The benchmark on tp x dp ranks (one rank by default; in-process threads, or MPI processes under
// mpirun): one code path for every layout.
Status RunBench(const BenchArgs& a, const MoeConfig& config, WeightFormat format,
                const KernelPolicy& policy) {
  const DType dtype = StorageFor(format);
  ASSIGN_OR_RETURN(ParallelOptions options, a.parallel.ToOptions());
  if (!StartedByMpirun()) RETURN_IF_ERROR(options.Validate(MoeLayoutDims(config), options.world()));
  const int threads = a.threads > 0 ? a.threads : DefaultThreadsPerProcess();
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, SyntheticLayer(a, config, dtype));
  // The machine bound of each token count: the read bandwidth by this process's threads, probed
  // just before and just after its timed calls (the host's bandwidth moves within seconds).
  BandwidthProbe probe(threads);
  std::fprintf(stderr, "bench-moe: cpu: %s\n", GetCpuFeatures().ToString().c_str());
  RankFingerprint agree;
  agree.Add("command", "bench-moe");
  agree.Add("--preset", a.preset);
  std::string tokens;
  for (int64_t t : a.tokens) tokens += fmt::format("{}{}", tokens.empty() ? "" : ",", t);
  agree.Add("--tokens", tokens);
  a.kernels.AddFields(&agree);
  RETURN_IF_ERROR(AddFileIdentity(&agree, "synthetic layer file", ckpt->path(), FileDigest::kHeader));
  return RunOnRanks(a.parallel, threads, agree, [&](Communicator& world, int rank_threads) -> Status {
    ThreadPool pool(rank_threads);
    ASSIGN_OR_RETURN(auto moe, ParallelMoe::Create(config, *ckpt, "", options, world, format, &pool, policy));
    const bool lead = world.rank() == 0;
    if (lead) {
      std::fprintf(stderr, "bench-moe: %s, %s weights, %d rank(s) x %d threads (%s), kernel %s at 1 row\n",
                   config.Summary().c_str(), WeightFormatName(format), world.size(), pool.size(),
                   options.ToString().c_str(), SelectKernel(format, 1, policy).name);
      if (!a.json) {
        std::printf(
            "| tokens | median ms | mean ms | min ms | tokens/s | weights GB/s | read GB/s before / after | "
            "%% of read bound | at the mean time | GFLOP/s | collective bytes/layer | iters |\n");
        std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
      }
    }
    for (int64_t t_count : a.tokens) {
      ASSIGN_OR_RETURN(std::vector<Tensor> inputs, BenchInputs(config, t_count));
      const auto range = moe->TokenRange(t_count);
      const int64_t begin = range.first, end = range.second;
      auto call = [&](size_t i, Routing* routing) -> StatusOr<double> {
        RETURN_IF_ERROR(world.Barrier());
        const auto t0 = std::chrono::steady_clock::now();
        RETURN_IF_ERROR(moe->Forward(inputs[i % inputs.size()].Rows(begin, end), 0, routing).status());
        RETURN_IF_ERROR(world.Barrier());
        return SecondsSince(t0);
      };
      for (size_t w = 0; w < 2; ++w) RETURN_IF_ERROR(call(w, nullptr).status());
      ASSIGN_OR_RETURN(const double read_before, probe.Now(world));
      (void)world.log()->Take();  // the warm-up's and the probe's collectives
      Routing routing;
      ASSIGN_OR_RETURN(double first, call(0, &routing));
      uint64_t comm_bytes = 0;
      for (const auto& r : world.log()->Take()) comm_bytes += r.bytes;
      // Rank 0 picks the iteration count so that every rank runs the same number of calls.
      uint64_t iters = static_cast<uint64_t>(
          std::clamp(a.min_time / std::max(first, 1e-6), static_cast<double>(a.min_iters), 1000.0));
      RETURN_IF_ERROR(world.Broadcast(&iters, sizeof iters, 0));
      // Weight bytes and flops of the whole layer (all ranks) per call.
      const double bytes_per_weight = Traits(format).bits_per_weight / 8;
      std::vector<double> times = {first};
      std::vector<CallCost> costs = {CostOf(config, routing, t_count, bytes_per_weight)};
      for (uint64_t i = 1; i < iters; ++i) {
        ASSIGN_OR_RETURN(double t, call(i, &routing));
        times.push_back(t);
        costs.push_back(CostOf(config, routing, t_count, bytes_per_weight));
      }
      ASSIGN_OR_RETURN(const double read_after, probe.Now(world));
      if (lead) {
        PrintRow(a, format, options.ToString(), world.size(), pool.size(), t_count, Summarise(times, costs),
                 {read_before, read_after}, comm_bytes);
      }
    }
    return Status::Ok();
  });
}

Status Run(const BenchArgs& a) {
  ASSIGN_OR_RETURN(std::string config_json, PresetConfigJson(a.preset, /*small=*/false));
  ASSIGN_OR_RETURN(MoeConfig config, MoeConfig::FromJson(config_json, "preset " + a.preset));
  ASSIGN_OR_RETURN(std::optional<WeightFormat> requested, a.kernels.Format());
  const WeightFormat format = requested.value_or(WeightFormat::kBF16);
  ASSIGN_OR_RETURN(KernelPolicy policy, a.kernels.Policy());
  for (int64_t t : a.tokens) {
    if (t < 1) return InvalidArgument("--tokens {} must be >= 1", t);
  }
  return RunBench(a, config, format, policy);
}

}  // namespace

void RegisterBenchMoeCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd =
      app.add_subcommand("bench-moe", "Benchmark one MoE block on synthetic weights of real shapes");
  cmd->add_option("--preset", args->preset, "v2-lite|v2|v3|qwen2|qwen3 (full-size shapes)");
  cmd->add_option("--tokens,-n", args->tokens, "Token counts, e.g. 1,16,128,1024")->delimiter(',');
  cmd->add_option("-t,--threads", args->threads, "Threads (default: all CPUs)")->check(CLI::Range(0, 1024));
  args->kernels.Add(cmd, "bf16");
  cmd->add_option("--min-time", args->min_time, "Seconds per token count (at least 3 iterations)");
  cmd->add_option("--cache-dir", args->cache_dir,
                  "Where to keep the synthetic layer file (default: $TMPDIR)");
  cmd->add_flag("--json", args->json, "One JSON object per line instead of a markdown table");
  args->parallel.Add(cmd);
  cmd->callback([args, exit_code] {
    const Status s = Run(*args);
    *exit_code = s.ok() ? 0 : ReportError(s);
  });
}

}  // namespace moerun
