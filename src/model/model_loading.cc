#include "model/model_loading.h"

#include <cctype>
#include <cmath>
#include <cstring>

#include "core/block_quant.h"

namespace moerun {

TensorTable DecoderTensorTable(
    const ModelConfig& c,
    const std::function<void(int64_t, const std::string&, TensorTable*)>& add_attention) {
  TensorTable e;
  const int64_t h = c.hidden_size;
  e.shapes["model.embed_tokens.weight"] = {c.vocab_size, h};
  if (!c.tie_word_embeddings) e.shapes["lm_head.weight"] = {c.vocab_size, h};
  e.shapes["model.norm.weight"] = {h};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    e.shapes[p + "input_layernorm.weight"] = {h};
    e.shapes[p + "post_attention_layernorm.weight"] = {h};
    add_attention(l, p + "self_attn.", &e);
    if (c.IsMoeLayer(l)) {
      e.moe_prefixes.insert(c.MoePrefix(l));
    } else {
      e.shapes[p + "mlp.gate_proj.weight"] = {c.intermediate_size, h};
      e.shapes[p + "mlp.up_proj.weight"] = {c.intermediate_size, h};
      e.shapes[p + "mlp.down_proj.weight"] = {h, c.intermediate_size};
    }
  }
  return e;
}
namespace {

// Layer index of "model.layers.N.*", or -1.
int64_t LayerOf(const std::string& name) {
  constexpr std::string_view kPrefix = "model.layers.";
  if (name.rfind(kPrefix, 0) != 0) return -1;
  int64_t n = 0;
  size_t i = kPrefix.size();
  if (i >= name.size() || !std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) n = n * 10 + (name[i++] - '0');
  return n;
}

}  // namespace

Status ValidateTensors(const ModelConfig& c, const TensorSource& ckpt, const TensorTable& e) {
  for (const auto& [name, shape] : e.shapes) {
    const TensorMeta* t = ckpt.Find(name);
    if (t == nullptr)
      return NotFound("{}: tensor '{}' is missing (expected shape {})", ckpt.path(), name,
                      ShapeToString(shape));
    if (t->shape != shape) {
      return InvalidArgument("{}: tensor '{}' has shape {}, expected {} from config.json", ckpt.path(), name,
                             ShapeToString(t->shape), ShapeToString(shape));
    }
    const bool dense = t->dtype == DType::kF32 || t->dtype == DType::kBF16 || t->dtype == DType::kF16;
    const bool matrix = shape.size() == 2;
    if (matrix && t->dtype == DType::kF8_E4M3) {
      RETURN_IF_ERROR(CheckFp8Scale(ckpt, *t));
    } else if (!dense && !(IsBlockDType(t->dtype) && matrix)) {
      return InvalidArgument(
          "{}: tensor '{}' has dtype {}, expected F32, BF16, F16 (or a GGUF block type or F8_E4M3 "
          "with its scale_inv for a matrix)",
          ckpt.path(), name, DTypeName(t->dtype));
    }
  }
  for (const std::string& stored : ckpt.Names()) {
    // An FP8 weight's scales go wherever the weight goes (table, MoE prefix, MTP layer).
    const std::string name = Fp8WeightOfScale(ckpt, stored).value_or(stored);
    if (e.shapes.count(name)) continue;
    const int64_t layer = LayerOf(name);
    if (layer >= c.num_hidden_layers) continue;  // multi-token-prediction layers (V3): not used
    if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;
    bool in_moe = false;
    for (const std::string& p : e.moe_prefixes) in_moe |= name.rfind(p, 0) == 0;
    if (in_moe) continue;  // validated by MoeWeights::Load
    return InvalidArgument("{}: unexpected tensor '{}' (not used by the config: {})", ckpt.path(), stored,
                           c.Summary());
  }
  return Status::Ok();
}

StatusOr<std::vector<float>> LoadVector(const TensorSource& ckpt, const std::string& name) {
  ASSIGN_OR_RETURN(Tensor t, ckpt.Get(name));
  ASSIGN_OR_RETURN(Tensor f, t.ToF32());
  return std::vector<float>(f.span<float>().begin(), f.span<float>().end());
}

StatusOr<PackedWeight> PackAs(const StoredWeight& w, std::optional<WeightFormat> requested, int64_t c0,
                              int64_t c1, int64_t align_k) {
  if (w.values().rank() != 2) {
    return InvalidArgument("weight must be 2-D [out, in], got {}", ShapeToString(w.shape()));
  }
  if (c1 < 0) c1 = w.cols();
  const WeightFormat f = ResolveWeightFormat(requested, w.dtype(), align_k > 0 ? align_k : c1 - c0);
  return PackedWeight::Pack(w, f, c0, c1);
}

