// Google Benchmark: one DeepSeek-V2-Lite-shaped MoE block (H=2048, I=1408, 64 routed experts,
// top-6, 2 shared; random bf16 weights) at 1, 16, 128 and 1024 tokens, plus the matmul paths.
// The synthetic layer file is written once to $TMPDIR and reused.
#include <benchmark/benchmark.h>

#include <filesystem>

#include "kernels/kernel_table.h"
#include "moe/parallel_moe.h"
#include "moe/synthetic_block.h"

namespace moerun {
namespace {

// The MoE layer on one rank (ParallelMoe, tp = dp = 1) on a pool of all CPUs.
ParallelMoe& V2LiteBlock() {
  static ThreadPool* pool = new ThreadPool(DefaultThreadCount());
  static ParallelMoe* block = [] {
    const MoeConfig c = MoeConfig::FromJson(PresetConfigJson("v2-lite", false).value(), "v2-lite").value();
    const std::string path =
        (std::filesystem::temp_directory_path() / "moerun-bench-v2-lite-BF16.safetensors").string();
    auto ckpt = Checkpoint::Open(path);
    if (!ckpt.ok()) {
      (void)WriteSafetensors(path, MakeSyntheticMoeTensors(c, 1234, DType::kBF16).value());
      ckpt = Checkpoint::Open(path);
    }
    return ParallelMoe::CreateLocal(c, **ckpt, "", WeightFormat::kBF16, pool).value().release();
  }();
  return *block;
}

void BM_MoeBlockV2Lite(benchmark::State& state) {
  ParallelMoe& block = V2LiteBlock();
  const int64_t tokens = state.range(0);
  std::vector<Tensor> inputs;
  for (uint64_t s = 0; s < 4; ++s) inputs.push_back(MakeSyntheticInput(tokens, 2048, s, DType::kF32).value());
  size_t i = 0;
  for (auto _ : state) {
    auto out = block.Forward(inputs[i++ % inputs.size()], 0, nullptr);
    benchmark::DoNotOptimize(out);
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_MoeBlockV2Lite)
    ->Arg(1)
    ->Arg(16)
    ->Arg(128)
    ->Arg(1024)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The bf16 rows of the kernel table this CPU supports.
std::vector<const MatmulKernel*> Bf16Rows() {
  std::vector<const MatmulKernel*> rows;
  for (const MatmulKernel& k : AllKernels())
    if (k.weights == WeightFormat::kBF16 && k.supported(GetCpuFeatures())) rows.push_back(&k);
  return rows;
}

// One expert's gate/up matmul (2 x [1408, 2048] bf16) on each bf16 kernel row.
void BM_GateUpMatmul(benchmark::State& state) {
  const int64_t rows = state.range(0);
  const std::vector<const MatmulKernel*> kernels = Bf16Rows();
  if (state.range(1) >= static_cast<int64_t>(kernels.size())) {
    state.SkipWithError("no such kernel row on this CPU");
    return;
  }
  const MatmulKernel& kernel = *kernels[static_cast<size_t>(state.range(1))];
  state.SetLabel(kernel.name);
  const ParallelMoe& block = V2LiteBlock();
  const PackedWeight& w = block.weights().gate_up[0];
  std::vector<float> x(static_cast<size_t>(rows * 2048), 0.5f), y(static_cast<size_t>(rows * 1408));
  ActivationBuffer acts;
  MatmulJob job{.rows = rows,
                .x = acts.Prepare(kernel.acts, x.data(), rows, 2048, 2048),
                .w = &w,
                .kernel = &kernel,
                .y = y.data(),
                .ldy = 1408,
                .epilogue = Epilogue::kSwiGlu};
  for (auto _ : state) RunMatmul(job, nullptr);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * 2 * 1408 * 2048 * static_cast<double>(rows),
                         benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_GateUpMatmul)->ArgsProduct({{1, 8, 64, 256}, {0, 1, 2, 3}})->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace moerun

BENCHMARK_MAIN();
