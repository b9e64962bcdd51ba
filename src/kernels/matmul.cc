#include "kernels/matmul.h"

#include <algorithm>
#include <cassert>
#include <vector>

#include "kernels/kernel_table.h"

namespace moerun {
namespace {

int64_t BlockCount(const MatmulJob& job) { return job.w->n_blocks(); }

int64_t ChunkCount(const MatmulJob& job) {
  return (job.rows + kMatmulMaxChunkRows - 1) / kMatmulMaxChunkRows;
}

// Runs of run_blocks blocks covering the job's blocks; its tasks are chunks x runs.
int64_t RunCount(const MatmulJob& job, int64_t run_blocks) {
  return (BlockCount(job) + run_blocks - 1) / run_blocks;
}

// Blocks [b0, b1) of rows [m0, m1) in kernel calls of at most kMatmulGroupBlocks blocks.
void RunBlocks(const MatmulJob& job, int64_t m0, int64_t m1, int64_t b0, int64_t b1) {
  if (job.k_blocks <= 1) {
    for (int64_t g0 = b0; g0 < b1; g0 += kMatmulGroupBlocks)
      job.kernel->task(job, m0, m1, g0, std::min(b1, g0 + kMatmulGroupBlocks));
    return;
  }
  const int64_t k0 = job.k_begin, width = (job.KEnd() - k0) / job.k_blocks;
  MatmulJob block = job;
  block.k_blocks = 1;
  for (int64_t g0 = b0; g0 < b1; g0 += kMatmulGroupBlocks) {
    const int64_t g1 = std::min(b1, g0 + kMatmulGroupBlocks);
    for (int64_t b = 0; b < job.k_blocks; ++b) {
      block.k_begin = k0 + b * width;
      block.k_end = block.k_begin + width;
      block.y = job.y + b * job.block_stride;
      job.kernel->task(block, m0, m1, g0, g1);
    }
  }
}

void RunTask(const MatmulJob& job, int64_t run_blocks, int64_t task) {
  const int64_t runs = RunCount(job, run_blocks);
  const int64_t chunk = task / runs, run = task % runs;
  // Near-equal chunks: chunk c covers [c * M / C, (c + 1) * M / C).
  const int64_t chunks = ChunkCount(job);
  const int64_t m0 = chunk * job.rows / chunks;
  const int64_t m1 = (chunk + 1) * job.rows / chunks;
  const int64_t b0 = run * run_blocks;
  const int64_t b1 = std::min(BlockCount(job), b0 + run_blocks);
  assert(job.epilogue != Epilogue::kSwiGlu || job.w->interleaved_gate_up());
  assert(job.kernel != nullptr && job.kernel->weights == job.w->format());
  assert(job.kernel->acts == job.x.format);
  RunBlocks(job, m0, m1, b0, b1);
}

}  // namespace

int64_t MatmulRunBlocks(int64_t units, int threads) {
  const int64_t tasks = std::max<int64_t>(1, int64_t{threads} * kMatmulTasksPerThread);
  const int64_t groups = (units + tasks * kMatmulGroupBlocks - 1) / (tasks * kMatmulGroupBlocks);
  return std::max<int64_t>(1, groups) * kMatmulGroupBlocks;
}

void RunMatmul(const MatmulJob& job, ThreadPool* pool) {
  RunMatmuls(std::span<const MatmulJob>(&job, 1), pool);
}

void RunMatmuls(std::span<const MatmulJob> jobs, ThreadPool* pool) {
  int64_t units = 0;
  for (const MatmulJob& job : jobs) units += ChunkCount(job) * BlockCount(job);
  const int64_t stream_run = MatmulRunBlocks(units, pool != nullptr ? pool->size() : 1);
  auto run_blocks = [&](const MatmulJob& job) {
    return job.rows <= kMatmulStreamMaxRows ? stream_run : kMatmulGroupBlocks;
  };
  std::vector<int64_t> first_task(jobs.size() + 1, 0);  // job j's tasks: [first_task[j], first_task[j+1])
  for (size_t j = 0; j < jobs.size(); ++j) {
    first_task[j + 1] = first_task[j] + ChunkCount(jobs[j]) * RunCount(jobs[j], run_blocks(jobs[j]));
  }
  auto run = [&](int64_t task, int) {
    const size_t j = static_cast<size_t>(std::upper_bound(first_task.begin(), first_task.end(), task) -
                                         first_task.begin() - 1);
    RunTask(jobs[j], run_blocks(jobs[j]), task - first_task[j]);
  };
  ParallelForOn(pool, first_task.back(), run);
}

}  // namespace moerun
