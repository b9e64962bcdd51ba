// The shared parts of the llama.cpp GGUF mappings (model/gguf_common.h): type rules, the row
// encoder, tokenizer.json <-> tokenizer.ggml.* (gpt2 byte-level BPE), the HF-named tensor view.
#include "model/gguf_common.h"

#include <cstring>
#include <type_traits>

#include "core/checked_math.h"

#if __has_include("core/block_quant.h")
#include "core/block_quant.h"
#define MOERUN_HAVE_BLOCK_QUANT 1
#endif

namespace moerun {
namespace gguf_internal {
namespace {

// f()'s Status, or OK when f returns nothing.
template <typename F>
Status StatusOfCall(F&& f) {
  if constexpr (std::is_same_v<std::invoke_result_t<F>, Status>) {
    return f();
  } else {
    f();
    return Status::Ok();
  }
}

}  // namespace

std::optional<std::pair<int64_t, std::string_view>> SplitBlockName(std::string_view name) {
  constexpr std::string_view kPrefix = "blk.";
  if (name.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  name.remove_prefix(kPrefix.size());
  const size_t dot = name.find('.');
  if (dot == 0 || dot == std::string_view::npos || dot > 6) return std::nullopt;
  int64_t layer = 0;
  for (char ch : name.substr(0, dot)) {
    if (ch < '0' || ch > '9') return std::nullopt;
    layer = layer * 10 + (ch - '0');
  }
  return std::make_pair(layer, name.substr(dot + 1));
}

uint32_t FileType(DType target) {
  switch (target) {
    case DType::kF32:
      return 0;  // ALL_F32
    case DType::kF16:
      return 1;  // MOSTLY_F16
    case DType::kQ4_0:
      return 2;  // MOSTLY_Q4_0
    case DType::kQ5_0:
      return 8;  // MOSTLY_Q5_0
    case DType::kQ5_1:
      return 9;  // MOSTLY_Q5_1
    case DType::kQ8_0:
      return 7;  // MOSTLY_Q8_0
    case DType::kQ4_K:
      return 14;  // MOSTLY_Q4_K_S
    case DType::kQ5_K:
      return 16;  // MOSTLY_Q5_K_S
    case DType::kQ6_K:
      return 18;  // MOSTLY_Q6_K
    case DType::kBF16:
      return 32;  // MOSTLY_BF16
    default:
      return 0;
  }
}

Status CheckTargetType(DType target, const std::string& out_path) {
  if (target != DType::kF32 && target != DType::kF16 && target != DType::kBF16 &&
      (!IsBlockDType(target) || IsLoadOnlyDType(target))) {
    return InvalidArgument(
        "{}: target type {} is not one of F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K", out_path,
        DTypeName(target));
  }
  return Status::Ok();
}

Status AddGeneralKvs(GgufWriter* w, std::string_view arch, const GgufWriteOptions& options) {
  RETURN_IF_ERROR(w->AddKv("general.architecture", GgufValue::String(std::string(arch))));
  RETURN_IF_ERROR(w->AddKv("general.type", GgufValue::String("model")));
  if (!options.name.empty()) RETURN_IF_ERROR(w->AddKv("general.name", GgufValue::String(options.name)));
  RETURN_IF_ERROR(w->AddKv("general.file_type", GgufValue::U32(FileType(options.target))));
  return w->AddKv("general.quantization_version", GgufValue::U32(2));
}

Status AppendRow(GgufWriter* w, DType type, const float* row, int64_t n, std::vector<uint8_t>* buf) {
  switch (type) {
    case DType::kF32:
      return w->Append(row, static_cast<size_t>(n) * sizeof(float));
    case DType::kF16:
    case DType::kBF16: {
      buf->resize(static_cast<size_t>(n) * 2);
      auto* out = reinterpret_cast<uint16_t*>(buf->data());
      for (int64_t i = 0; i < n; ++i) out[i] = type == DType::kF16 ? F32ToF16(row[i]) : F32ToBf16(row[i]);
      return w->Append(buf->data(), buf->size());
    }
    default:
#ifdef MOERUN_HAVE_BLOCK_QUANT
    {
      buf->resize(DTypeRowBytes(type, n));
      void* dst = buf->data();
      // core/block_quant.h's QuantizeRow(DType, const float*, int64_t, void*), whether it returns
      // a Status or nothing.
      RETURN_IF_ERROR(StatusOfCall([&] { return QuantizeRow(type, row, n, dst); }));
      return w->Append(buf->data(), buf->size());
    }
#else
      return Unimplemented("writing {} rows needs core/block_quant.h (QuantizeRow), not built in yet",
                           DTypeName(type));
#endif
  }
}

Status AppendTensor(GgufWriter* w, const Tensor& t, DType type, const std::string& name,
                    std::vector<float>* f32, std::vector<uint8_t>* buf, int64_t begin, int64_t end) {
  if (!IsFloat(t.dtype()) && !IsBlockDType(t.dtype())) {
    return InvalidArgument("tensor '{}' has dtype {}, expected a float or GGUF block type", name,
                           DTypeName(t.dtype()));
  }
  const int64_t cols = t.rank() == 0 ? 1 : t.dim(t.rank() - 1);
  const int64_t rows = cols == 0 ? 0 : t.numel() / cols;
  if (end < 0) end = rows;
  f32->resize(static_cast<size_t>(cols));
  const auto* p = static_cast<const uint8_t*>(t.raw());
  const size_t row_bytes = DTypeRowBytes(t.dtype(), cols);
  if (t.dtype() == type) {  // already in the target type (e.g. make-model's random blocks): as is
    return w->Append(p + static_cast<size_t>(begin) * row_bytes,
                     static_cast<size_t>(end - begin) * row_bytes);
  }
  for (int64_t r = begin; r < end; ++r) {
    ConvertToF32(t.dtype(), p + static_cast<size_t>(r) * row_bytes, f32->data(), static_cast<size_t>(cols));
    RETURN_IF_ERROR(AppendRow(w, type, f32->data(), cols, buf));
  }
  return Status::Ok();
}

StatusOr<const TensorMeta*> TensorPlan::Need(const std::string& hf_name) {
  const TensorMeta* m = hf_.Find(hf_name);
  if (m == nullptr) return NotFound("{}: tensor '{}' is missing", hf_.path(), hf_name);
  used_.insert(hf_name);
  return m;
}

Status TensorPlan::Copy(const std::string& gguf, const std::string& hf_name) {
  ASSIGN_OR_RETURN(const TensorMeta* m, Need(hf_name));
  plan_.push_back({gguf, TypeFor(gguf, m->shape), m->shape, PlannedTensor::Kind::kCopy, hf_name, {}, {}});
  return Status::Ok();
}

Status TensorPlan::CopyRowOrder(const std::string& gguf, const std::string& hf_name,
                                std::vector<int64_t> rows) {
  ASSIGN_OR_RETURN(const TensorMeta* m, Need(hf_name));
  if (m->shape.empty() || static_cast<int64_t>(rows.size()) != m->shape[0]) {
    return InvalidArgument("{}: tensor '{}' has shape {}, expected {} rows", hf_.path(), hf_name,
                           ShapeToString(m->shape), rows.size());
  }
  plan_.push_back({gguf,
                   TypeFor(gguf, m->shape),
                   m->shape,
                   PlannedTensor::Kind::kRowOrder,
                   hf_name,
                   std::move(rows),
                   {}});
  return Status::Ok();
}

Status TensorPlan::Experts(const std::string& gguf_prefix, const std::string& hf_prefix,
                           const std::string& gate, const std::string& up, const std::string& down,
                           int64_t n_experts) {
  const std::string fused_gate_up = hf_prefix + "experts.gate_up_proj",
                    fused_down = hf_prefix + "experts.down_proj";
  const bool fused = hf_.Has(fused_gate_up) || hf_.Has(fused_down);
  for (const auto& [gguf_part, hf_part] :
       {std::pair<const char*, const std::string&>{"ffn_gate_exps.weight", gate},
        {"ffn_up_exps.weight", up},
        {"ffn_down_exps.weight", down}}) {
    const std::string gname = gguf_prefix + gguf_part;
    const bool is_down = &hf_part == &down;
    if (fused) {
      ASSIGN_OR_RETURN(const TensorMeta* m, Need(is_down ? fused_down : fused_gate_up));
      if (m->shape.size() != 3 || m->shape[0] != n_experts || (!is_down && m->shape[1] % 2 != 0)) {
        return InvalidArgument("{}: tensor '{}' has shape {}, expected [{}, {}rows, cols]", hf_.path(),
                               m->name, ShapeToString(m->shape), n_experts, is_down ? "" : "2 x ");
      }
      const Shape shape{m->shape[0], is_down ? m->shape[1] : m->shape[1] / 2, m->shape[2]};
      const PlannedTensor::Kind kind =
          is_down ? PlannedTensor::Kind::kCopy
                  : (&hf_part == &gate ? PlannedTensor::Kind::kFusedGate : PlannedTensor::Kind::kFusedUp);
      plan_.push_back({gname, TypeFor(gname, shape), shape, kind, m->name, {}, {}});
      continue;
    }
    ASSIGN_OR_RETURN(const TensorMeta* m, Need(fmt::format("{}experts.0.{}.weight", hf_prefix, hf_part)));
    for (int64_t e = 1; e < n_experts; ++e) {
      ASSIGN_OR_RETURN(const TensorMeta* me,
                       Need(fmt::format("{}experts.{}.{}.weight", hf_prefix, e, hf_part)));
      if (me->shape != m->shape) {
        return InvalidArgument("{}: tensor '{}' has shape {}, expert 0 has {}", hf_.path(), me->name,
                               ShapeToString(me->shape), ShapeToString(m->shape));
      }
    }
    const Shape shape{n_experts, m->shape[0], m->shape[1]};
    plan_.push_back({gname,
                     TypeFor(gname, shape),
                     shape,
                     PlannedTensor::Kind::kExperts,
                     fmt::format("{}experts.{{}}.{}.weight", hf_prefix, hf_part),
                     {},
                     {}});
  }
  return Status::Ok();
}

Status TensorPlan::CheckAllUsed(std::string_view arch) const {
  for (const std::string& name : hf_.Names()) {
    if (used_.count(name) == 0) {
      return InvalidArgument("{}: tensor '{}' has no place in a llama.cpp {} GGUF of this config", hf_.path(),
                             name, arch);
    }
  }
  return Status::Ok();
}

Status TensorPlan::Write(GgufWriter* w) const {
  for (const PlannedTensor& t : plan_) RETURN_IF_ERROR(w->AddTensor(t.name, t.type, t.shape));
  std::vector<float> row;
  std::vector<uint8_t> buf;
  for (const PlannedTensor& t : plan_) {
    switch (t.kind) {
      case PlannedTensor::Kind::kCopy: {
        ASSIGN_OR_RETURN(Tensor x, hf_.Get(t.hf));
        RETURN_IF_ERROR(AppendTensor(w, x, t.type, t.hf, &row, &buf));
        break;
      }
      case PlannedTensor::Kind::kRowOrder: {
        ASSIGN_OR_RETURN(Tensor x, hf_.Get(t.hf));
        for (int64_t r : t.rows) RETURN_IF_ERROR(AppendTensor(w, x, t.type, t.hf, &row, &buf, r, r + 1));
        break;
      }
      case PlannedTensor::Kind::kExperts:
        for (int64_t e = 0; e < t.shape[0]; ++e) {
          const std::string name = fmt::vformat(t.hf, fmt::make_format_args(e));
          ASSIGN_OR_RETURN(Tensor x, hf_.Get(name));
          RETURN_IF_ERROR(AppendTensor(w, x, t.type, name, &row, &buf));
        }
        break;
      case PlannedTensor::Kind::kFusedGate:
      case PlannedTensor::Kind::kFusedUp: {
        ASSIGN_OR_RETURN(Tensor x, hf_.Get(t.hf));
        const int64_t i = t.shape[1], first = t.kind == PlannedTensor::Kind::kFusedGate ? 0 : i;
        for (int64_t e = 0; e < t.shape[0]; ++e) {
          RETURN_IF_ERROR(
              AppendTensor(w, x, t.type, t.hf, &row, &buf, e * 2 * i + first, e * 2 * i + first + i));
        }
        break;
      }
      case PlannedTensor::Kind::kCustom:
        RETURN_IF_ERROR(t.custom(w, &row, &buf));
        break;
    }
  }
  return Status::Ok();
}

Status AddCommonHparams(const GgufFile& f, std::string_view arch, OJson* j) {
  ASSIGN_OR_RETURN(int64_t vocab, GgufVocabSize(f, arch));
  (*j)["vocab_size"] = vocab;
  ASSIGN_OR_RETURN(int64_t hidden, f.GetInt(ArchKey(arch, "embedding_length")));
  (*j)["hidden_size"] = hidden;
  ASSIGN_OR_RETURN(int64_t layers, f.GetInt(ArchKey(arch, "block_count")));
  (*j)["num_hidden_layers"] = layers;
  ASSIGN_OR_RETURN(double eps, f.GetFloat(ArchKey(arch, "attention.layer_norm_rms_epsilon")));
  (*j)["rms_norm_eps"] = eps;
  ASSIGN_OR_RETURN(double theta, f.GetFloatOr(ArchKey(arch, "rope.freq_base"), 10000.0));
  (*j)["rope_theta"] = theta;
  ASSIGN_OR_RETURN(int64_t ctx, f.GetIntOr(ArchKey(arch, "context_length"), 4096));
  (*j)["max_position_embeddings"] = ctx;
  return Status::Ok();
}

Status AddTrailingFields(const GgufFile& f, OJson* j) {
  ASSIGN_OR_RETURN(int64_t bos, f.GetIntOr("tokenizer.ggml.bos_token_id", -1));
  ASSIGN_OR_RETURN(int64_t eos, f.GetIntOr("tokenizer.ggml.eos_token_id", -1));
  if (bos >= 0) (*j)["bos_token_id"] = bos;
  if (eos >= 0) (*j)["eos_token_id"] = eos;
  (*j)["tie_word_embeddings"] = f.FindInfo("output.weight") == nullptr;
  (*j)["hidden_act"] = "silu";
  return Status::Ok();
}

StatusOr<int64_t> GgufVocabSize(const GgufFile& f, std::string_view arch) {
  if (f.FindKey(ArchKey(arch, "vocab_size")) != nullptr) return f.GetInt(ArchKey(arch, "vocab_size"));
  if (const GgufTensorInfo* embd = f.FindInfo("token_embd.weight"); embd && embd->ne.size() == 2) {
    return static_cast<int64_t>(embd->ne[1]);
  }
  ASSIGN_OR_RETURN(std::vector<std::string> tokens, f.GetStringArray("tokenizer.ggml.tokens"));
  return static_cast<int64_t>(tokens.size());
}

Status CheckShape(const GgufFile& f, const std::string& name, const Shape& got, const Shape& want) {
  if (got == want) return Status::Ok();
  return InvalidArgument("{}: tensor '{}' has shape {} (ggml ne reversed), expected {} from the metadata",
                         f.path(), name, ShapeToString(got), ShapeToString(want));
}

StatusOr<Tensor> GgufHfSource::Get(std::string_view name) const {
  auto it = map_.find(name);
  if (it == map_.end()) {
    it = internal_.find(name);
    if (it == internal_.end()) return NotFound("{}: no tensor '{}' (as HF name)", file_->path(), name);
  }
  const Entry& e = it->second;
  switch (e.kind) {
    case Kind::kDirect:
      return file_->Get(e.gguf);
    case Kind::kExpert: {
      ASSIGN_OR_RETURN(Tensor all, file_->Get(e.gguf));
      Tensor row = all.Rows(e.expert, e.expert + 1);
      auto keep = std::make_shared<Tensor>(all);
      return Tensor::View(all.dtype(), e.meta.shape, row.raw(),
                          std::shared_ptr<const void>(keep, keep.get()));
    }
    case Kind::kRowOrder: {
      ASSIGN_OR_RETURN(Tensor stored, file_->Get(e.gguf));
      ASSIGN_OR_RETURN(Tensor out, Tensor::Zeros(stored.dtype(), stored.shape()));
      const int64_t cols = stored.rank() == 0 ? 1 : stored.dim(stored.rank() - 1);
      const size_t row_bytes = DTypeRowBytes(stored.dtype(), cols);
      const auto* src = static_cast<const uint8_t*>(stored.raw());
      auto* dst = static_cast<uint8_t*>(out.raw());
      for (size_t r = 0; r < e.rows.size(); ++r) {
        std::memcpy(dst + r * row_bytes, src + static_cast<size_t>(e.rows[r]) * row_bytes, row_bytes);
      }
      return out;
    }
    case Kind::kComputed:
      return e.compute();
  }
  return Internal("unreachable");
}

const TensorMeta* GgufHfSource::Find(std::string_view name) const {
  auto it = map_.find(name);
  if (it != map_.end()) return &it->second.meta;
  it = internal_.find(name);
  return it == internal_.end() ? nullptr : &it->second.meta;
}

std::vector<std::string> GgufHfSource::Names() const {
  std::vector<std::string> names;
  names.reserve(map_.size());
  for (const auto& [name, unused] : map_) names.push_back(name);
  return names;
}

void GgufHfSource::AddDirect(const GgufFile& f, const std::string& gguf, const std::string& hf, Map* map) {
  const TensorMeta* meta = f.Find(gguf);
  Entry e;
  e.meta = TensorMeta{hf, meta->dtype, meta->shape};
  e.gguf = gguf;
  map->emplace(hf, std::move(e));
}

Status GgufHfSource::AddExperts(const GgufFile& f, const std::string& gguf, const std::string& hf_pattern,
                                int64_t n_experts, Map* map) {
  const TensorMeta* meta = f.Find(gguf);
  if (meta->shape.size() != 3 || meta->shape[0] != n_experts) {
    return InvalidArgument("{}: tensor '{}' has shape {}, expected [{}, rows, cols] (one matrix per expert)",
                           f.path(), gguf, ShapeToString(meta->shape), n_experts);
  }
  for (int64_t x = 0; x < n_experts; ++x) {
    Entry e;
    e.meta = TensorMeta{fmt::vformat(hf_pattern, fmt::make_format_args(x)), meta->dtype,
                        Shape{meta->shape[1], meta->shape[2]}};
    e.kind = Kind::kExpert;
    e.gguf = gguf;
    e.expert = x;
    map->emplace(e.meta.name, std::move(e));
  }
  return Status::Ok();
}

Status MapGgufTensors(const GgufFile& f, int64_t n_layers, std::string_view arch, GgufHfSource::Map* map,
                      const LayerTensorMapper& layer_tensor) {
  for (const GgufTensorInfo& info : f.tensors()) {
    if (f.Find(info.name) == nullptr) return f.Get(info.name).status();  // Unimplemented naming its type
    bool mapped = false;
    for (const LayerName& g : kGlobalNames) {
      if (info.name != g.gguf) continue;
      GgufHfSource::AddDirect(f, info.name, std::string(g.hf), map);
      mapped = true;
    }
    const auto block = SplitBlockName(info.name);
    if (!mapped && block && block->first < n_layers) {
      ASSIGN_OR_RETURN(mapped, layer_tensor(info.name, block->first, block->second,
                                            fmt::format("model.layers.{}.", block->first)));
    }
    if (!mapped) {
      return InvalidArgument("{}: tensor '{}' has no Hugging Face counterpart in a {}-layer {} model",
                             f.path(), info.name, n_layers, arch);
    }
  }
  return Status::Ok();
}

}  // namespace gguf_internal

using namespace gguf_internal;  // NOLINT(build/namespaces,google-build-using-namespace)

DType GgufTensorType(const std::string& name, const Shape& shape, DType target) {
  if (shape.size() <= 1 || EndsWith(name, "_norm.weight") ||
      name.find(".ffn_gate_inp.") != std::string::npos ||
      name.find(".ffn_gate_inp_shexp.") != std::string::npos || !EndsWith(name, ".weight")) {
    return DType::kF32;
  }
  return GgufMatrixType(target, shape.back());
}

DType GgufMatrixType(DType target, int64_t cols) {
  DType t = target;
  if (IsBlockDType(t) && cols % DTypeBlockSize(t) != 0) {
    // llama.cpp's fallback (llama-quant.cpp): the K types' 32-element stand-in, then F16.
    t = KQuantRowFallback(t);
    if (cols % DTypeBlockSize(t) != 0) t = DType::kF16;
  }
  return t;
}

std::string GgufConversionWarning(const GgufFile& file, std::optional<WeightFormat> requested) {
  const std::string types = file.LoadOnlyTypesSummary();
  if (types.empty()) return "";
  return fmt::format("moerun: {}: {} tensors are not native here: dequantised at load into {}", file.path(),
                     types, WeightFormatName(requested.value_or(WeightFormat::kQ8_0)));
}

}  // namespace moerun