ResidentForm ResidentFormOf(std::string_view name, DType stored, std::span<const int64_t> shape,
                            std::optional<WeightFormat> requested) {
  auto has = [&](std::string_view part) { return name.find(part) != std::string_view::npos; };
  double elements = 1;
  for (int64_t d : shape) elements *= static_cast<double>(d);
  const int64_t cols = shape.empty() ? 1 : shape.back();
  auto bytes_as = [&](DType t) {  // the whole tensor held in dtype t
    return elements / static_cast<double>(DTypeBlockSize(t)) * static_cast<double>(DTypeBlockBytes(t));
  };
  if (name.ends_with("weight_scale_inv")) return {"folded into its weight", 0};
  const bool router = has("mlp.gate.weight") || has("block_sparse_moe.gate.weight") ||
                      has("shared_expert_gate") || has("ffn_gate_inp");
  if (shape.size() <= 1 || router) return {"f32", 4 * elements};
  if (has("kv_b_proj") || has("attn_kv_b") || has("attn_k_b") || has("attn_v_b")) {  // MLA's row-op halves
    const DType held = StoredRowsDType(stored, requested, cols);
    return {std::string(DTypeName(held)), bytes_as(held)};
  }
  if (has("embed_tokens") || has("token_embd")) {
    return {fmt::format("{} (mapped)", DTypeName(stored)), bytes_as(stored)};
  }
  const WeightFormat f = ResolveWeightFormat(requested, stored, cols);
  return {WeightFormatName(f), elements * Traits(f).bits_per_weight / 8};
}

StatusOr<PackedWeight> LoadPacked(const TensorSource& ckpt, const std::string& name,
                                  std::optional<WeightFormat> requested) {
  ASSIGN_OR_RETURN(StoredWeight w, GetStoredWeight(ckpt, name));
  return PackAs(w, requested);
}

DType StoredRowsDType(DType stored, std::optional<WeightFormat> requested, int64_t cols) {
  if (stored != DType::kF8_E4M3 && !IsLoadOnlyDType(stored)) return stored;
  return Traits(ResolveWeightFormat(requested, stored, cols)).storage;
}

StatusOr<StoredRows> MakeStoredRowsFor(const StoredWeight& w, std::optional<WeightFormat> requested,
                                       int64_t cols) {
  return MakeStoredRows(StoredRowsDType(w.dtype(), requested, cols), cols);
}

void AppendWeightRows(const StoredWeight& w, int64_t r0, int64_t r1, StoredRows* out) {
  if (!w.block_scaled() && out->dtype == w.dtype()) {
    const size_t row_bytes = DTypeRowBytes(w.dtype(), w.cols());
    for (int64_t i = r0; i < r1; ++i) {
      AppendRow(out, static_cast<const uint8_t*>(w.values().raw()) + static_cast<size_t>(i) * row_bytes);
    }
    return;
  }
  std::vector<float> row(static_cast<size_t>(w.cols()));
  std::vector<uint8_t> bytes(out->row_bytes);
  const size_t stored_row_bytes = DTypeRowBytes(w.dtype(), w.cols());
  for (int64_t i = r0; i < r1; ++i) {
    if (w.block_scaled()) {
      w.ReadRow(i, 0, w.cols(), row.data());
    } else {  // a load-only block dtype (Q3_K, ...): dequantised exactly
      ConvertToF32(w.dtype(),
                   static_cast<const uint8_t*>(w.values().raw()) + static_cast<size_t>(i) * stored_row_bytes,
                   row.data(), row.size());
    }
    switch (out->dtype) {
      case DType::kF32:
        std::memcpy(bytes.data(), row.data(), bytes.size());
        break;
      case DType::kBF16:
        for (size_t k = 0; k < row.size(); ++k) {
          const uint16_t h = F32ToBf16(row[k]);
          std::memcpy(bytes.data() + 2 * k, &h, 2);
        }
        break;
      case DType::kF16:
        for (size_t k = 0; k < row.size(); ++k) {
          const uint16_t h = F32ToF16(row[k]);
          std::memcpy(bytes.data() + 2 * k, &h, 2);
        }
        break;
      default:  // a block format (MakeStoredRowsFor checked the row length)
        QuantizeRow(out->dtype, row.data(), w.cols(), bytes.data());
        break;
    }
    AppendRow(out, bytes.data());
  }
}

Status CheckFinite(const TensorSource& ckpt, std::string_view prefix) {
  for (const std::string& name : ckpt.Names()) {
    if (!name.starts_with(prefix)) continue;
    ASSIGN_OR_RETURN(Tensor t, ckpt.Get(name));
    if (t.dtype() == DType::kF8_E4M3) {  // its scales are F32 tensors, checked on their own
      if (const int64_t i = FindF8NaN(t); i >= 0) {
        return InvalidArgument("{}: tensor '{}' holds an F8_E4M3 NaN at flat index {}", ckpt.path(), name, i);
      }
      continue;
    }
    const bool dense = t.dtype() == DType::kF32 || t.dtype() == DType::kBF16 || t.dtype() == DType::kF16;
    if (!dense && !IsBlockDType(t.dtype())) continue;
    ASSIGN_OR_RETURN(Tensor f, t.ToF32());  // block types: dequantised (a NaN/Inf f16 scale shows up)
    const std::span<const float> v = f.span<float>();
    for (size_t i = 0; i < v.size(); ++i) {
      if (!std::isfinite(v[i])) {
        return InvalidArgument("{}: tensor '{}' holds {} at flat index {}", ckpt.path(), name, v[i], i);
      }
    }
  }
  return Status::Ok();
}

}  // namespace moerun
