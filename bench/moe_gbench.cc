// Google Benchmark: one DeepSeek-V2-Lite-shaped MoE block (H=2048, I=1408, 64 routed experts,
// top-6, 2 shared; random bf16 weights) at 1, 16, 128 and 1024 tokens, plus the matmul paths.
// The synthetic layer file is written once to $TMPDIR and reused.
#include <benchmark/benchmark.h>

#include <filesystem>

#include "moe/moe_block.h"
#include "moe/synthetic_block.h"

namespace moerun {
namespace {

const MoeBlock& V2LiteBlock() {
  static const MoeBlock* block = [] {
    const MoeConfig c = MoeConfig::FromJson(PresetConfigJson("v2-lite", false).value(), "v2-lite").value();
    const std::string path =
        (std::filesystem::temp_directory_path() / "moerun-bench-v2-lite-BF16.safetensors").string();
    auto ckpt = Checkpoint::Open(path);
    if (!ckpt.ok()) {
      (void)WriteSafetensors(path, MakeSyntheticMoeTensors(c, 1234, DType::kBF16).value());
      ckpt = Checkpoint::Open(path);
    }
    ThreadPool pool(DefaultThreadCount());
    return new MoeBlock(c, MoeWeights::Load(c, **ckpt, "", DType::kBF16, &pool).value());
  }();
  return *block;
}

void BM_MoeBlockV2Lite(benchmark::State& state) {
  const MoeBlock& block = V2LiteBlock();
  ThreadPool pool(DefaultThreadCount());
  const int64_t tokens = state.range(0);
  std::vector<Tensor> inputs;
  for (uint64_t s = 0; s < 4; ++s) inputs.push_back(MakeSyntheticInput(tokens, 2048, s, DType::kF32).value());
  size_t i = 0;
  for (auto _ : state) {
    auto out = block.Forward(inputs[i++ % inputs.size()], &pool);
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

// One expert's gate/up matmul (2 x [1408, 2048] bf16) on each path.
void BM_GateUpMatmul(benchmark::State& state) {
  const int64_t rows = state.range(0);
  const MatmulPath path = static_cast<MatmulPath>(state.range(1));
  const MoeBlock& block = V2LiteBlock();
  const PackedWeight& w = block.weights().gate_up[0];
  std::vector<float> x(static_cast<size_t>(rows * 2048), 0.5f), y(static_cast<size_t>(rows * 1408));
  std::vector<uint16_t> xb(static_cast<size_t>(rows * 2048), F32ToBf16(0.5f)), yb(y.size());
  MatmulJob job{.rows = rows,
                .x_f32 = x.data(),
                .x_bf16 = xb.data(),
                .ldx = 2048,
                .w = &w,
                .y_f32 = y.data(),
                .ldy = 1408,
                .epilogue = Epilogue::kSwiGlu,
                .path = path};
  for (auto _ : state) RunMatmul(job, nullptr);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * 2 * 1408 * 2048 * static_cast<double>(rows),
                         benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_GateUpMatmul)
    ->ArgsProduct({{1, 8, 64, 256},
                   {static_cast<int64_t>(MatmulPath::kAvx512F32),
                    static_cast<int64_t>(MatmulPath::kAvx512Bf16Dot)}})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace moerun

BENCHMARK_MAIN();
