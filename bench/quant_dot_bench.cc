// Standalone benchmark of the quantised dot tiles (kernels/quant_dot.h): for each format x ISA and
// 1 / 4 / 32 activation rows, a 16-row x K=2048 tile. "cold" streams a weight set far larger than
// the caches (a different 16-row tile each call); "hot" reuses one tile. Reports GB/s of weight
// bytes (mean over the run, and of the fastest batch of 16 calls) and GOP/s of the fastest hot batch
// (2 * rows * 16 * K integer multiply-adds per call).
//   build-perf/bin/quant_dot_bench [seconds_per_case [format_filter [isa_filter]]]
// e.g. `quant_dot_bench 0.2 Q4_K avx2`; rows 1 / 4 / 32 / 192 (the last two: prefill chunks).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "core/block_quant.h"
#include "kernels/block_interleave.h"
#include "kernels/quant_dot.h"

using namespace moerun;

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 0.3;
  const std::string fmt_filter = argc > 2 ? argv[2] : "", isa_filter = argc > 3 ? argv[3] : "";
  constexpr int64_t kK = 2048, kRows = 16, kMaxM = 192;
  constexpr int64_t kColdTiles = 1024;  // 1024 x 16 rows x 2048: 18-36 MB of weights... scaled below
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(kMaxM * kK));
  for (float& v : x) v = nd(rng);
  std::vector<int8_t> q(static_cast<size_t>(kMaxM * kK));
  std::vector<float> d(static_cast<size_t>(kMaxM * kK / 32));
  std::vector<int32_t> s(d.size());
  for (int m = 0; m < kMaxM; ++m) {
    QuantizeActivationRow(x.data() + m * kK, kK, q.data() + m * kK, d.data() + m * kK / 32,
                          s.data() + m * kK / 32);
  }
  const Q8Activations a{q.data(), d.data(), s.data(), kK, kK / 32};
  std::vector<float> out(kMaxM * 16);
  // "best": the fastest batch of 16 calls (robust to a shared machine taking the core away).
  std::printf("%-5s %-15s %5s %10s %10s %10s %10s %10s\n", "fmt", "isa", "rows", "GB/s cold", "best cold",
              "GB/s hot", "best hot", "GOP/s best");
  for (DType t :
       {DType::kQ8_0, DType::kQ4_0, DType::kQ5_0, DType::kQ5_1, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
    if (!fmt_filter.empty() && fmt_filter != DTypeName(t)) continue;
    const size_t row_bytes = DTypeRowBytes(t, kK), tile_bytes = row_bytes * kRows;
    // Cold set: 256 MB worth of tiles (>> L3); quantise one tile and copy it around.
    const size_t n_tiles = std::max<size_t>(kColdTiles, (256u << 20) / tile_bytes);
    std::vector<uint8_t> w(tile_bytes * n_tiles);
    {
      std::vector<float> wf(static_cast<size_t>(kRows * kK));
      for (float& v : wf) v = nd(rng) * 0.05f;
      for (int64_t j = 0; j < kRows; ++j) QuantizeRow(t, wf.data() + j * kK, kK, w.data() + j * row_bytes);
      if (IsInterleavedBlockType(t)) {  // the packed layout the tiles read (kernels/block_interleave.h)
        std::vector<uint8_t> rows(w.begin(), w.begin() + tile_bytes);
        InterleaveRows(t, rows.data(), row_bytes, kK / DTypeBlockSize(t), w.data());
      }
      for (size_t i = 1; i < n_tiles; ++i)
        std::copy(w.begin(), w.begin() + tile_bytes, w.begin() + i * tile_bytes);
    }
    for (QuantDotIsa isa : kAllQuantDotIsas) {
      if (!QuantDotIsaSupported(isa)) continue;
      if (!isa_filter.empty() && isa_filter != QuantDotIsaName(isa)) continue;
      QuantDotTileFn fn = QuantDotTileFor(isa);
      for (int64_t rows : {1, 4, 32, 192}) {
        double gbs[2] = {0, 0}, best[2] = {0, 0}, gops = 0;
        for (int hot = 0; hot < 2; ++hot) {
          const double budget = isa == QuantDotIsa::kRef ? seconds / 4 : seconds;
          int64_t calls = 0;
          size_t tile = 0;
          const auto t0 = std::chrono::steady_clock::now();
          double el = 0, best_batch = 1e30;
          while (el < budget) {
            const auto tb = std::chrono::steady_clock::now();
            for (int rep = 0; rep < 16; ++rep) {
              fn(t, w.data() + tile * tile_bytes, row_bytes, static_cast<int>(kRows), a, 0, rows, 0, kK / 32,
                 out.data());
              if (!hot) tile = (tile + 1) % n_tiles;
              ++calls;
            }
            const auto te = std::chrono::steady_clock::now();
            best_batch = std::min(best_batch, std::chrono::duration<double>(te - tb).count());
            el = std::chrono::duration<double>(te - t0).count();
          }
          best[hot] = 16.0 * static_cast<double>(tile_bytes) / best_batch / 1e9;
          gbs[hot] = static_cast<double>(calls) * static_cast<double>(tile_bytes) / el / 1e9;
          if (hot) gops = 16.0 * 2.0 * static_cast<double>(rows * kRows * kK) / best_batch / 1e9;
        }
        std::printf("%-5s %-15s %5lld %10.2f %10.2f %10.2f %10.2f %10.2f\n",
                    std::string(DTypeName(t)).c_str(), QuantDotIsaName(isa), static_cast<long long>(rows),
                    gbs[0], best[0], gbs[1], best[1], gops);
        std::fflush(stdout);
      }
    }
  }
  return out[0] == 12345.0f;  // keep the results alive
}
