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

void PartOps::Accumulate(MoePart* part, int64_t row, std::span<const SlotOutput> slots, bool first) const {
  const int64_t h = part->cols;
  if (deterministic_) {
    if (first) std::fill_n(part->fixed.data() + row * h, h, Fixed128{0});
    // Every (slot, K-block) term of the row in one exact accumulation.
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
      for (int64_t b = 0; b < s.nb; ++b) terms[i++] = {s.y + b * h, s.weight};
    AccumulateFixed(part->fixed.data() + row * h, h, {terms, n_terms});
  } else {
    float* dst = part->f32.data() + row * h;
    for (const SlotOutput& s : slots)
      for (int64_t c = 0; c < h; ++c) dst[c] += s.weight * s.y[c];
  }
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
