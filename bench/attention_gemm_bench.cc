// Standalone benchmark of the small attention GEMMs (kernels/small_gemm.h) at DeepSeek-V2-Lite's
// MLA prefill shapes: one task of 16 tokens x 16 heads = 256 query rows over a paged latent cache
// of `ctx` entries in blocks of 16 (docs/models.md §3.4):
//   scores: GemmNT [256, 576] x [ctx, 576]^T, one call per block;
//   values: GemmNN on the first block, then GemmNNAccumulate per block, [256, ctx] x [ctx, 512];
//   paged:  the same values as one GemmNNPaged over the block table;
//   paged64: the same as 8 GemmNNPaged calls of 64 columns (a spread decode step's value tasks);
//   arena64 / arenaNT: paged64 and the scores as one GemmNTPaged, over the same entries laid out as
//   the model's KV arena lays them out (each 16-entry block is one of 27 layers' blocks side by
//   side, so a layer's blocks lie about 1 MB apart: what the kernels' prefetch of the next block is
//   for).
// Reports GFLOP/s (2 flops per multiply-add; mean, and the fastest of the timed batches) per ISA.
//   build/bin/attention_gemm_bench [seconds_per_case [ctx [query_rows]]]
// e.g. `attention_gemm_bench 0.5 4096 16`: one decode step's 16 heads at a context of 4096.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "kernels/small_gemm.h"

using namespace moerun;

namespace {

constexpr int64_t kKeyDim = 576, kValueDim = 512, kBlock = 16;

template <typename Fn>
void Time(const char* what, const char* isa_name, double flops_per_call, double seconds, Fn fn) {
  double elapsed = 0, best = 1e30;
  int64_t calls = 0;
  while (elapsed < seconds) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int rep = 0; rep < 4; ++rep) fn();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    elapsed += dt;
    best = std::min(best, dt / 4);
    calls += 4;
  }
  std::printf("%-7s %-7s %10.1f %10.1f\n", what, isa_name, flops_per_call * calls / elapsed * 1e-9,
              flops_per_call / best * 1e-9);
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 0.5;
  const int64_t ctx = argc > 2 ? std::atoll(argv[2]) : 512;
  const int64_t kRows = argc > 3 ? std::atoll(argv[3]) : 256;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> ud(-1.0f, 1.0f);
  auto fill = [&](std::vector<float>& v) {
    for (float& e : v) e = ud(rng);
  };
  std::vector<float> q(kRows * kKeyDim), cache(ctx * kKeyDim), p(kRows * ctx), s(kRows * ctx),
      o(kRows * kValueDim);
  fill(q);
  fill(cache);
  fill(p);
  std::vector<int32_t> table((ctx + kBlock - 1) / kBlock);
  for (size_t b = 0; b < table.size(); ++b) table[b] = static_cast<int32_t>(b);
  const PagedRows paged{cache.data(), kKeyDim, table.data(), kBlock, kBlock * kKeyDim};
  constexpr int64_t kLayers = 27;  // V2-Lite's: blocks of the other layers between a layer's blocks
  std::vector<float> arena_cache(static_cast<size_t>(table.size()) * kLayers * kBlock * kKeyDim);
  for (size_t b = 0; b < table.size(); ++b)
    std::copy(cache.begin() + b * kBlock * kKeyDim,
              cache.begin() + std::min<size_t>(cache.size(), (b + 1) * kBlock * kKeyDim),
              arena_cache.begin() + b * kLayers * kBlock * kKeyDim);
  const PagedRows arena{arena_cache.data(), kKeyDim, table.data(), kBlock, kLayers * kBlock * kKeyDim};
  std::printf("ctx %lld, %lld query rows, blocks of %lld\n%-7s %-7s %10s %10s\n", static_cast<long long>(ctx),
              static_cast<long long>(kRows), static_cast<long long>(kBlock), "gemm", "isa", "GFLOP/s",
              "best");
  const struct {
    SmallGemmIsa isa;
    const char* name;
  } isas[] = {{SmallGemmIsa::kRef, "ref"}, {SmallGemmIsa::kAvx2, "avx2"}, {SmallGemmIsa::kAvx512, "avx512"}};
  for (const auto& entry : isas) {
    const SmallGemmIsa isa = entry.isa;  // (a lambda may not capture a structured binding in C++20)
    const char* name = entry.name;
    if (!SmallGemmIsaSupported(isa)) continue;
    const double budget = isa == SmallGemmIsa::kRef ? seconds / 4 : seconds;
    Time("scores", name, 2.0 * kRows * ctx * kKeyDim, budget, [&] {
      for (int64_t j0 = 0; j0 < ctx; j0 += kBlock) {
        GemmNT(isa, kRows, std::min(kBlock, ctx - j0), kKeyDim, q.data(), kKeyDim,
               cache.data() + j0 * kKeyDim, kKeyDim, s.data() + j0, ctx);
      }
    });
    Time("values", name, 2.0 * kRows * ctx * kValueDim, budget, [&] {
      for (int64_t j0 = 0; j0 < ctx; j0 += kBlock) {
        const int64_t len = std::min(kBlock, ctx - j0);
        const float* v = cache.data() + j0 * kKeyDim;
        if (j0 == 0) {
          GemmNN(isa, kRows, kValueDim, len, p.data(), ctx, v, kKeyDim, o.data(), kValueDim);
        } else {
          GemmNNAccumulate(isa, kRows, kValueDim, len, p.data() + j0, ctx, v, kKeyDim, o.data(), kValueDim);
        }
      }
    });
    Time("paged", name, 2.0 * kRows * ctx * kValueDim, budget,
         [&] { GemmNNPaged(isa, kRows, kValueDim, ctx, p.data(), ctx, paged, o.data(), kValueDim); });
    Time("paged64", name, 2.0 * kRows * ctx * kValueDim, budget, [&] {
      for (int64_t c0 = 0; c0 < kValueDim; c0 += 64) {
        PagedRows cols = paged;
        cols.data += c0;
        GemmNNPaged(isa, kRows, 64, ctx, p.data(), ctx, cols, o.data() + c0, kValueDim);
      }
    });
    Time("arena64", name, 2.0 * kRows * ctx * kValueDim, budget, [&] {
      for (int64_t c0 = 0; c0 < kValueDim; c0 += 64) {
        PagedRows cols = arena;
        cols.data += c0;
        GemmNNPaged(isa, kRows, 64, ctx, p.data(), ctx, cols, o.data() + c0, kValueDim);
      }
    });
    Time("arenaNT", name, 2.0 * kRows * ctx * kKeyDim, budget,
         [&] { GemmNTPaged(isa, kRows, 0, ctx, kKeyDim, q.data(), kKeyDim, arena, s.data(), ctx); });
  }
  return 0;
}
