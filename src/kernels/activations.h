// Activations prepared for a matmul kernel row: the kernel table says which ActFormat a row reads,
// and ActivationBuffer converts f32 activations [rows, K] into it, so no caller ever tests which
// path it got.
//   kF32        the f32 rows as given (no copy);
//   kBf16Pairs  rounded to bf16 (nearest even), K padded to even with a zero (vdpbf16ps pairs);
//   kQ8Block32  int8 per 32-element block with an f32 scale and the block's int sum
//               (kernels/quant_dot.h), K padded with zeros to a multiple of 32. Block-local
//               scales make a K slice's quantisation equal to the whole row's on 32-aligned
//               slices, so tensor-parallel K splits see the same integers as one rank.
// Thread safety: an ActivationBuffer is used by one caller at a time; the views it returns stay
// valid until its next Prepare of the same format.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/scratch_buffer.h"
#include "core/thread_pool.h"
#include "kernels/quant_dot.h"

namespace moerun {

enum class ActFormat : uint8_t { kF32, kBf16Pairs, kQ8Block32 };
const char* ActFormatName(ActFormat f);

// A read-only view of prepared activations: row r of the format's array starts at r * ld
// (elements of that array; for kQ8Block32 the q8 struct carries its own strides).
struct ActView {
  ActFormat format = ActFormat::kF32;
  const float* f32 = nullptr;      // kF32: [rows, ld]
  const uint16_t* bf16 = nullptr;  // kBf16Pairs: [rows, ld], ld even
  Q8Activations q8;                // kQ8Block32
  int64_t ld = 0;
};

// The view of rows [r0, ...) of `v`.
ActView OffsetRows(const ActView& v, int64_t r0);

class ActivationBuffer {
 public:
  // x: [rows, k] f32 with row stride ldx. Returns the view in `format` (kF32 views x itself).
  ActView Prepare(ActFormat format, const float* x, int64_t rows, int64_t k, int64_t ldx,
                  ThreadPool* pool = nullptr);
  // The same for the gathered rows x + src_row[r] * ldx, r in [0, src_row.size()) (src_row[r] >=
  // 0; kF32 copies them into a buffer of its own, ld = k). A row whose source an earlier row
  // already has is copied from that row's result, not converted again: the same values, once per
  // token instead of once per (token, expert) for the MoE's expert-ordered rows.
  ActView PrepareGathered(ActFormat format, const float* x, std::span<const int64_t> src_row, int64_t k,
                          int64_t ldx, ThreadPool* pool = nullptr);
  // Prepare of row_k.size() rows of different widths: row r is x[r * ldx, + row_k[r]) (row_k[r] <=
  // ldx), e.g. a routed expert's SwiGLU row beside a wider shared expert's. The view's stride fits
  // the widest row; past its own width (padded to the format's unit) a row's contents are
  // unspecified, so only a kernel reading at most row_k[r] elements may read row r.
  ActView PrepareRowWidths(ActFormat format, const float* x, std::span<const int64_t> row_k, int64_t ldx,
                           ThreadPool* pool = nullptr);
  // `rows` kQ8Block32 rows of width up to k (stride padded to 32), contents unspecified: for a
  // producer that quantises into them (MatmulJob::quantize_into), e.g. a gate/up loop making the
  // down projection's input; ViewOf gives the view of them. Valid until the next call on this buffer.
  Q8Rows ReserveQ8(int64_t rows, int64_t k);
  static ActView ViewOf(const Q8Rows& rows);

 private:
  // kBf16Pairs or kQ8Block32 of rows row(r), r in [0, rows), row r of width k_of(r) <= k; rows
  // with first[r] != r (when first is not empty) are copied from row first[r] < r.
  template <typename RowFn, typename WidthFn>
  ActView Convert(ActFormat format, int64_t rows, int64_t k, ThreadPool* pool, RowFn&& row, WidthFn&& k_of,
                  std::span<const int64_t> first);

  ScratchBuffer<float> f32_;  // kF32 gathered rows
  ScratchBuffer<uint16_t> bf16_;
  ScratchBuffer<int8_t> q_;
  ScratchBuffer<float> d_;
  ScratchBuffer<int32_t> sum_;
  // PrepareGathered's indices, kept so a decode step allocates nothing: the first row of each
  // source row (-1: none yet), and the first row with row r's source.
  std::vector<int64_t> first_of_src_, first_;
};

// The activation row x[0, k) as the kernel sees it, in double: exact for kF32, bf16-rounded for
// kBf16Pairs, dequantised int8 for kQ8Block32. The test oracle's input.
std::vector<double> ActivationsAsSeen(ActFormat format, const float* x, int64_t k);

}  // namespace moerun
