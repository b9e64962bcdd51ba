#include "moe/moe_part.h"

#include <algorithm>

namespace moerun {

MoePart PartOps::Make(ReductionState state, int64_t rows, int64_t cols, bool zeroed) const {
  MoePart p;
  p.state = std::move(state);
  p.rows = rows;
  p.cols = cols;
  if (deterministic_) {
    // Reuse a released buffer: fresh multi-megabyte vectors cost a page fault per 4 KiB.
    if (!scratch_->spare_fixed.empty()) {
      p.fixed = std::move(scratch_->spare_fixed.back());
      scratch_->spare_fixed.pop_back();
    }
    if (zeroed) {
      p.fixed.assign(static_cast<size_t>(rows * cols), 0);
    } else {  // every row is overwritten by Accumulate(..., first = true) on the pool
      p.fixed.resize(static_cast<size_t>(rows * cols));
    }
  } else {
    p.f32.assign(static_cast<size_t>(rows * cols), 0.0f);
  }
  return p;
}

void PartOps::Release(MoePart* part) const {
  if (part->fixed.capacity() > 0 && scratch_->spare_fixed.size() < 4)
    scratch_->spare_fixed.push_back(std::move(part->fixed));
  part->fixed = {};
}

void PartOps::AccumulateColumns(MoePart* part, int64_t row, int64_t c0, int64_t c1,
                                std::span<const SlotOutput> slots, bool first) const {
  const int64_t h = part->cols, n = c1 - c0;
  if (deterministic_) {
    Fixed128* dst = part->fixed.data() + row * h + c0;
    if (first) std::fill_n(dst, n, Fixed128{0});
    // Every (slot, K-block) term of the columns in one exact accumulation.
    constexpr size_t kInline = 128;
    size_t n_terms = 0;
    for (const SlotOutput& s : slots) n_terms += static_cast<size_t>(s.nb);
    FixedTermRow inline_terms[kInline];
    std::vector<FixedTermRow> heap_terms;
    FixedTermRow* terms = inline_terms;
    if (n_terms > kInline) {
      heap_terms.resize(n_terms);
      terms = heap_terms.data();
    }
    size_t i = 0;
    for (const SlotOutput& s : slots)
      for (int64_t b = 0; b < s.nb; ++b) terms[i++] = {s.y + b * h + c0, s.weight};
    AccumulateFixed(dst, n, {terms, n_terms});
  } else {
    float* dst = part->f32.data() + row * h + c0;
    for (const SlotOutput& s : slots)
      for (int64_t c = 0; c < n; ++c) dst[c] += s.weight * s.y[c0 + c];
  }
}

void PartOps::AccumulateRows(MoePart* part, const SlotsOfRow& slots_of, bool first) const {
  const int64_t rows = part->rows, h = part->cols;
  if (rows == 0 || h == 0) return;
  // Tasks of whole rows when there are enough of them; else each row cut into column chunks of at
  // least 256 (64-byte aligned) so every thread gets work.
  const int64_t threads = pool_ != nullptr ? pool_->size() : 1;
  const int64_t want = 4 * threads;
  int64_t chunks = rows >= want ? 1 : std::min((want + rows - 1) / rows, std::max<int64_t>(1, h / 256));
  const int64_t width = ((h + chunks - 1) / chunks + 15) / 16 * 16;
  chunks = (h + width - 1) / width;
  const int64_t rows_per_task = chunks > 1 ? 1 : std::max<int64_t>(1, rows / want);
  const int64_t row_tasks = (rows + rows_per_task - 1) / rows_per_task;
  auto run = [&](int64_t task, int) {
    std::vector<SlotOutput> slots;
    const int64_t r0 = task / chunks * rows_per_task, c0 = task % chunks * width;
    for (int64_t r = r0; r < std::min(rows, r0 + rows_per_task); ++r) {
      slots.clear();
      slots_of(r, &slots);
      AccumulateColumns(part, r, c0, std::min(h, c0 + width), slots, first);
    }
  };
  // A token or two in fast mode (decode) is a few microseconds of adds: less than waking a peer.
  constexpr int64_t kInlineElements = 4096;
  const bool inline_adds = !deterministic_ && rows * h <= kInlineElements;
  ParallelForOn(inline_adds ? nullptr : pool_, row_tasks * chunks, run);
}

void PartOps::Add(MoePart* dst, const MoePart& src) const {
  for (size_t i = 0; i < dst->f32.size(); ++i) dst->f32[i] += src.f32[i];
  if (dst->fixed.empty()) return;
  const int64_t h = dst->cols;
  ParallelForRows(pool_, dst->rows, [&](int64_t t) {
    for (int64_t c = t * h; c < (t + 1) * h; ++c) dst->fixed[c] += src.fixed[c];
  });
}

}  // namespace moerun
