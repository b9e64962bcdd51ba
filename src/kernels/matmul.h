// Matmul over packed weights: y[m, n] = sum_k x[m, k] * W[n, k]  (x prepared activations
// [M, K], W a PackedWeight [N, K]), optionally with a SwiGLU epilogue for an interleaved gate/up
// weight: h[m, i] = silu(x W_gate^T)[m, i] * (x W_up^T)[m, i].
//
// Work is cut into independent tasks (a chunk of rows x a run of column blocks) so callers can
// put the tasks of many matmuls (all experts of a layer) into one ThreadPool::ParallelFor. Each
// output element is computed by one task with a fixed k order, so results do not depend on the
// thread count or on which rows share a task (batch invariance). Which arithmetic runs is the
// job's kernel row (kernels/kernel_table.h); its activation format is the view's.
//
// Thread safety: tasks of one job write disjoint outputs and may run concurrently.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/activations.h"
#include "kernels/packed_weight.h"

namespace moerun {

struct MatmulKernel;

enum class Epilogue {
  kStore,   // y[m, n] = acc, n < out_features
  kSwiGlu,  // REQUIRES interleaved gate/up weight: y[m, i] = silu(gate) * up, i < out_features
};

struct MatmulJob {
  int64_t rows = 0;  // M
  ActView x;         // [M, K] in kernel->acts format
  const PackedWeight* w = nullptr;
  const MatmulKernel* kernel = nullptr;  // a row of the kernel table for w->format()
  float* y = nullptr;                    // [M, ldy] f32 output
  int64_t ldy = 0;
  // The output column y's rows start at: element (m, n) is at y[m * ldy + n - y_col0], so a task
  // may write its columns [y_col0, y_col0 + ldy) into a buffer of its own (e.g. 64 columns).
  int64_t y_col0 = 0;
  Epilogue epilogue = Epilogue::kStore;
  // Reduce over k in [k_begin, k_end) only (k_end < 0: in_features). x is still indexed by the
  // absolute k. REQUIRES: k_begin, k_end multiples of the format's K alignment (even for bf16),
  // or k_end == in_features. Used to compute fixed K-block partial sums (deterministic mode).
  int64_t k_begin = 0;
  int64_t k_end = -1;
  // Deterministic K-blocks in one job: [k_begin, KEnd()) is cut into k_blocks equal ranges and
  // range b writes y + b * block_stride (same ldy). Each task walks its weight rows' ranges in
  // order, so a row panel streams once. REQUIRES: each range a multiple of the K alignment.
  int64_t k_blocks = 1;
  int64_t block_stride = 0;  // floats between block outputs, e.g. H for y [M, k_blocks, H]
  // With q != nullptr: each task also quantises the output columns it wrote (after the epilogue)
  // into these rows (row m at q + m * ldq, its scales and sums at m * ldb), bit for bit as
  // ActivationBuffer would: the next projection's input made while the task's outputs are in its
  // core's cache (the MoE's gate/up loop making the down loop's input). Tasks then cover whole
  // 32-column groups (MatmulTaskUnit). REQUIRES: k_blocks == 1.
  Q8Rows quantize_into{};

