// Portable matmul tasks: scalar loops over the packed layouts, f32 accumulation in k order (float
// formats), or the reference quant_dot tile (block formats). Row 0 of every format in the table.
#include <algorithm>

#include "kernels/matmul_impl.h"

namespace moerun::internal {
namespace {

float Lane(const PackedWeight& w, int64_t block, int64_t k, int lane) {
  switch (w.format()) {
    case WeightFormat::kF32:
      return w.f32_block(block)[k * 16 + lane];
    case WeightFormat::kF16:
      return F16ToF32(w.u16_block(block)[k * 16 + lane]);
    default:  // kBF16
      return Bf16ToF32(w.u16_block(block)[(k / 2) * 32 + lane * 2 + (k % 2)]);
  }
}

// acc[16] = sum_k x[k] * block[k][lane] for one 16-row block.
void DotBlock(const PackedWeight& w, int64_t block, const float* x, int64_t k_begin, int64_t k_end,
              float acc[16]) {
  std::fill(acc, acc + 16, 0.0f);
  for (int64_t k = k_begin; k < k_end; ++k) {
    for (int l = 0; l < 16; ++l) acc[l] += x[k] * Lane(w, block, k, l);
  }
}

}  // namespace

void MatmulTaskRef(const MatmulJob& job, int64_t m0, int64_t m1, int64_t b0, int64_t b1) {
  const PackedWeight& w = *job.w;
  const int64_t n = w.out_features();
  float acc[16], up[16];
  for (int64_t m = m0; m < m1; ++m) {
    const float* x = job.x.f32 + m * job.x.ld;
    if (job.epilogue == Epilogue::kStore) {
      for (int64_t b = b0; b < b1; ++b) {
        DotBlock(w, b, x, job.k_begin, job.KEnd(), acc);
        float* y = job.YAt(m, b * 16);
        for (int l = 0; l < 16 && b * 16 + l < n; ++l) y[l] = acc[l];
      }
    } else {
      for (int64_t b = b0; b < b1; b += 2) {
        DotBlock(w, b, x, job.k_begin, job.KEnd(), acc);
        DotBlock(w, b + 1, x, job.k_begin, job.KEnd(), up);
        const int64_t col0 = (b / 2) * 16;
        float* y = job.YAt(m, col0);
        for (int l = 0; l < 16 && col0 + l < n; ++l) y[l] = SiluRef(acc[l]) * up[l];
      }
    }
  }
}

template <QuantDotTileFn Tile, SwiGluRowFn SwiGlu>
void MatmulTaskQuant(const MatmulJob& job, int64_t m0, int64_t m1, int64_t b0, int64_t b1) {
  const PackedWeight& w = *job.w;
  const int64_t n = w.out_features();
  const DType storage = Traits(w.format()).storage;
  const int64_t kb0 = job.k_begin / 32, kb1 = (job.KEnd() + 31) / 32;
  const int64_t rows = m1 - m0;
  float gate[kMatmulMaxChunkRows * 16], up[kMatmulMaxChunkRows * 16];
  const int step = job.epilogue == Epilogue::kSwiGlu ? 2 : 1;
  for (int64_t b = b0; b < b1; b += step) {
    const int64_t col0 = BlockCol0(job, b);
    const int valid = static_cast<int>(std::min<int64_t>(16, n - col0));
    if (valid <= 0) continue;
    Tile(storage, w.block(b), w.row_bytes(), valid, job.x.q8, m0, m1, kb0, kb1, gate);
    if (step == 2) Tile(storage, w.block(b + 1), w.row_bytes(), valid, job.x.q8, m0, m1, kb0, kb1, up);
    for (int64_t i = 0; i < rows; ++i) {
      float* y = job.YAt(m0 + i, col0);
      const float* g = gate + i * 16;
      if (step == 1) {
        std::copy(g, g + valid, y);
      } else {
        SwiGlu(g, up + i * 16, y, valid);
      }
    }
  }
}

template <QuantDotStreamsFn Streams, SwiGluRowFn SwiGlu>
void MatmulStreamsQuant(std::span<const MatmulStream> streams) {
  assert(!streams.empty() && streams.size() <= static_cast<size_t>(kQuantDotMaxStreams));
  const MatmulJob& first = *streams[0].job;
  const DType storage = Traits(first.w->format()).storage;
  const int64_t kb0 = first.k_begin / 32, kb1 = (first.KEnd() + 31) / 32;
  const int step = first.epilogue == Epilogue::kSwiGlu ? 2 : 1;
  float gate[kQuantDotMaxStreams][16], up[kQuantDotMaxStreams][16];
  for (int64_t i = 0;; i += step) {
    QuantDotStream lanes[kQuantDotMaxStreams];
    const MatmulStream* owner[kQuantDotMaxStreams];
    int64_t cols[kQuantDotMaxStreams];
    int n = 0;
    bool any = false;
    for (const MatmulStream& s : streams) {
      const int64_t b = s.b0 + i;
      if (b >= s.b1) continue;
      any = true;
      const int64_t col0 = BlockCol0(*s.job, b);
      const int valid = static_cast<int>(std::min<int64_t>(16, s.job->w->out_features() - col0));
      if (valid <= 0) continue;
      lanes[n] = {s.job->w->block(b), valid, &s.job->x.q8, 0, gate[n]};
      owner[n] = &s;
      cols[n++] = col0;
    }
    if (!any) return;
    if (n == 0) continue;
    Streams(storage, lanes, n, kb0, kb1);
    if (step == 2) {
      for (int j = 0; j < n; ++j) {
        lanes[j].w = owner[j]->job->w->block(owner[j]->b0 + i + 1);
        lanes[j].out = up[j];
      }
      Streams(storage, lanes, n, kb0, kb1);
    }
    for (int j = 0; j < n; ++j) {
      float* y = owner[j]->job->YAt(0, cols[j]);
      if (step == 1) {
        std::copy(gate[j], gate[j] + lanes[j].n_rows, y);
      } else {
        SwiGlu(gate[j], up[j], y, lanes[j].n_rows);
      }
    }
  }
}

template void MatmulStreamsQuant<QuantDotStreamsAvx2, SwiGluRowAvx2>(std::span<const MatmulStream>);
template void MatmulStreamsQuant<QuantDotStreamsAvx2NoPrefetch, SwiGluRowAvx2>(std::span<const MatmulStream>);
template void MatmulStreamsQuant<QuantDotStreamsAvx512Vnni, SwiGluRowAvx512>(std::span<const MatmulStream>);
template void MatmulStreamsQuant<QuantDotStreamsAvx512VnniNoPrefetch, SwiGluRowAvx512>(
    std::span<const MatmulStream>);

template void MatmulTaskQuant<QuantDotTileRef, SwiGluRowRef>(const MatmulJob&, int64_t, int64_t, int64_t,
                                                             int64_t);
template void MatmulTaskQuant<QuantDotTileAvx2, SwiGluRowAvx2>(const MatmulJob&, int64_t, int64_t, int64_t,
                                                               int64_t);
template void MatmulTaskQuant<QuantDotTileAvx512Vnni, SwiGluRowAvx512>(const MatmulJob&, int64_t, int64_t,
                                                                       int64_t, int64_t);
template void MatmulTaskQuant<QuantDotTileAvx2NoPrefetch, SwiGluRowAvx2>(const MatmulJob&, int64_t, int64_t,
                                                                         int64_t, int64_t);
template void MatmulTaskQuant<QuantDotTileAvx512VnniNoPrefetch, SwiGluRowAvx512>(const MatmulJob&, int64_t,
                                                                                 int64_t, int64_t, int64_t);

}  // namespace moerun::internal
