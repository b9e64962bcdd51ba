#include "kernels/packed_weight.h"

#include "core/block_quant.h"
#include "core/checked_math.h"
#include "kernels/block_interleave.h"

namespace moerun {
namespace {

Status CheckSource(const StoredWeight& w, const char* what) {
  if (w.values().rank() != 2)
    return InvalidArgument("{} weight must be 2-D [out, in], got {}", what, ShapeToString(w.shape()));
  if (w.block_scaled()) return Status::Ok();  // StoredWeight::BlockScaled checked it
  if (w.dtype() == DType::kF8_E4M3) {
    return InvalidArgument("{} weight is F8_E4M3 {} without its block scales", what,
                           ShapeToString(w.shape()));
  }
  if (!FormatOfDType(w.dtype()) && !IsBlockDType(w.dtype())) {
    return InvalidArgument("{} weight has dtype {}, expected a float or GGUF block type", what,
                           DTypeName(w.dtype()));
  }
  return Status::Ok();
}

}  // namespace

Status PackedWeight::Allocate(WeightFormat format, int64_t n_blocks, int64_t k) {
  const WeightFormatTraits& t = Traits(format);
  if (k % t.k_alignment != 0) {
    return InvalidArgument("{} needs rows of a multiple of {} elements, got {}", t.name, t.k_alignment, k);
  }
  format_ = format;
  n_blocks_ = n_blocks;
  k_ = k;
  switch (format) {
    case WeightFormat::kF32:
      block_bytes_ = static_cast<size_t>(k) * 64;
      break;
    case WeightFormat::kF16:
      block_bytes_ = static_cast<size_t>(k) * 32;
      break;
    case WeightFormat::kBF16:
      block_bytes_ = static_cast<size_t>((k + 1) / 2) * 64;
      break;
    default:
      row_bytes_ = DTypeRowBytes(t.storage, k);
      block_bytes_ = row_bytes_ * 16;
      break;
  }
  const int64_t dims[] = {n_blocks, static_cast<int64_t>(block_bytes_)};
  ASSIGN_OR_RETURN(uint64_t bytes, CheckedProduct(dims, "packed weight"));
  bytes_ = AllocateStreamedBytes(bytes);  // zeroed: padding rows stay zero blocks
  return Status::Ok();
}

void PackedWeight::PutRow(const float* row, int64_t block, int lane) {
  uint8_t* base = bytes_.get() + static_cast<size_t>(block) * block_bytes_;
  switch (format_) {
    case WeightFormat::kF32: {
      auto* dst = reinterpret_cast<float*>(base);
      for (int64_t k = 0; k < k_; ++k) dst[k * 16 + lane] = row[k];
      return;
    }
    case WeightFormat::kF16: {
      auto* dst = reinterpret_cast<uint16_t*>(base);
      for (int64_t k = 0; k < k_; ++k) dst[k * 16 + lane] = F32ToF16(row[k]);
      return;
    }
    case WeightFormat::kBF16: {
      auto* dst = reinterpret_cast<uint16_t*>(base);
      for (int64_t k = 0; k < k_; ++k) dst[(k / 2) * 32 + lane * 2 + (k % 2)] = F32ToBf16(row[k]);
      return;
    }
    default: {
      std::vector<uint8_t> raw(row_bytes_);
      QuantizeRow(Traits(format_).storage, row, k_, raw.data());
      PutRawRow(raw.data(), block, lane);
      return;
    }
  }
}

void PackedWeight::PutRawRow(const uint8_t* row, int64_t block, int lane) {
  uint8_t* base = bytes_.get() + static_cast<size_t>(block) * block_bytes_;
  const DType t = Traits(format_).storage;  // a block format: interleaved
  const size_t bb = DTypeBlockBytes(t), cb = InterleavedColumnBytes(t);
  for (int64_t kb = 0, nb = k_ / DTypeBlockSize(t); kb < nb; ++kb) {
    InterleaveBlock(t, row + static_cast<size_t>(kb) * bb, lane, base + static_cast<size_t>(kb) * cb);
  }
}

void PackedWeight::RawRow(int64_t n, uint8_t* row) const {
  int64_t b;
  int lane;
  Locate(n, &b, &lane);
  const DType t = Traits(format_).storage;  // a block format: interleaved
  const size_t bb = DTypeBlockBytes(t), cb = InterleavedColumnBytes(t);
  for (int64_t kb = 0, nb = k_ / DTypeBlockSize(t); kb < nb; ++kb) {
    DeinterleaveBlock(t, block(b) + static_cast<size_t>(kb) * cb, lane, row + static_cast<size_t>(kb) * bb);
  }
}

Status PackedWeight::PackRows(const StoredWeight& weight, int64_t c0, int64_t c1, int which, int stride) {
  if (weight.block_scaled()) {  // FP8: one dequantised row at a time
    std::vector<float> row(static_cast<size_t>(c1 - c0));
    for (int64_t n = 0; n < weight.rows(); ++n) {
      weight.ReadRow(n, c0, c1, row.data());
      PutRow(row.data(), stride * (n / 16) + which, static_cast<int>(n % 16));
    }
    return Status::Ok();
  }
  const Tensor& src = weight.values();
  const DType sd = src.dtype();
  const int64_t cols = src.dim(1), sbs = DTypeBlockSize(sd);
  const size_t src_row_bytes = DTypeRowBytes(sd, cols);
  const bool raw = Traits(format_).storage == sd && IsBlockDType(sd) && c0 % sbs == 0;
  // Block sources are dequantised whole-row (blocks span the slice edges), then sliced.
  std::vector<float> row(static_cast<size_t>(IsBlockDType(sd) ? cols : c1 - c0));
  for (int64_t n = 0; n < src.dim(0); ++n) {
    const uint8_t* s = src.data<uint8_t>() + static_cast<size_t>(n) * src_row_bytes;
    const int64_t block = stride * (n / 16) + which;
    const int lane = static_cast<int>(n % 16);
    if (raw) {
      PutRawRow(s + static_cast<size_t>(c0 / sbs) * DTypeBlockBytes(sd), block, lane);
    } else if (IsBlockDType(sd)) {
      ConvertToF32(sd, s, row.data(), row.size());
      PutRow(row.data() + c0, block, lane);
    } else {
      ConvertToF32(sd, s + static_cast<size_t>(c0) * DTypeSize(sd), row.data(), row.size());
      PutRow(row.data(), block, lane);
    }
  }
  return Status::Ok();
}

StatusOr<PackedWeight> PackedWeight::Pack(const StoredWeight& w, WeightFormat format, int64_t col_begin,
                                          int64_t col_end) {
  RETURN_IF_ERROR(CheckSource(w, "linear"));
  if (col_end < 0) col_end = w.cols();
  if (col_begin < 0 || col_begin > col_end || col_end > w.cols()) {
    return InvalidArgument("column range [{}, {}) outside the {} input columns", col_begin, col_end,
                           w.cols());
  }
  PackedWeight p;
  p.n_ = w.rows();
  RETURN_IF_ERROR(p.Allocate(format, (w.rows() + 15) / 16, col_end - col_begin));
  RETURN_IF_ERROR(p.PackRows(w, col_begin, col_end, 0, 1));
  return p;
}

StatusOr<PackedWeight> PackedWeight::PackGateUp(const StoredWeight& gate, const StoredWeight& up,
                                                WeightFormat format) {
  RETURN_IF_ERROR(CheckSource(gate, "gate"));
  RETURN_IF_ERROR(CheckSource(up, "up"));
  if (gate.shape() != up.shape()) {
    return InvalidArgument("gate {} and up {} shapes differ", ShapeToString(gate.shape()),
                           ShapeToString(up.shape()));
  }
  PackedWeight p;
  p.n_ = gate.rows();
  p.gate_up_ = true;
  RETURN_IF_ERROR(p.Allocate(format, 2 * ((gate.rows() + 15) / 16), gate.cols()));
  RETURN_IF_ERROR(p.PackRows(gate, 0, gate.cols(), 0, 2));
  RETURN_IF_ERROR(p.PackRows(up, 0, up.cols(), 1, 2));
  return p;
}

void PackedWeight::Locate(int64_t n, int64_t* block, int* lane) const {
  if (gate_up_) {
    const int which = n >= n_ ? 1 : 0;
    const int64_t r = n - which * n_;
    *block = 2 * (r / 16) + which;
    *lane = static_cast<int>(r % 16);
  } else {
    *block = n / 16;
    *lane = static_cast<int>(n % 16);
  }
}

std::vector<double> PackedWeight::Row(int64_t n) const {
  int64_t b;
  int lane;
  Locate(n, &b, &lane);
  std::vector<double> out(static_cast<size_t>(k_));
  switch (format_) {
    case WeightFormat::kF32:
      for (int64_t k = 0; k < k_; ++k) out[k] = f32_block(b)[k * 16 + lane];
      break;
    case WeightFormat::kF16:
      for (int64_t k = 0; k < k_; ++k) out[k] = F16ToF32(u16_block(b)[k * 16 + lane]);
      break;
    case WeightFormat::kBF16:
      for (int64_t k = 0; k < k_; ++k) out[k] = Bf16ToF32(u16_block(b)[(k / 2) * 32 + lane * 2 + (k % 2)]);
      break;
    default: {
      std::vector<uint8_t> raw(row_bytes_);
      RawRow(n, raw.data());
      std::vector<float> f(static_cast<size_t>(k_));
      DequantizeRow(Traits(format_).storage, raw.data(), f.data(), k_);
      for (int64_t k = 0; k < k_; ++k) out[k] = f[k];
    }
  }
  return out;
}

double PackedWeight::At(int64_t n, int64_t k) const { return Row(n)[static_cast<size_t>(k)]; }

}  // namespace moerun
