#include "moe/moe_reference.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <set>

#include "io/fp8_weights.h"
#include "moe/moe_weights.h"

namespace moerun {
namespace {

struct Matrix {  // a stored weight as f32 (exact for f32/bf16/f16), [rows, cols]; read as double
  int64_t rows = 0, cols = 0;
  std::vector<float> v;
  double at(int64_t r, int64_t c) const { return v[static_cast<size_t>(r * cols + c)]; }
};

StatusOr<Matrix> LoadMatrix(const TensorSource& ckpt, const std::string& name) {
  const TensorMeta* meta = ckpt.Find(name);
  Tensor f;
  if (meta != nullptr && meta->dtype == DType::kF8_E4M3) {  // FP8: dequantised with its scales
    ASSIGN_OR_RETURN(StoredWeight w, GetStoredWeight(ckpt, name));
    ASSIGN_OR_RETURN(f, w.ToF32());
  } else {
    ASSIGN_OR_RETURN(Tensor t, ckpt.Get(name));
    ASSIGN_OR_RETURN(f, t.ToF32());
  }
  Matrix m;
  m.rows = f.rank() == 1 ? 1 : f.dim(0);
  m.cols = f.rank() == 1 ? f.dim(0) : f.numel() / std::max<int64_t>(1, f.dim(0));
  m.v.assign(f.span<float>().begin(), f.span<float>().end());
  return m;
}

// Rows [r0, r0 + n) of a fused [E, R, C] tensor's slice e, as a matrix.
StatusOr<Matrix> LoadFusedSlice(const TensorSource& ckpt, const std::string& name, int64_t e, int64_t r0,
                                int64_t n) {
  ASSIGN_OR_RETURN(Tensor t, ckpt.Get(name));
  ASSIGN_OR_RETURN(Tensor f, t.ToF32());
  Matrix m{n, f.dim(2), {}};
  const float* base = f.data<float>() + (e * f.dim(1) + r0) * f.dim(2);
  m.v.assign(base, base + n * f.dim(2));
  return m;
}

std::vector<double> MatVec(const Matrix& w, const double* x) {
  std::vector<double> y(static_cast<size_t>(w.rows));
  for (int64_t r = 0; r < w.rows; ++r) {
    double s = 0;
    for (int64_t c = 0; c < w.cols; ++c) s += w.at(r, c) * x[c];
    y[static_cast<size_t>(r)] = s;
  }
  return y;
}

struct Mlp {
  Matrix gate, up, down;
  std::vector<double> Apply(const double* x) const {
    std::vector<double> g = MatVec(gate, x), u = MatVec(up, x);
    for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
    return MatVec(down, g.data());
  }
};

StatusOr<Mlp> LoadMlp(const TensorSource& ckpt, const std::string& p) {
  Mlp m;
  ASSIGN_OR_RETURN(m.gate, LoadMatrix(ckpt, p + "gate_proj.weight"));
  ASSIGN_OR_RETURN(m.up, LoadMatrix(ckpt, p + "up_proj.weight"));
  ASSIGN_OR_RETURN(m.down, LoadMatrix(ckpt, p + "down_proj.weight"));
  return m;
}

StatusOr<Mlp> LoadExpert(const MoeConfig& c, const TensorSource& ckpt, const std::string& prefix, int64_t e) {
  Mlp m;
  if (!ckpt.Has(prefix + "experts.gate_up_proj")) {
    ASSIGN_OR_RETURN(m.gate, LoadMatrix(ckpt, prefix + ExpertTensorName(c, e, ExpertMatrix::kGate)));
    ASSIGN_OR_RETURN(m.up, LoadMatrix(ckpt, prefix + ExpertTensorName(c, e, ExpertMatrix::kUp)));
    ASSIGN_OR_RETURN(m.down, LoadMatrix(ckpt, prefix + ExpertTensorName(c, e, ExpertMatrix::kDown)));
    return m;
  }
  const int64_t i = c.moe_intermediate_size;
  ASSIGN_OR_RETURN(m.gate, LoadFusedSlice(ckpt, prefix + "experts.gate_up_proj", e, 0, i));
  ASSIGN_OR_RETURN(m.up, LoadFusedSlice(ckpt, prefix + "experts.gate_up_proj", e, i, i));
  ASSIGN_OR_RETURN(m.down, LoadFusedSlice(ckpt, prefix + "experts.down_proj", e, 0, c.hidden_size));
  return m;
}

struct Choice {
  std::vector<int32_t> ids;
  std::vector<double> weights;
  double margin = std::numeric_limits<double>::infinity();
};

// Router in double: full sorts, written from the config semantics.
Choice Route(const MoeConfig& c, const std::vector<double>& logits, const std::vector<double>& bias) {
  const int64_t e = c.n_routed_experts;
  std::vector<double> score(static_cast<size_t>(e));
  if (c.scoring_func == ScoringFunc::kSoftmax) {
    const double mx = *std::max_element(logits.begin(), logits.end());
    double sum = 0;
    for (int64_t i = 0; i < e; ++i) sum += score[i] = std::exp(logits[i] - mx);
    for (double& s : score) s /= sum;
  } else {
    for (int64_t i = 0; i < e; ++i) score[i] = 1.0 / (1.0 + std::exp(-logits[i]));
  }
  std::vector<double> sel = score;
  if (c.topk_method == TopkMethod::kNoauxTc && !bias.empty()) {
    for (int64_t i = 0; i < e; ++i) sel[i] += bias[i];
  }
  std::vector<bool> allowed(static_cast<size_t>(e), true);
  if (c.topk_method != TopkMethod::kGreedy) {
    const int64_t per = e / c.n_group;
    std::vector<std::pair<double, int64_t>> groups;
    for (int64_t g = 0; g < c.n_group; ++g) {
      std::vector<double> v(sel.begin() + g * per, sel.begin() + (g + 1) * per);
      std::sort(v.begin(), v.end(), std::greater<>());
      groups.push_back({c.topk_method == TopkMethod::kNoauxTc ? v[0] + v[1] : v[0], g});
    }
    std::sort(groups.begin(), groups.end(),
              [](auto& a, auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
    std::set<int64_t> kept;
    for (int64_t n = 0; n < c.topk_group; ++n) kept.insert(groups[static_cast<size_t>(n)].second);
    for (int64_t i = 0; i < e; ++i) allowed[i] = kept.count(i / per) > 0;
  }
  std::vector<int64_t> order;
  for (int64_t i = 0; i < e; ++i)
    if (allowed[i]) order.push_back(i);
  std::sort(order.begin(), order.end(),
            [&](int64_t a, int64_t b) { return sel[a] != sel[b] ? sel[a] > sel[b] : a < b; });
  const int64_t k = c.num_experts_per_tok;
  Choice ch;
  for (int64_t j = 0; j < k; ++j) {
    ch.ids.push_back(static_cast<int32_t>(order[j]));
    ch.weights.push_back(score[order[j]]);
  }
  if (static_cast<int64_t>(order.size()) > k) ch.margin = sel[order[k - 1]] - sel[order[k]];
  const bool normalise = c.norm_topk_prob && k > 1;
  const double total = std::accumulate(ch.weights.begin(), ch.weights.end(), 0.0);
  for (double& w : ch.weights) {
    if (normalise) w /= total + 1e-20;
    if (!normalise || c.scale_after_norm) w *= c.routed_scaling_factor;
  }
  return ch;
}

}  // namespace

StatusOr<ReferenceMoeOutput> ReferenceMoe(const MoeConfig& c, const TensorSource& ckpt,
                                          const std::string& prefix, const Tensor& x_in) {
  ASSIGN_OR_RETURN(Tensor x, x_in.ToF32());
  const int64_t t_count = x.dim(0), h = c.hidden_size, e = c.n_routed_experts, k = c.num_experts_per_tok;
  ASSIGN_OR_RETURN(Matrix router, LoadMatrix(ckpt, prefix + "gate.weight"));
  std::vector<double> bias;
  if (c.topk_method == TopkMethod::kNoauxTc) {
    ASSIGN_OR_RETURN(Matrix b, LoadMatrix(ckpt, prefix + "gate.e_score_correction_bias"));
    bias.assign(b.v.begin(), b.v.end());
  }
  std::vector<Mlp> experts;
  for (int64_t i = 0; i < e; ++i) {
    ASSIGN_OR_RETURN(Mlp m, LoadExpert(c, ckpt, prefix, i));
    experts.push_back(std::move(m));
  }
  Mlp shared;
  Matrix shared_gate;
  const bool has_shared = c.shared_intermediate_size > 0;
  if (has_shared) {
    ASSIGN_OR_RETURN(shared, LoadMlp(ckpt, prefix + SharedExpertPrefix(c)));
    if (c.shared_expert_gated) {
      ASSIGN_OR_RETURN(shared_gate, LoadMatrix(ckpt, prefix + "shared_expert_gate.weight"));
    }
  }
  ReferenceMoeOutput r;
  r.out.assign(static_cast<size_t>(t_count * h), 0.0);
  for (int64_t t = 0; t < t_count; ++t) {
    std::vector<double> xt(x.data<float>() + t * h, x.data<float>() + (t + 1) * h);
    const Choice ch = Route(c, MatVec(router, xt.data()), bias);
    double* o = r.out.data() + t * h;
    for (int64_t j = 0; j < k; ++j) {
      const std::vector<double> y = experts[static_cast<size_t>(ch.ids[j])].Apply(xt.data());
      for (int64_t i = 0; i < h; ++i) o[i] += ch.weights[j] * y[i];
    }
    if (has_shared) {
      std::vector<double> y = shared.Apply(xt.data());
      double g = 1.0;
      if (c.shared_expert_gated) g = 1.0 / (1.0 + std::exp(-MatVec(shared_gate, xt.data())[0]));
      for (int64_t i = 0; i < h; ++i) o[i] += g * y[i];
    }
    r.ids.insert(r.ids.end(), ch.ids.begin(), ch.ids.end());
    r.weights.insert(r.weights.end(), ch.weights.begin(), ch.weights.end());
    r.margin.push_back(ch.margin);
  }
  return r;
}

namespace {

// Near-ties a comparison may skip: a tenth of the tokens, plus one.
int64_t MaxNearTies(int64_t tokens) { return tokens / 10 + 1; }

}  // namespace

MoeComparison CompareWithReference(const ReferenceMoeOutput& ref, const float* out, const int32_t* ids,
                                   int64_t tokens, int64_t hidden, int64_t k, double atol, double rtol,
                                   double tie_margin) {
  MoeComparison cmp;
  for (int64_t i = 0; i < tokens * hidden; ++i) {
    cmp.non_finite += !std::isfinite(out[i]);
    cmp.reference_non_finite += !std::isfinite(ref.out[static_cast<size_t>(i)]);
  }
  for (int64_t t = 0; t < tokens; ++t) {
    // A NaN margin (NaN scores) is no tie: the token is compared, and fails.
    if (ref.margin[static_cast<size_t>(t)] < tie_margin) {
      ++cmp.near_ties;
      continue;
    }
    ++cmp.compared;
    std::set<int32_t> a(ids + t * k, ids + (t + 1) * k),
        b(ref.ids.begin() + t * k, ref.ids.begin() + (t + 1) * k);
    if (a != b) ++cmp.routing_mismatches;
    double scale = 0;
    for (int64_t i = 0; i < hidden; ++i) scale = std::max(scale, std::fabs(ref.out[t * hidden + i]));
    for (int64_t i = 0; i < hidden; ++i) {
      const double d = std::fabs(out[t * hidden + i] - ref.out[t * hidden + i]);
      // std::max drops a NaN second argument: take it explicitly.
      cmp.max_abs_diff = std::isnan(d) ? d : std::max(cmp.max_abs_diff, d);
      const double e = d / (atol + rtol * scale);
      cmp.max_scaled_err = std::isnan(e) ? e : std::max(cmp.max_scaled_err, e);
      if (std::isnan(d)) break;
    }
  }
  cmp.ok = cmp.Failure(tokens).empty();
  return cmp;
}

std::string MoeComparison::Failure(int64_t tokens) const {
  if (non_finite > 0) return fmt::format("{} NaN/Inf values in the output", non_finite);
  if (reference_non_finite > 0)
    return fmt::format("{} NaN/Inf values in the reference output (the input or weights overflow)",
                       reference_non_finite);
  if (tokens > 0 && compared == 0)
    return fmt::format("no token compared (all {} are router near-ties)", tokens);
  if (near_ties > MaxNearTies(tokens))
    return fmt::format("{} of {} tokens are router near-ties (at most {} may be skipped)", near_ties, tokens,
                       MaxNearTies(tokens));
  if (routing_mismatches > 0) return fmt::format("{} tokens routed to other experts", routing_mismatches);
  if (!(max_scaled_err <= 1.0)) return fmt::format("max scaled error {:.3f} exceeds 1", max_scaled_err);
  return "";
}

double ReferenceTolerance(WeightFormat packed) {
  switch (packed) {
    case WeightFormat::kF32:
      return 1e-4;
    case WeightFormat::kF16:
      return 2e-3;
    case WeightFormat::kBF16:
      return 2e-2;
    case WeightFormat::kQ8_0:
      return 5e-2;
    case WeightFormat::kQ6_K:
      return 0.1;
    default:
      return 0.5;
  }
}

}  // namespace moerun
