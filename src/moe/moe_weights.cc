#include "moe/moe_weights.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <mutex>
#include <optional>
#include <set>

#include "io/fp8_weights.h"

namespace moerun {
namespace {

bool IsFloat(DType t) { return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16; }

bool HasFusedExperts(const TensorSource& ckpt, const std::string& prefix) {
  return ckpt.Has(prefix + "experts.gate_up_proj") || ckpt.Has(prefix + "experts.down_proj");
}

// Replaces the per-expert specs by the transformers-v5 fused ones.
std::vector<MoeTensorSpec> FusedSpecs(const MoeConfig& c, std::vector<MoeTensorSpec> specs) {
  std::erase_if(specs, [](const MoeTensorSpec& s) { return s.name.rfind("experts.", 0) == 0; });
  const int64_t e = c.n_routed_experts, h = c.hidden_size, i = c.moe_intermediate_size;
  specs.push_back({"experts.gate_up_proj", {e, 2 * i, h}});
  specs.push_back({"experts.down_proj", {e, h, i}});
  return specs;
}

Status CheckTensor(const TensorSource& ckpt, const std::string& full, const Shape& want) {
  const TensorMeta* entry = ckpt.Find(full);
  if (entry == nullptr) {
    return NotFound("tensor '{}' is missing from {} (expected shape {})", full, ckpt.path(),
                    ShapeToString(want));
  }
  if (entry->shape != want) {
    return InvalidArgument("tensor '{}' has shape {}, expected {} from the config", full,
                           ShapeToString(entry->shape), ShapeToString(want));
  }
  // Matrices may come as GGUF blocks (Q4_K ...) or block-scaled FP8 (2-D only: DeepSeek-V3's
  // experts); vectors (router bias) must be floats.
  if (entry->dtype == DType::kF8_E4M3 && want.size() == 2) return CheckFp8Scale(ckpt, *entry);
  if (!IsFloat(entry->dtype) && !(IsBlockDType(entry->dtype) && want.size() >= 2)) {
    return InvalidArgument(
        "tensor '{}' has dtype {}, expected F32, BF16, F16 (or a GGUF block type, or F8_E4M3 with its "
        "scale_inv, for a matrix)",
        full, DTypeName(entry->dtype));
  }
  return Status::Ok();
}

// Every expected tensor present with its shape; nothing unexpected under the prefix.
Status Validate(const std::vector<MoeTensorSpec>& specs, const TensorSource& ckpt, const std::string& prefix,
                const MoeConfig& c) {
  std::set<std::string> expected;
  for (const MoeTensorSpec& s : specs) {
    RETURN_IF_ERROR(CheckTensor(ckpt, prefix + s.name, s.shape));
    expected.insert(prefix + s.name);
  }
  for (const std::string& name : ckpt.Names()) {
    if (name.rfind(prefix, 0) != 0 || expected.count(name)) continue;
    // The scales of an expected FP8 weight (CheckTensor checked them).
    if (std::optional<std::string> w = Fp8WeightOfScale(ckpt, name); w && expected.count(*w)) continue;
    return InvalidArgument("unexpected tensor '{}' in {}: the config ({}) does not use it", name, ckpt.path(),
                           c.Summary());
  }
  return Status::Ok();
}

// Slice `index` of a 3-D tensor [n, a, b] as a 2-D view [a, b].
Tensor Slice(const Tensor& t, int64_t index) {
  Tensor rows = t.Rows(index, index + 1);
  return Tensor::View(rows.dtype(), {t.dim(1), t.dim(2)}, rows.raw(), nullptr);
}

}  // namespace

std::string ExpertTensorName(const MoeConfig& c, int64_t expert, ExpertMatrix m) {
  const ExpertTensorNames& n = c.expert_names;
  const std::string& name = m == ExpertMatrix::kGate ? n.gate : m == ExpertMatrix::kUp ? n.up : n.down;
  return fmt::format("experts.{}.{}.weight", expert, name);
}

std::string SharedExpertPrefix(const MoeConfig& c) {
  return c.shared_expert_gated || c.model_type == "qwen2_moe" ? "shared_expert." : "shared_experts.";
}

std::vector<MoeTensorSpec> ExpectedMoeTensors(const MoeConfig& c) {
  const int64_t e = c.n_routed_experts, h = c.hidden_size, i = c.moe_intermediate_size;
  std::vector<MoeTensorSpec> specs;
  specs.push_back({"gate.weight", {e, h}});
  if (c.topk_method == TopkMethod::kNoauxTc) specs.push_back({"gate.e_score_correction_bias", {e}});
  for (int64_t x = 0; x < e; ++x) {
    specs.push_back({ExpertTensorName(c, x, ExpertMatrix::kGate), {i, h}});
    specs.push_back({ExpertTensorName(c, x, ExpertMatrix::kUp), {i, h}});
    specs.push_back({ExpertTensorName(c, x, ExpertMatrix::kDown), {h, i}});
  }
  if (c.shared_intermediate_size > 0) {
    const std::string p = SharedExpertPrefix(c);
    const int64_t s = c.shared_intermediate_size;
    specs.push_back({p + "gate_proj.weight", {s, h}});
    specs.push_back({p + "up_proj.weight", {s, h}});
    specs.push_back({p + "down_proj.weight", {h, s}});
    if (c.shared_expert_gated) specs.push_back({"shared_expert_gate.weight", {1, h}});
  }
  return specs;
}

void DownAlignment::Merge(const DownAlignment& o) {
  routed = std::max(routed, o.routed);
  shared = std::max(shared, o.shared);
}

DownAlignment MoeDownAlignment(const MoeConfig& c, const TensorSource& ckpt, const std::string& prefix,
                               std::optional<WeightFormat> requested) {
  auto align = [&](const std::string& name, int64_t width) -> int64_t {
    const TensorMeta* meta = ckpt.Find(name);
    if (meta == nullptr || width <= 0) return 1;
    return Traits(ResolveWeightFormat(requested, meta->dtype, width)).k_alignment;
  };
  DownAlignment a;
  a.routed = align(HasFusedExperts(ckpt, prefix) ? prefix + "experts.down_proj"
                                                 : prefix + ExpertTensorName(c, 0, ExpertMatrix::kDown),
                   c.moe_intermediate_size);
  if (c.shared_intermediate_size > 0)
    a.shared = align(prefix + SharedExpertPrefix(c) + "down_proj.weight", c.shared_intermediate_size);
  return a;
}

StatusOr<MoeWeights> MoeWeights::Load(const MoeConfig& c, const TensorSource& ckpt, const std::string& prefix,
                                      std::optional<WeightFormat> requested, ThreadPool* pool,
                                      MoeShard shard) {
  if (shard.expert_end < 0) shard.expert_end = c.n_routed_experts;
  if (shard.i_end < 0) shard.i_end = c.moe_intermediate_size;
  if (shard.s_end < 0) shard.s_end = c.shared_intermediate_size;
  const bool fused = HasFusedExperts(ckpt, prefix);
  std::vector<MoeTensorSpec> specs = ExpectedMoeTensors(c);
  if (fused) specs = FusedSpecs(c, std::move(specs));
  RETURN_IF_ERROR(Validate(specs, ckpt, prefix, c));

  MoeWeights w;
  ASSIGN_OR_RETURN(StoredWeight router_stored, GetStoredWeight(ckpt, prefix + "gate.weight"));
  ASSIGN_OR_RETURN(w.router, router_stored.ToF32());
  ASSIGN_OR_RETURN(w.router_packed, PackedWeight::Pack(w.router, WeightFormat::kF32));
  if (c.topk_method == TopkMethod::kNoauxTc) {
    ASSIGN_OR_RETURN(Tensor bias, ckpt.Get(prefix + "gate.e_score_correction_bias"));
    ASSIGN_OR_RETURN(Tensor bias32, bias.ToF32());
    w.score_bias.assign(bias32.span<float>().begin(), bias32.span<float>().end());
  }

  const int64_t e = c.n_routed_experts;
  Tensor fused_gate_up, fused_down;
  if (fused) {
    ASSIGN_OR_RETURN(fused_gate_up, ckpt.Get(prefix + "experts.gate_up_proj"));
    ASSIGN_OR_RETURN(fused_down, ckpt.Get(prefix + "experts.down_proj"));
  }
  // Gate/up and down may be stored differently (a Q4_K GGUF keeps 1408-wide down rows in Q8_0).
  const DType stored_up =
      fused ? fused_gate_up.dtype() : ckpt.Find(prefix + ExpertTensorName(c, 0, ExpertMatrix::kGate))->dtype;
  const DType stored_down =
      fused ? fused_down.dtype() : ckpt.Find(prefix + ExpertTensorName(c, 0, ExpertMatrix::kDown))->dtype;
  w.format = ResolveWeightFormat(requested, stored_up, c.hidden_size);
  const WeightFormat down_format = ResolveWeightFormat(requested, stored_down, shard.i_end - shard.i_begin);
  w.gate_up.resize(static_cast<size_t>(e));
  w.down.resize(static_cast<size_t>(e));

  // Pack the experts in parallel; the first error wins.
  std::mutex mu;
  Status first_error;
  auto pack_expert = [&](int64_t x, int) {
    if (x < shard.expert_begin || x >= shard.expert_end) return;
    Status s = [&]() -> Status {
      StoredWeight gate_w, up_w, down_w;
      if (fused) {
        const int64_t i = c.moe_intermediate_size;
        Tensor gu = Slice(fused_gate_up, x);  // [2I, H]: gate rows then up rows
        gate_w = StoredWeight(gu.Rows(0, i));
        up_w = StoredWeight(gu.Rows(i, 2 * i));
        down_w = StoredWeight(Slice(fused_down, x));
      } else {
        // A view of the stored expert (FP8: with its scales); only this rank's slice is read.
        ASSIGN_OR_RETURN(gate_w, GetStoredWeight(ckpt, prefix + ExpertTensorName(c, x, ExpertMatrix::kGate)));
        ASSIGN_OR_RETURN(up_w, GetStoredWeight(ckpt, prefix + ExpertTensorName(c, x, ExpertMatrix::kUp)));
        ASSIGN_OR_RETURN(down_w, GetStoredWeight(ckpt, prefix + ExpertTensorName(c, x, ExpertMatrix::kDown)));
      }
      ASSIGN_OR_RETURN(w.gate_up[static_cast<size_t>(x)],
                       PackedWeight::PackGateUp(gate_w.Rows(shard.i_begin, shard.i_end),
                                                up_w.Rows(shard.i_begin, shard.i_end), w.format));
      ASSIGN_OR_RETURN(w.down[static_cast<size_t>(x)],
                       PackedWeight::Pack(down_w, down_format, shard.i_begin, shard.i_end));
      return Status::Ok();
    }();
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(mu);
      if (first_error.ok()) first_error = s;
    }
  };
  ParallelForOn(pool, e, pack_expert);
  RETURN_IF_ERROR(first_error);

