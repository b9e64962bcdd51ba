#include "kernels/read_bandwidth.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>

#include "core/cpu_features.h"
#include "core/huge_page_arena.h"

namespace moerun {
namespace {

float SumPortable(const float* p, size_t n) {
  float acc[8] = {};
  for (size_t i = 0; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += p[i + static_cast<size_t>(j)];
  float s = 0;
  for (float a : acc) s += a;
  return s;
}

}  // namespace

double MeasureReadBandwidth(ThreadPool* pool, size_t bytes, int passes) {
  const size_t n = bytes / sizeof(float);
  // The memory packed weights live in (huge pages where the kernel gives them), so the bound is
  // measured on the same kind of pages the weights are streamed from.
  const StreamedBytes bytes_buf = AllocateStreamedBytes(n * sizeof(float));
  auto* buf = reinterpret_cast<float*>(bytes_buf.get());
  const int threads = pool != nullptr ? pool->size() : 1;
  const bool avx2 = GetCpuFeatures().HasAvx2Kernels();
  std::atomic<float> sink{0};
  auto run = [&](int64_t t, int) {
    const size_t b = n * static_cast<size_t>(t) / static_cast<size_t>(threads);
    const size_t e = n * static_cast<size_t>(t + 1) / static_cast<size_t>(threads);
    const float s = avx2 ? internal::SumAvx2(buf + b, e - b) : SumPortable(buf + b, e - b);
    sink.store(sink.load(std::memory_order_relaxed) + s, std::memory_order_relaxed);
  };
  // First touch from the threads that will read (pages land near them), then timed passes.
  auto fill = [&](int64_t t, int) {
    const size_t b = n * static_cast<size_t>(t) / static_cast<size_t>(threads);
    const size_t e = n * static_cast<size_t>(t + 1) / static_cast<size_t>(threads);
    std::memset(buf + b, 0, (e - b) * sizeof(float));
  };
  if (pool != nullptr) {
    pool->ParallelFor(threads, fill);
  } else {
    fill(0, 0);
  }
  double best = 0;
  for (int p = 0; p < passes; ++p) {
    const auto t0 = std::chrono::steady_clock::now();
    if (pool != nullptr) {
      pool->ParallelFor(threads, run);
    } else {
      run(0, 0);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(n * sizeof(float)) / s / 1e9);
  }
  return best;
}

}  // namespace moerun
