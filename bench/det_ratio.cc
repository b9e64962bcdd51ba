// Deterministic-mode overhead on DeepSeek-V2-Lite shapes (bf16 weights): fast mode (the MoE layer
// on one rank without --deterministic, twice: "block" and "parallel-fast" are two instances of the
// one layer since there is no separate one-rank block, so their ratio shows the host noise) against
// `--deterministic` on one rank, calls interleaved so that host noise hits every mode alike. Prints per token
// count the median time of each mode and the ratio deterministic / fast (median of per-round ratios).
//
//   build/bin/det_ratio [--tokens 1,16,128] [--rounds 40] [-t THREADS]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "comm/in_process_comm.h"
#include "moe/parallel_moe.h"
#include "moe/synthetic_block.h"

namespace moerun {
namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Main(int argc, char** argv) {
  std::vector<int64_t> tokens = {1, 16, 128};
  int rounds = 40;
  int threads = DefaultThreadCount();
  std::string only;
  WeightFormat format = WeightFormat::kBF16;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--tokens") {
      tokens.clear();
      std::stringstream ss(v);
      std::string item;
      while (std::getline(ss, item, ',')) tokens.push_back(std::stoll(item));
    } else if (a == "--rounds") {
      rounds = std::stoi(v);
    } else if (a == "--only") {  // profiling: run one mode only (block|fast|det)
      only = v;
    } else if (a == "--weight-format") {  // packed at load from the bf16 layer file, e.g. q4_0
      const std::optional<WeightFormat> f = ParseWeightFormat(v);
      if (!f) {
        std::fprintf(stderr, "--weight-format %s: expected %s\n", v.c_str(), WeightFormatChoices().c_str());
        return 2;
      }
      format = *f;
    } else if (a == "-t") {
      threads = std::stoi(v);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  const MoeConfig c = MoeConfig::FromJson(PresetConfigJson("v2-lite", false).value(), "v2-lite").value();
  const std::string path =
      (std::filesystem::temp_directory_path() / "moerun-bench-v2-lite-BF16.safetensors").string();
  auto ckpt = Checkpoint::Open(path);
  if (!ckpt.ok()) {
    std::fprintf(stderr, "writing %s\n", path.c_str());
    (void)WriteSafetensors(path, MakeSyntheticMoeTensors(c, 1234, DType::kBF16).value());
    ckpt = Checkpoint::Open(path);
  }
  ThreadPool pool(threads);
  auto block = ParallelMoe::CreateLocal(c, **ckpt, "", format, &pool).value();
  auto worlds = InProcessWorld::Create(1);
  auto worlds2 = InProcessWorld::Create(1);
  ParallelOptions fast_opt, det_opt;
  det_opt.deterministic = true;
  auto fast = ParallelMoe::Create(c, **ckpt, "", fast_opt, *worlds[0], format, &pool).value();
  auto det = ParallelMoe::Create(c, **ckpt, "", det_opt, *worlds2[0], format, &pool).value();
  std::printf("%s, threads %d, %d rounds; times in ms (median); ratio = median over rounds of det / fast\n",
              WeightFormatName(format), pool.size(), rounds);
  std::printf("| tokens | block ms | parallel-fast ms | det ms | det/block | det/parallel-fast |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|\n");
  for (int64_t t : tokens) {
    std::vector<Tensor> inputs;
    for (uint64_t s = 0; s < 8; ++s)
      inputs.push_back(MakeSyntheticInput(t, c.hidden_size, 100 + s, DType::kF32).value());
    std::vector<double> tb, tf, td, rb, rf;
    double faults[3] = {0, 0, 0};
    auto minflt = [] {
      rusage u;
      getrusage(RUSAGE_SELF, &u);
      return static_cast<double>(u.ru_minflt);
    };
    int current = 0;
    auto time = [&](auto&& fn) {
      const double f0 = minflt();
      const auto t0 = std::chrono::steady_clock::now();
      fn();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      faults[current] += minflt() - f0;
      return s;
    };
    const int reps = t == 1 ? 8 : (t <= 16 ? 3 : 1);  // several calls per sample for tiny calls
    for (int r = -2; r < rounds; ++r) {
      const Tensor& x = inputs[static_cast<size_t>((r + 2) % 8)];
      double b = 0, f = 0, d = 0;
      // Alternate the order within a round too.
      for (int o = 0; o < 3; ++o) {
        const int which = (o + r + 3) % 3;
        if (!only.empty() && only != (which == 0 ? "block" : which == 1 ? "fast" : "det")) continue;
        current = which;
        if (which == 0)
          b = time([&] {
            for (int i = 0; i < reps; ++i) (void)block->Forward(x, 0, nullptr).value();
          });
        if (which == 1)
          f = time([&] {
            for (int i = 0; i < reps; ++i) (void)fast->Forward(x, 0, nullptr).value();
          });
        if (which == 2)
          d = time([&] {
            for (int i = 0; i < reps; ++i) (void)det->Forward(x, 0, nullptr).value();
          });
      }
      if (r < 0) continue;
      tb.push_back(b / reps);
      tf.push_back(f / reps);
      td.push_back(d / reps);
      rb.push_back(d / b);
      rf.push_back(d / f);
    }
    std::printf("| %lld | %.3f | %.3f | %.3f | %.3f | %.3f |\n", static_cast<long long>(t), Median(tb) * 1e3,
                Median(tf) * 1e3, Median(td) * 1e3, Median(rb), Median(rf));
    const double calls = static_cast<double>(rounds + 2) * reps;
    std::fprintf(stderr, "  page faults per call: block %.0f, parallel-fast %.0f, det %.0f\n",
                 faults[0] / calls, faults[1] / calls, faults[2] / calls);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace moerun

int main(int argc, char** argv) { return moerun::Main(argc, argv); }
