// Matmul over packed weights: y[m, n] = sum_k x[m, k] * W[n, k]  (x [M, K] row-major f32 or bf16,
// W a PackedWeight [N, K]), optionally with a SwiGLU epilogue for an interleaved gate/up weight:
// h[m, i] = silu(x W_gate^T)[m, i] * (x W_up^T)[m, i].
//
// Work is cut into independent tasks (a chunk of rows x a group of 4 column blocks) so callers can
// put the tasks of many matmuls (all experts of a layer) into one ThreadPool::ParallelFor.
// Each output element is computed by one task with a fixed k order, so results do not depend on
// the thread count; they do depend on the path:
//   kGeneric        portable C++; f32 activations, weights widened to f32, f32 accumulation.
//   kAvx512F32      AVX-512; same arithmetic as kGeneric but vectorised (bf16 weights widened).
//   kAvx512Bf16Dot  AVX-512 BF16 (vdpbf16ps): activations rounded to bf16, products of bf16
//                   pairs accumulated in f32. Only for bf16 weights; ~3x the throughput of f32 FMA.
// ChooseMatmulPath picks kAvx512Bf16Dot for bf16 weights when rows >= kBf16DotMinRows (compute
// bound), kAvx512F32 otherwise (bandwidth bound, exact f32 activations), kGeneric without AVX-512.
//
// Thread safety: tasks of one job write disjoint outputs and may run concurrently.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"
#include "kernels/packed_weight.h"

namespace moerun {

enum class MatmulPath { kGeneric, kAvx512F32, kAvx512Bf16Dot };
const char* MatmulPathName(MatmulPath path);

// How activations may be rounded for bf16 weights.
enum class ActivationPrecision {
  kAuto,  // bf16 dot products for rows >= kBf16DotMinRows, exact f32 otherwise
  kF32,   // never round activations (slower at large batch)
  kBf16,  // always use bf16 dot products (batch-invariant results)
};

inline constexpr int64_t kBf16DotMinRows = 8;

MatmulPath ChooseMatmulPath(DType weight_dtype, int64_t rows, ActivationPrecision precision);

enum class Epilogue {
  kStore,   // y[m, n] = acc, n < out_features
  kSwiGlu,  // REQUIRES interleaved gate/up weight: y[m, i] = silu(gate) * up, i < out_features
};

struct MatmulJob {
  int64_t rows = 0;                  // M
  const float* x_f32 = nullptr;      // [M, ldx] f32; read by kGeneric / kAvx512F32
  const uint16_t* x_bf16 = nullptr;  // [M, ldx] bf16, K padded to even with 0; read by kAvx512Bf16Dot
  int64_t ldx = 0;                   // elements between rows of x
  const PackedWeight* w = nullptr;
  float* y_f32 = nullptr;      // [M, ldy] f32 output, or
  uint16_t* y_bf16 = nullptr;  // [M, ldy] bf16 output (exactly one of the two is set)
  int64_t ldy = 0;
  Epilogue epilogue = Epilogue::kStore;
  MatmulPath path = MatmulPath::kGeneric;
  // Reduce over k in [k_begin, k_end) only (k_end < 0: in_features). x is still indexed by the
  // absolute k. REQUIRES: k_begin even; k_end even or == in_features. Used to compute fixed
  // K-block partial sums (deterministic mode).
  int64_t k_begin = 0;
  int64_t k_end = -1;

  int64_t KEnd() const { return k_end < 0 ? w->in_features() : k_end; }
};

// A task covers a chunk of rows x kMatmulGroupBlocks column blocks. Rows are split into
// ceil(M / kMatmulMaxChunkRows) near-equal chunks (so no chunk is a thin remainder that would
// stream the weight panel again for a few rows); the panel stays in L2 across the chunk's tiles.
inline constexpr int64_t kMatmulMaxChunkRows = 192;
inline constexpr int64_t kMatmulGroupBlocks = 4;  // 16-column blocks per task

int64_t MatmulTaskCount(const MatmulJob& job);
void RunMatmulTask(const MatmulJob& job, int64_t task);
// Runs every task of `job` on `pool` (or inline when pool is nullptr).
void RunMatmul(const MatmulJob& job, ThreadPool* pool);

// Rounds n f32 values to bf16 (round to nearest even), writing `padded_n` >= n values (zeros after n).
void ConvertRowToBf16(const float* src, int64_t n, uint16_t* dst, int64_t padded_n);

}  // namespace moerun
