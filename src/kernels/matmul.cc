#include "kernels/matmul.h"

#include <algorithm>
#include <cassert>

#include "kernels/kernel_table.h"

namespace moerun {
namespace {

int64_t GroupCount(const MatmulJob& job) {
  return (job.w->n_blocks() + kMatmulGroupBlocks - 1) / kMatmulGroupBlocks;
}

int64_t ChunkCount(const MatmulJob& job) {
  return (job.rows + kMatmulMaxChunkRows - 1) / kMatmulMaxChunkRows;
}

}  // namespace

int64_t MatmulTaskCount(const MatmulJob& job) { return ChunkCount(job) * GroupCount(job); }

void RunMatmulTask(const MatmulJob& job, int64_t task) {
  const int64_t groups = GroupCount(job);
  const int64_t chunk = task / groups, group = task % groups;
  // Near-equal chunks: chunk c covers [c * M / C, (c + 1) * M / C).
  const int64_t chunks = ChunkCount(job);
  const int64_t m0 = chunk * job.rows / chunks;
  const int64_t m1 = (chunk + 1) * job.rows / chunks;
  const int64_t b0 = group * kMatmulGroupBlocks;
  const int64_t b1 = std::min(job.w->n_blocks(), b0 + kMatmulGroupBlocks);
  assert(job.epilogue != Epilogue::kSwiGlu || job.w->interleaved_gate_up());
  assert(job.kernel != nullptr && job.kernel->weights == job.w->format());
  assert(job.kernel->acts == job.x.format);
  job.kernel->task(job, m0, m1, b0, b1);
}

void RunMatmul(const MatmulJob& job, ThreadPool* pool) {
  const int64_t n = MatmulTaskCount(job);
  if (pool == nullptr) {
    for (int64_t t = 0; t < n; ++t) RunMatmulTask(job, t);
    return;
  }
  pool->ParallelFor(n, [&](int64_t t, int) { RunMatmulTask(job, t); });
}

}  // namespace moerun
