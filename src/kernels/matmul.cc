#include "kernels/matmul.h"

#include <cassert>

#include "core/cpu_features.h"
#include "kernels/matmul_impl.h"

namespace moerun {

const char* MatmulPathName(MatmulPath path) {
  switch (path) {
    case MatmulPath::kGeneric:
      return "generic";
    case MatmulPath::kAvx512F32:
      return "avx512-f32";
    case MatmulPath::kAvx512Bf16Dot:
      return "avx512-bf16dot";
  }
  return "?";
}

MatmulPath ChooseMatmulPath(DType weight_dtype, int64_t rows, ActivationPrecision precision) {
  if (!GetCpuFeatures().HasAvx512Bf16Kernels()) return MatmulPath::kGeneric;
  if (weight_dtype != DType::kBF16) return MatmulPath::kAvx512F32;
  switch (precision) {
    case ActivationPrecision::kF32:
      return MatmulPath::kAvx512F32;
    case ActivationPrecision::kBf16:
      return MatmulPath::kAvx512Bf16Dot;
    case ActivationPrecision::kAuto:
      break;
  }
  return rows >= kBf16DotMinRows ? MatmulPath::kAvx512Bf16Dot : MatmulPath::kAvx512F32;
}

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
  switch (job.path) {
    case MatmulPath::kGeneric:
      internal::MatmulTaskGeneric(job, m0, m1, b0, b1);
      return;
    case MatmulPath::kAvx512F32:
      internal::MatmulTaskAvx512F32(job, m0, m1, b0, b1);
      return;
    case MatmulPath::kAvx512Bf16Dot:
      internal::MatmulTaskAvx512Bf16Dot(job, m0, m1, b0, b1);
      return;
  }
}

void RunMatmul(const MatmulJob& job, ThreadPool* pool) {
  const int64_t n = MatmulTaskCount(job);
  if (pool == nullptr) {
    for (int64_t t = 0; t < n; ++t) RunMatmulTask(job, t);
    return;
  }
  pool->ParallelFor(n, [&](int64_t t, int) { RunMatmulTask(job, t); });
}

void ConvertRowToBf16(const float* src, int64_t n, uint16_t* dst, int64_t padded_n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = F32ToBf16(src[i]);
  for (int64_t i = n; i < padded_n; ++i) dst[i] = 0;
}

}  // namespace moerun
