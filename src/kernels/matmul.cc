#include "kernels/matmul.h"

#include <algorithm>
#include <cassert>
#include <vector>

#include "kernels/kernel_table.h"
#include "kernels/matmul_impl.h"
#include "kernels/quant_dot.h"

namespace moerun {
namespace {

int64_t BlockCount(const MatmulJob& job) { return job.w->n_blocks(); }

int64_t ChunkCount(const MatmulJob& job) {
  return (job.rows + kMatmulMaxChunkRows - 1) / kMatmulMaxChunkRows;
}

}  // namespace

// Tasks of jobs that do not stream are kMatmulGroupBlocks blocks: whole 32-column groups too.
static_assert(kMatmulGroupBlocks % 4 == 0);

int64_t MatmulTaskUnit(const MatmulJob& job) {
  const bool swiglu = job.epilogue == Epilogue::kSwiGlu;
  int64_t unit = job.w->interleaved_gate_up() ? 2 : 1;  // a gate block and its up block
  if (job.quantize_into.q != nullptr) unit = std::max<int64_t>(unit, swiglu ? 4 : 2);  // 32 columns
  return unit;
}

namespace {

// MatmulJob::quantize_into for rows [m0, m1) x the output columns of blocks [b0, b1).
void QuantizeOutput(const MatmulJob& job, int64_t m0, int64_t m1, int64_t b0, int64_t b1) {
  const Q8Rows& q = job.quantize_into;
  if (q.q == nullptr || b0 >= b1) return;
  assert(job.k_blocks <= 1);
  const int64_t width = job.w->out_features();  // I for a gate/up pair
  const int64_t c0 = internal::BlockCol0(job, b0), c1 = std::min(width, internal::BlockCol0(job, b1));
  assert(c0 % 32 == 0 && "tasks start at whole 32-column groups (MatmulTaskUnit)");
  for (int64_t m = m0; m < m1; ++m) {
    QuantizeActivationRow(job.YAt(m, c0), c1 - c0, q.q + m * q.ldq + c0, q.d + m * q.ldb + c0 / 32,
                          q.sum + m * q.ldb + c0 / 32);
  }
}

}  // namespace

// Blocks [b0, b1) of rows [m0, m1) in kernel calls of at most kMatmulGroupBlocks blocks.
void RunMatmulBlocks(const MatmulJob& job, int64_t m0, int64_t m1, int64_t b0, int64_t b1) {
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

namespace {

// A job of 1 .. kMatmulStreamMaxRows rows (a job of none has no tasks).
bool Streams(const MatmulJob& job) { return job.rows > 0 && job.rows <= kMatmulStreamMaxRows; }

void RunTask(const MatmulJob& job, const MatmulTask& task) {
  // Near-equal chunks: chunk c covers [c * M / C, (c + 1) * M / C).
  const int64_t chunks = ChunkCount(job);
  const int64_t m0 = task.chunk * job.rows / chunks;
  const int64_t m1 = (task.chunk + 1) * job.rows / chunks;
  assert(job.epilogue != Epilogue::kSwiGlu || job.w->interleaved_gate_up());
  assert(job.kernel != nullptr && job.kernel->weights == job.w->format());
  assert(job.kernel->acts == job.x.format);
  RunMatmulBlocks(job, m0, m1, task.b0, task.b1);
  QuantizeOutput(job, m0, m1, task.b0, task.b1);
}

// Jobs whose tasks can run as streams of one MatmulStreamsFn call (its requirements).
bool SameStreams(const MatmulJob& a, const MatmulJob& b) {
  return a.kernel == b.kernel && a.k_begin == b.k_begin && a.KEnd() == b.KEnd() && a.epilogue == b.epilogue &&
         a.w->format() == b.w->format();
}

bool CanStream(const MatmulJob& job) {
  return job.rows == 1 && job.k_blocks <= 1 && StreamsOf(*job.kernel) != nullptr;
}

static_assert(ThreadPool::kMaxStreams == kQuantDotMaxStreams);

// A ParallelForStreams group: the tasks that can run together through their row's streams entry,
// the others one by one (the same bits either way).
void RunStreams(std::span<const MatmulJob> jobs, const std::vector<MatmulTask>& tasks,
                std::span<const int64_t> group) {
  bool done[ThreadPool::kMaxStreams] = {};
  for (size_t i = 0; i < group.size(); ++i) {
    if (done[i]) continue;
    const MatmulTask& task = tasks[static_cast<size_t>(group[i])];
    const MatmulJob& job = jobs[task.job];
    if (!CanStream(job)) {
      RunTask(job, task);
      continue;
    }
    MatmulStream streams[ThreadPool::kMaxStreams];
    size_t n = 0;
    for (size_t k = i; k < group.size(); ++k) {
      const MatmulTask& other = tasks[static_cast<size_t>(group[k])];
      if (done[k] || !CanStream(jobs[other.job]) || !SameStreams(job, jobs[other.job])) continue;
      streams[n++] = {&jobs[other.job], other.b0, other.b1};
      done[k] = true;
    }
    const MatmulStreamsFn run_streams = StreamsOf(*job.kernel);
    run_streams(std::span<const MatmulStream>(streams, n));
    for (size_t s = 0; s < n; ++s)
      QuantizeOutput(*streams[s].job, 0, streams[s].job->rows, streams[s].b0, streams[s].b1);
  }
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

void RunMatmulsOnThisThread(std::span<const MatmulJob> jobs) {
  std::vector<MatmulTask> tasks;  // one per job (a job of more rows: one per row chunk)
  for (size_t j = 0; j < jobs.size(); ++j) {
    for (int64_t c = 0; c < ChunkCount(jobs[j]); ++c) tasks.push_back({j, c, 0, BlockCount(jobs[j])});
  }
  const auto n = static_cast<int64_t>(tasks.size());
  int64_t group[kQuantDotMaxStreams];
  for (int64_t t0 = 0; t0 < n; t0 += kQuantDotMaxStreams) {
    const int64_t len = std::min<int64_t>(kQuantDotMaxStreams, n - t0);
    for (int64_t i = 0; i < len; ++i) group[i] = t0 + i;
    RunStreams(jobs, tasks, std::span<const int64_t>(group, static_cast<size_t>(len)));
  }
}

std::vector<MatmulTask> PlanMatmulTasks(std::span<const MatmulJob> jobs, int threads) {
  int64_t units = 0, stream_left = 0;  // stream_left: streaming blocks not yet in a task
  for (const MatmulJob& job : jobs) {
    units += ChunkCount(job) * BlockCount(job);
    if (Streams(job)) stream_left += BlockCount(job);
  }
  const int64_t stream_run = MatmulRunBlocks(units, threads);
  const int64_t tail_share = 2 * int64_t{std::max(1, threads)};
  std::vector<MatmulTask> tasks;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const MatmulJob& job = jobs[j];
    const int64_t blocks = BlockCount(job);
    if (!Streams(job)) {
      for (int64_t c = 0; c < ChunkCount(job); ++c) {
        for (int64_t b0 = 0; b0 < blocks; b0 += kMatmulGroupBlocks)
          tasks.push_back({j, c, b0, std::min(blocks, b0 + kMatmulGroupBlocks)});
      }
      continue;
    }
    const int64_t unit = MatmulTaskUnit(job);
    for (int64_t b0 = 0; b0 < blocks;) {
      const int64_t guided = (stream_left + tail_share - 1) / tail_share;
      const int64_t run = (std::clamp<int64_t>(guided, 1, stream_run) + unit - 1) / unit * unit;
      const int64_t b1 = std::min(blocks, b0 + run);
      tasks.push_back({j, 0, b0, b1});
      stream_left -= b1 - b0;
      b0 = b1;
    }
  }
  return tasks;
}

std::vector<MatmulTask> PlanStreamingMatmulTasks(std::span<const MatmulJob> jobs, int threads,
                                                 size_t run_bytes) {
  int64_t blocks = 0;
  for (const MatmulJob& job : jobs) blocks += job.rows > 0 ? BlockCount(job) : 0;
  const int64_t share = blocks / (2 * int64_t{std::max(1, threads)});  // blocks per half thread
  std::vector<MatmulTask> tasks;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const MatmulJob& job = jobs[j];
    if (job.rows == 0) continue;  // a job of none has no tasks
    const int64_t unit = MatmulTaskUnit(job);
    // Bytes one block's tile streams over the job's K range.
    const int64_t block_bytes = std::max<int64_t>(
        1, static_cast<int64_t>(job.w->block_bytes()) * (job.KEnd() - job.k_begin) / job.w->in_features());
    const int64_t by_bytes = static_cast<int64_t>(run_bytes) / block_bytes;
    // A quantising job's runs are rounded to the nearest multiple of its unit (4 gate/up blocks of
    // a Q4_K expert: 72 KB rounded down, 144 KB to the nearest): in-process A/B of the experts'
    // decode phase on V2-Lite (AMD Zen 5, 2 threads), quantising in the loop with runs rounded down
    // took 0.99-1.02 x the time of quantising after it, rounded to the nearest 0.98-1.02 x.
    const int64_t want = std::min(by_bytes, share);
    const int64_t run =
        std::max(unit, (job.quantize_into.q != nullptr ? want + unit / 2 : want) / unit * unit);
    for (int64_t b0 = 0; b0 < BlockCount(job); b0 += run)
      tasks.push_back({j, 0, b0, std::min(BlockCount(job), b0 + run)});
  }
  return tasks;
}

void RunMatmuls(std::span<const MatmulJob> jobs, ThreadPool* pool) {
  if (pool == nullptr) {  // one thread: each job's chunks in turn, no plan (the same bits)
    for (size_t j = 0; j < jobs.size(); ++j) {
      for (int64_t c = 0; c < ChunkCount(jobs[j]); ++c) RunTask(jobs[j], {j, c, 0, BlockCount(jobs[j])});
    }
    return;
  }
  const bool streams = std::none_of(jobs.begin(), jobs.end(),
                                    [](const MatmulJob& job) { return job.rows > kMatmulStreamMaxRows; });
  if (!streams) {
    const std::vector<MatmulTask> tasks = PlanMatmulTasks(jobs, pool->size());
    pool->ParallelFor(static_cast<int64_t>(tasks.size()), [&](int64_t i, int) {
      const MatmulTask& task = tasks[static_cast<size_t>(i)];
      RunTask(jobs[task.job], task);
    });
    return;
  }
  // Several streams per thread for one-row loops where some job's kernel row can run them (a Q4_K
  // file's down loop: Q5_0 routed experts as streams, the Q4_K shared expert task by task among
  // them). In-process A/B on V2-Lite Q4_K decode (AMD Zen 3, AVX2 rows): its down loops 5-8 % faster.
  const bool grouped =
      std::all_of(jobs.begin(), jobs.end(), [](const MatmulJob& job) { return job.rows <= 1; }) &&
      std::any_of(jobs.begin(), jobs.end(), [](const MatmulJob& job) { return CanStream(job); });
  const int per_thread = grouped ? kQuantDotMaxStreams : 1;
  const std::vector<MatmulTask> tasks = PlanStreamingMatmulTasks(
      jobs, pool->size() * per_thread, grouped ? kMatmulStreamTaskBytes : kMatmulOneStreamTaskBytes);
  pool->ParallelForStreams(static_cast<int64_t>(tasks.size()), per_thread,
                           [&](std::span<const int64_t> group, int) { RunStreams(jobs, tasks, group); });
}

}  // namespace moerun