  int64_t KEnd() const { return k_end < 0 ? w->in_features() : k_end; }
  // Where output element (m, col) goes.
  float* YAt(int64_t m, int64_t col) const { return y + m * ldy + (col - y_col0); }
};

// A task covers a chunk of rows x a run of column blocks. Rows are split into
// ceil(M / kMatmulMaxChunkRows) near-equal chunks (so no chunk is a thin remainder that would
// stream the weight panel again for a few rows); the panel stays in L2 across the chunk's tiles.
// A run is kMatmulGroupBlocks blocks (the kernel rows' call unit: 4 x 16 output columns), except
// for jobs of at most kMatmulStreamMaxRows rows. Those stream their weights from memory, and each
// thread streaming long contiguous runs reads faster than both taking turns at short ones (each new
// run starts with missed prefetches). In a loop that also has bigger jobs (a prefill's experts that
// got few tokens) their runs are sized so the loop has about kMatmulTasksPerThread tasks per thread
// (MatmulRunBlocks), until the streaming blocks left fall under 2 x threads such runs; from there
// each run is the blocks left / (2 x threads), down to one block (a gate/up pair for an interleaved
// weight), so the threads finish together instead of one waiting for the other's last long run
// (guided scheduling). Jobs of more rows are compute bound and keep short runs, which balance the
// threads better.
//
// A loop whose jobs all stream (every decode loop) is planned another way: PlanStreamingMatmulTasks
// cuts each job into runs of about kMatmulStreamTaskBytes (kMatmulOneStreamTaskBytes where each
// thread reads one stream), in memory order, and RunMatmuls hands them out with
// ThreadPool::ParallelForStreams. Thread t walks the t-th contiguous share of the loop's weights
// and, when done, takes runs from the end of the share with the most left. Under the shared
// counter the two threads took turns along one stream, each jumping over the other's run (see
// docs/benchmarks.md for what that cost). Where every job has one row and some job's kernel row has a
// streams entry (kernel_table.h's StreamsOf), the share is kQuantDotMaxStreams streams the thread
// reads together, one column of each in turn (one core reads several streams faster than one); the
// tasks of jobs without one run one at a time among them.
inline constexpr int64_t kMatmulMaxChunkRows = 192;
inline constexpr int64_t kMatmulGroupBlocks = 4;  // 16-row blocks per kernel call
inline constexpr int64_t kMatmulStreamMaxRows = 4;
inline constexpr int64_t kMatmulTasksPerThread = 12;
inline constexpr size_t kMatmulStreamTaskBytes = size_t{128} << 10;  // weight bytes per streaming run
// A loop of one stream per thread (no job's kernel row has a streams entry, as in the Q4_K file's
// gate/up loops, its attention and lm_head, or a job has 2-4 rows) takes longer runs; the 2-4 row
// case was not measured on its own. In-process A/B on V2-Lite Q4_K decode (AMD Zen 5, 2 threads,
// steps alternating in threes) against 128 KB runs for every loop: 512 KB 0.955, 0.968 and 0.972 x
// the step time (the gate/up loops 0.934-0.976 x), 1 MB 0.960 x, 2 MB 0.959 x. The four-stream loops
// gained nothing from longer runs (Q8_0 1.007 x at 512 KB, Q4_0 0.997 x).
inline constexpr size_t kMatmulOneStreamTaskBytes = size_t{512} << 10;

// Blocks per task for a loop over `units` (chunk, block) pairs on `threads` threads: a multiple of
// kMatmulGroupBlocks, at least kMatmulGroupBlocks. E.g. 1408 units on 2 threads -> 60.
int64_t MatmulRunBlocks(int64_t units, int threads);

// The blocks a task's run is a multiple of: 2 for an interleaved gate/up weight (a gate block and
// its up block), 4 for one that quantises its output (MatmulJob::quantize_into: 32 columns),
// 2 for a plain one that does, else 1.
int64_t MatmulTaskUnit(const MatmulJob& job);

// One task of a loop over jobs: row chunk `chunk` of jobs[job], column blocks [b0, b1).
struct MatmulTask {
  size_t job = 0;
  int64_t chunk = 0;
  int64_t b0 = 0, b1 = 0;
};
// The tasks of `jobs` on `threads` threads, in the order the loop hands them out (see above).
// Every (job, chunk, block) is in exactly one task.
std::vector<MatmulTask> PlanMatmulTasks(std::span<const MatmulJob> jobs, int threads);
// The tasks of a loop whose jobs all have at most kMatmulStreamMaxRows rows, for ParallelForStreams
// (`threads`: the loop's streams, threads x streams per thread):
// each job's blocks in order, in runs of about run_bytes (whole gate/up pairs, at least one),
// shorter when the loop has fewer than 2 x threads such runs. Every block is in exactly one task.
std::vector<MatmulTask> PlanStreamingMatmulTasks(std::span<const MatmulJob> jobs, int threads,
                                                 size_t run_bytes = kMatmulStreamTaskBytes);

// Computes rows [m0, m1) x column blocks [b0, b1) of `job` (every K-block of it) on this thread:
// one task's work, for callers that schedule their own tasks (ExpertCompute's fixed-point sums).
void RunMatmulBlocks(const MatmulJob& job, int64_t m0, int64_t m1, int64_t b0, int64_t b1);
// Runs every task of `job` on `pool` (or inline when pool is nullptr).
void RunMatmul(const MatmulJob& job, ThreadPool* pool);
// Runs every task of every job in one parallel loop (one wait for all of them).
void RunMatmuls(std::span<const MatmulJob> jobs, ThreadPool* pool);
// Runs every job on the calling thread, in order; consecutive one-row jobs whose kernel row has a
// streams entry run kQuantDotMaxStreams at a time, one column of each in turn (a thread's share of
// decode attention's per-head kv_b products: small weights of their own, each read from memory
// with its own input row). The same bits as RunMatmuls.
void RunMatmulsOnThisThread(std::span<const MatmulJob> jobs);

}  // namespace moerun
