#include "kernels/activations.h"

#include <algorithm>

namespace moerun {
namespace {

int64_t Pad(int64_t k, int64_t to) { return (k + to - 1) / to * to; }

template <typename Fn>
void ForRows(ThreadPool* pool, int64_t rows, Fn&& fn) {
  if (pool == nullptr || rows < 8) {
    for (int64_t r = 0; r < rows; ++r) fn(r);
    return;
  }
  pool->ParallelFor(rows, [&](int64_t r, int) { fn(r); });
}

}  // namespace

const char* ActFormatName(ActFormat f) {
  switch (f) {
    case ActFormat::kF32:
      return "f32";
    case ActFormat::kBf16Pairs:
      return "bf16";
    case ActFormat::kQ8Block32:
      return "q8";
  }
  return "?";
}

ActView OffsetRows(const ActView& v, int64_t r0) {
  ActView o = v;
  if (o.f32 != nullptr) o.f32 += r0 * v.ld;
  if (o.bf16 != nullptr) o.bf16 += r0 * v.ld;
  if (o.q8.q != nullptr) {
    o.q8.q += r0 * v.q8.ldq;
    o.q8.d += r0 * v.q8.ldb;
    o.q8.sum += r0 * v.q8.ldb;
  }
  return o;
}

ActView ActivationBuffer::Prepare(ActFormat format, const float* x, int64_t rows, int64_t k, int64_t ldx,
                                  ThreadPool* pool) {
  if (format == ActFormat::kF32) {
    ActView v;
    v.f32 = x;
    v.ld = ldx;
    return v;
  }
  return Convert(
      format, rows, k, pool, [&](int64_t r) { return x + r * ldx; }, [&](int64_t) { return k; }, {});
}

ActView ActivationBuffer::PrepareRowWidths(ActFormat format, const float* x, std::span<const int64_t> row_k,
                                           int64_t ldx, ThreadPool* pool) {
  const int64_t rows = static_cast<int64_t>(row_k.size());
  if (format == ActFormat::kF32) return Prepare(format, x, rows, ldx, ldx, pool);
  int64_t k = 0;
  for (int64_t w : row_k) k = std::max(k, w);
  return Convert(
      format, rows, k, pool, [&](int64_t r) { return x + r * ldx; }, [&](int64_t r) { return row_k[r]; }, {});
}

ActView ActivationBuffer::PrepareGathered(ActFormat format, const float* x, std::span<const int64_t> src_row,
                                          int64_t k, int64_t ldx, ThreadPool* pool) {
  const int64_t rows = static_cast<int64_t>(src_row.size());
  if (format == ActFormat::kF32) {
    float* dst = f32_.Get(static_cast<size_t>(std::max<int64_t>(1, rows * k)));
    ForRows(pool, rows, [&](int64_t r) { std::copy_n(x + src_row[r] * ldx, k, dst + r * k); });
    ActView v;
    v.f32 = dst;
    v.ld = k;
    return v;
  }
  // first[r]: the first row with row r's source; only those are converted, the others copied.
  int64_t n_src = 0;
  for (int64_t s : src_row) n_src = std::max(n_src, s + 1);
  first_of_src_.assign(static_cast<size_t>(n_src), -1);
  first_.resize(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    int64_t& f = first_of_src_[static_cast<size_t>(src_row[r])];
    if (f < 0) f = r;
    first_[static_cast<size_t>(r)] = f;
  }
  return Convert(
      format, rows, k, pool, [&](int64_t r) { return x + src_row[r] * ldx; }, [&](int64_t) { return k; },
      first_);
}

Q8Rows ActivationBuffer::ReserveQ8(int64_t rows, int64_t k) {
  const int64_t ldq = Pad(k, 32), ldb = ldq / 32;
  return Q8Rows{.q = q_.Get(static_cast<size_t>(std::max<int64_t>(1, rows * ldq))),
                .d = d_.Get(static_cast<size_t>(std::max<int64_t>(1, rows * ldb))),
                .sum = sum_.Get(static_cast<size_t>(std::max<int64_t>(1, rows * ldb))),
                .ldq = ldq,
                .ldb = ldb};
}

ActView ActivationBuffer::ViewOf(const Q8Rows& rows) {
  ActView v;
  v.format = ActFormat::kQ8Block32;
  v.q8 = rows.View();
  v.ld = rows.ldq;
  return v;
}

template <typename RowFn, typename WidthFn>
ActView ActivationBuffer::Convert(ActFormat format, int64_t rows, int64_t k, ThreadPool* pool, RowFn&& row,
                                  WidthFn&& k_of, std::span<const int64_t> first) {
  // Rows that repeat an earlier one (first[r] != r) are copied from it after the conversions.
  auto is_copy = [&](int64_t r) { return !first.empty() && first[static_cast<size_t>(r)] != r; };
  if (format == ActFormat::kBf16Pairs) {
    ActView v;
    v.format = format;
    const int64_t ld = Pad(k, 2);
    uint16_t* dst = bf16_.Get(static_cast<size_t>(std::max<int64_t>(1, rows * ld)));
    ForRows(pool, rows, [&](int64_t r) {
      if (is_copy(r)) return;
      const float* src = row(r);
      uint16_t* out = dst + r * ld;
      const int64_t k_r = k_of(r);
      for (int64_t i = 0; i < k_r; ++i) out[i] = F32ToBf16(src[i]);
      for (int64_t i = k_r; i < Pad(k_r, 2); ++i) out[i] = 0;
    });
    for (int64_t r = 0; r < rows; ++r)
      if (is_copy(r)) std::copy_n(dst + first[static_cast<size_t>(r)] * ld, ld, dst + r * ld);
    v.bf16 = dst;
    v.ld = ld;
    return v;
  }
  const Q8Rows out = ReserveQ8(rows, k);  // kQ8Block32
  int8_t* q = out.q;
  float* d = out.d;
  int32_t* s = out.sum;
  const int64_t ldq = out.ldq, ldb = out.ldb;
  ForRows(pool, rows, [&](int64_t r) {
    if (!is_copy(r)) QuantizeActivationRow(row(r), k_of(r), q + r * ldq, d + r * ldb, s + r * ldb);
  });
  for (int64_t r = 0; r < rows; ++r) {
    if (!is_copy(r)) continue;
    const int64_t f = first[static_cast<size_t>(r)];
    std::copy_n(q + f * ldq, ldq, q + r * ldq);
    std::copy_n(d + f * ldb, ldb, d + r * ldb);
    std::copy_n(s + f * ldb, ldb, s + r * ldb);
  }
  return ViewOf(out);
}

std::vector<double> ActivationsAsSeen(ActFormat format, const float* x, int64_t k) {
  std::vector<double> out(static_cast<size_t>(k));
  switch (format) {
    case ActFormat::kF32:
      for (int64_t i = 0; i < k; ++i) out[i] = x[i];
      break;
    case ActFormat::kBf16Pairs:
      for (int64_t i = 0; i < k; ++i) out[i] = Bf16ToF32(F32ToBf16(x[i]));
      break;
    case ActFormat::kQ8Block32: {
      const int64_t kp = Pad(k, 32);
      std::vector<int8_t> q(static_cast<size_t>(kp));
      std::vector<float> d(static_cast<size_t>(kp / 32));
      std::vector<int32_t> s(static_cast<size_t>(kp / 32));
      QuantizeActivationRow(x, k, q.data(), d.data(), s.data());
      for (int64_t i = 0; i < k; ++i) out[i] = static_cast<double>(d[i / 32]) * q[i];
      break;
    }
  }
  return out;
}

}  // namespace moerun
