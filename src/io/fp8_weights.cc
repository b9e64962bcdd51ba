#include "io/fp8_weights.h"

namespace moerun {
namespace {

constexpr std::string_view kScaleSuffix = "_scale_inv";

}  // namespace

std::string ScaleInvName(std::string_view weight) { return std::string(weight) + std::string(kScaleSuffix); }

std::optional<std::string> Fp8WeightOfScale(const TensorSource& src, std::string_view name) {
  if (name.size() <= kScaleSuffix.size() || !name.ends_with(kScaleSuffix)) return std::nullopt;
  std::string weight(name.substr(0, name.size() - kScaleSuffix.size()));
  const TensorMeta* w = src.Find(weight);
  if (w == nullptr || w->dtype != DType::kF8_E4M3) return std::nullopt;
  return weight;
}

Status CheckFp8Scale(const TensorSource& src, const TensorMeta& weight) {
  if (weight.shape.size() != 2) {
    return InvalidArgument("{}: FP8 tensor '{}' has shape {}, expected a 2-D matrix", src.path(), weight.name,
                           ShapeToString(weight.shape));
  }
  const std::string scale_name = ScaleInvName(weight.name);
  const TensorMeta* s = src.Find(scale_name);
  const Shape want = BlockScaleShape(weight.shape[0], weight.shape[1], kFp8BlockSize, kFp8BlockSize);
  if (s == nullptr) {
    return NotFound("{}: FP8 tensor '{}' has no '{}' (its per-{}x{}-block scales, shape {})", src.path(),
                    weight.name, scale_name, kFp8BlockSize, kFp8BlockSize, ShapeToString(want));
  }
  if (s->dtype != DType::kF32 && s->dtype != DType::kBF16 && s->dtype != DType::kF16) {
    return InvalidArgument("{}: tensor '{}' has dtype {}, expected F32 (or BF16, F16)", src.path(),
                           scale_name, DTypeName(s->dtype));
  }
  if (s->shape != want) {
    return InvalidArgument("{}: tensor '{}' has shape {}, expected {}: ceil({} / {}) x {} blocks", src.path(),
                           scale_name, ShapeToString(s->shape), ShapeToString(want),
                           ShapeToString(weight.shape), kFp8BlockSize, kFp8BlockSize);
  }
  return Status::Ok();
}

StatusOr<StoredWeight> GetStoredWeight(const TensorSource& src, const std::string& name) {
  ASSIGN_OR_RETURN(Tensor values, src.Get(name));
  if (values.dtype() != DType::kF8_E4M3) {
    if (values.rank() != 2) {
      return InvalidArgument("{}: tensor '{}' has shape {}, expected a 2-D matrix", src.path(), name,
                             ShapeToString(values.shape()));
    }
    return StoredWeight(std::move(values));
  }
  const TensorMeta* meta = src.Find(name);
  if (meta == nullptr) return NotFound("{}: no tensor '{}'", src.path(), name);
  RETURN_IF_ERROR(CheckFp8Scale(src, *meta));
  ASSIGN_OR_RETURN(Tensor scale, src.Get(ScaleInvName(name)));
  StatusOr<StoredWeight> w =
      StoredWeight::BlockScaled(std::move(values), std::move(scale), kFp8BlockSize, kFp8BlockSize, name);
  if (!w.ok()) return w.status().WithContext(src.path());
  return w;
}

int64_t FindF8NaN(const Tensor& t) {
  const uint8_t* p = t.data<uint8_t>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    if ((p[i] & 0x7fu) == 0x7fu) return i;
  }
  return -1;
}

}  // namespace moerun
