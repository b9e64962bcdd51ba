#include "kernels/matmul.h"

#include <algorithm>
#include <cassert>
#include <vector>

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
  if (job.k_blocks <= 1) return job.kernel->task(job, m0, m1, b0, b1);
  const int64_t k0 = job.k_begin, width = (job.KEnd() - k0) / job.k_blocks;
  MatmulJob block = job;
  block.k_blocks = 1;
  for (int64_t b = 0; b < job.k_blocks; ++b) {
    block.k_begin = k0 + b * width;
    block.k_end = block.k_begin + width;
    block.y = job.y + b * job.block_stride;
    job.kernel->task(block, m0, m1, b0, b1);
  }
}

void RunMatmul(const MatmulJob& job, ThreadPool* pool) {
  ParallelForOn(pool, MatmulTaskCount(job), [&](int64_t t, int) { RunMatmulTask(job, t); });
}

void RunMatmuls(std::span<const MatmulJob> jobs, ThreadPool* pool) {
  std::vector<int64_t> first_task(jobs.size() + 1, 0);  // job j's tasks: [first_task[j], first_task[j+1])
  for (size_t j = 0; j < jobs.size(); ++j) first_task[j + 1] = first_task[j] + MatmulTaskCount(jobs[j]);
  auto run = [&](int64_t task, int) {
    const size_t j = static_cast<size_t>(std::upper_bound(first_task.begin(), first_task.end(), task) -
                                         first_task.begin() - 1);
    RunMatmulTask(jobs[j], task - first_task[j]);
  };
  ParallelForOn(pool, first_task.back(), run);
}

}  // namespace moerun
