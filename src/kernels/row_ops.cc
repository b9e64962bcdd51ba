// Dispatch and the portable reference of kernels/row_ops.h (compiled with -ffp-contract=off: the
// reference multiplies and adds in separate roundings on every target).
#include "kernels/row_ops.h"

#include <algorithm>
#include <cassert>
#include <vector>

#include "core/cpu_features.h"
#include "kernels/kernel_table.h"

namespace moerun {
namespace {

constexpr int64_t kChunk = 256;  // elements dequantised at a time (a multiple of every block size)

bool HasAvx512RowOps(const CpuFeatures& f) {
  return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.fma && f.f16c && f.os_saves_zmm;
}

// Dequantises elements [c0, c0 + n) of a row (c0 a multiple of kChunk) into out.
void ChunkToF32(const StoredRowsView& w, const uint8_t* row, int64_t c0, int64_t n, float* out) {
  ConvertToF32(w.dtype, row + DTypeRowBytes(w.dtype, c0), out, static_cast<size_t>(n));
}

}  // namespace

bool RowOpsSupport(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ5_0:
    case DType::kQ5_1:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return true;
    default:
      return false;
  }
}

StatusOr<StoredRows> MakeStoredRows(DType dtype, int64_t cols) {
  if (!RowOpsSupport(dtype)) return InvalidArgument("row ops do not read {} weights", DTypeName(dtype));
  if (cols <= 0 || cols % DTypeBlockSize(dtype) != 0) {
    return InvalidArgument("a {} row of {} elements is not a whole number of blocks", DTypeName(dtype), cols);
  }
  StoredRows r;
  r.dtype = dtype;
  r.cols = cols;
  r.row_bytes = DTypeRowBytes(dtype, cols);
  return r;
}

void AppendRow(StoredRows* rows, const void* row) {
  const auto* p = static_cast<const uint8_t*>(row);
  rows->bytes.insert(rows->bytes.end(), p, p + rows->row_bytes);
  ++rows->rows;
}

std::string_view RowOpsIsaName(RowOpsIsa isa) {
  switch (isa) {
    case RowOpsIsa::kRef:
      return "ref";
    case RowOpsIsa::kAvx2:
      return "avx2";
    case RowOpsIsa::kAvx512:
      return "avx512";
  }
  return "?";
}

bool RowOpsIsaSupported(RowOpsIsa isa) {
  const CpuFeatures& f = GetCpuFeatures();
  switch (isa) {
    case RowOpsIsa::kRef:
      return true;
    case RowOpsIsa::kAvx2:
      return f.HasAvx2Kernels();
    case RowOpsIsa::kAvx512:
      return HasAvx512RowOps(f);
  }
  return false;
}

RowOpsIsa SelectRowOpsIsa(std::string_view forced) {
  const IsaLevel level = ForcedIsaLevel(forced).value_or(IsaLevel::kAvx512);
  RowOpsIsa want = level == IsaLevel::kRef    ? RowOpsIsa::kRef
                   : level == IsaLevel::kAvx2 ? RowOpsIsa::kAvx2
                                              : RowOpsIsa::kAvx512;
  // Capped at what the CPU has: avx512 -> avx2 -> ref.
  if (want == RowOpsIsa::kAvx512 && !RowOpsIsaSupported(want)) want = RowOpsIsa::kAvx2;
  if (want == RowOpsIsa::kAvx2 && !RowOpsIsaSupported(want)) want = RowOpsIsa::kRef;
  return want;
}

void RowsAxpy(RowOpsIsa isa, const StoredRowsView& w, const float* x, float* y, RowBatch batch) {
  assert(RowOpsSupport(w.dtype) && RowOpsIsaSupported(isa));
  switch (isa) {
    case RowOpsIsa::kAvx512:
      return internal::RowsAxpyAvx512(w, x, y, batch);
    case RowOpsIsa::kAvx2:
      return internal::RowsAxpyAvx2(w, x, y, batch);
    case RowOpsIsa::kRef:
      return internal::RowsAxpyRef(w, x, y, batch);
  }
}

void RowsDot(RowOpsIsa isa, const StoredRowsView& w, const float* x, float* y, RowBatch batch) {
  assert(RowOpsSupport(w.dtype) && RowOpsIsaSupported(isa));
  switch (isa) {
    case RowOpsIsa::kAvx512:
      return internal::RowsDotAvx512(w, x, y, batch);
    case RowOpsIsa::kAvx2:
      return internal::RowsDotAvx2(w, x, y, batch);
    case RowOpsIsa::kRef:
      return internal::RowsDotRef(w, x, y, batch);
  }
}

namespace internal {

void RowsAxpyRef(const StoredRowsView& w, const float* x, float* y, RowBatch batch) {
  float buf[kChunk];
  for (int64_t i = 0; i < w.rows; ++i) {
    const auto* row = static_cast<const uint8_t*>(w.data) + static_cast<size_t>(i) * w.row_stride;
    for (int64_t c0 = 0; c0 < w.cols; c0 += kChunk) {
      const int64_t n = std::min(kChunk, w.cols - c0);
      ChunkToF32(w, row, c0, n, buf);
      for (int64_t v = 0; v < batch.m; ++v) {
        const float a = x[v * batch.ldx + i];
        float* yv = y + v * batch.ldy;
        for (int64_t c = 0; c < n; ++c) yv[c0 + c] += a * buf[c];
      }
    }
  }
}

void RowsDotRef(const StoredRowsView& w, const float* x, float* y, RowBatch batch) {
  std::vector<float> buf(static_cast<size_t>(w.cols));
  for (int64_t i = 0; i < w.rows; ++i) {
    const auto* row = static_cast<const uint8_t*>(w.data) + static_cast<size_t>(i) * w.row_stride;
    for (int64_t c0 = 0; c0 < w.cols; c0 += kChunk)
      ChunkToF32(w, row, c0, std::min(kChunk, w.cols - c0), buf.data() + c0);
    for (int64_t v = 0; v < batch.m; ++v) {
      const float* xv = x + v * batch.ldx;
      float acc = 0.0f;
      for (int64_t c = 0; c < w.cols; ++c) acc += buf[static_cast<size_t>(c)] * xv[c];
      y[v * batch.ldy + i] = acc;
    }
  }
}

}  // namespace internal
}  // namespace moerun