  if (c.shared_intermediate_size > 0) {
    const std::string p = prefix + SharedExpertPrefix(c);
    ASSIGN_OR_RETURN(StoredWeight gate_w, GetStoredWeight(ckpt, p + "gate_proj.weight"));
    ASSIGN_OR_RETURN(StoredWeight up_w, GetStoredWeight(ckpt, p + "up_proj.weight"));
    ASSIGN_OR_RETURN(StoredWeight down_w, GetStoredWeight(ckpt, p + "down_proj.weight"));
    const WeightFormat up_format = ResolveWeightFormat(requested, gate_w.dtype(), c.hidden_size);
    const WeightFormat sdown_format =
        ResolveWeightFormat(requested, down_w.dtype(), shard.s_end - shard.s_begin);
    ASSIGN_OR_RETURN(w.shared_gate_up,
                     PackedWeight::PackGateUp(gate_w.Rows(shard.s_begin, shard.s_end),
                                              up_w.Rows(shard.s_begin, shard.s_end), up_format));
    ASSIGN_OR_RETURN(w.shared_down, PackedWeight::Pack(down_w, sdown_format, shard.s_begin, shard.s_end));
    if (c.shared_expert_gated) {
      ASSIGN_OR_RETURN(Tensor g, ckpt.Get(prefix + "shared_expert_gate.weight"));
      ASSIGN_OR_RETURN(Tensor g32, g.ToF32());
      w.shared_gate.assign(g32.span<float>().begin(), g32.span<float>().end());
    }
  }
  return w;
}

float SharedGateValue(const MoeWeights& w, const float* x_row, int64_t hidden) {
  if (w.shared_gate.empty()) return 1.0f;
  float dot = 0.0f;
  for (int64_t c = 0; c < hidden; ++c) dot += x_row[c] * w.shared_gate[static_cast<size_t>(c)];
  return 1.0f / (1.0f + std::exp(-dot));
}

}  // namespace moerun
