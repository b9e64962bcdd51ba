// The obviously-correct MoE block: the test oracle and the CLI's --check.
//
// A per-token loop in double precision over the weights exactly as stored in the checkpoint
// (no packing, no permutation, no threads), written independently of the MoE layer: router by a full
// sort of (score desc, id asc), experts by the textbook formula down(silu(gate x) * up x).
// It also reports, per token, the router's selection margin (the gap between the k-th chosen
// and the best unchosen selection score), so a comparison can tell a genuine routing bug from a
// near-tie that f32 and double legitimately break differently.
// Thread safety: pure function of its inputs.
#pragma once

#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/checkpoint.h"
#include "kernels/weight_format.h"
#include "moe/moe_config.h"

namespace moerun {

struct ReferenceMoeOutput {
  std::vector<double> out;      // [T, H] routed + shared
  std::vector<int32_t> ids;     // [T, k] chosen experts, best first
  std::vector<double> weights;  // [T, k]
  std::vector<double> margin;   // [T] selection margin (inf when every allowed expert is chosen)
};

StatusOr<ReferenceMoeOutput> ReferenceMoe(const MoeConfig& config, const TensorSource& ckpt,
                                          const std::string& prefix, const Tensor& x);

// The rtol an engine result on weights packed as `packed` meets against the reference on the
// weights as stored: f32 rounding only (1e-4); f16 weights 2e-3; bf16 2e-2 (the BF16 dot rounds
// activations to bf16, ~4e-3 each); block formats add their quantisation error (RMS per weight
// ~0.4% for 8-bit, ~2% for 6-bit, ~7% for 4-bit): 5e-2 q8_0, 0.1 q6_k, 0.5 for 4-bit.
double ReferenceTolerance(WeightFormat packed);

// Compares an engine result with the reference. Tokens whose margin is below `tie_margin` are
// skipped (counted in `near_ties`). Error is |got - want| / (atol + rtol * |want|) maximised.
// NaN and ±Inf never pass: a non-finite value in the engine output (of any token, skipped or not)
// or in the reference fails the comparison, and so does a comparison that skipped more than a
// tenth of the tokens (+1) as near-ties or compared none (e.g. a 1e30 input saturates every
// router score, so every token is a "tie" and nothing would be compared).
struct MoeComparison {
  double max_abs_diff = 0;         // over compared tokens
  double max_scaled_err = 0;       // max |got - want| / (atol + rtol * max|want of the token|)
  int64_t routing_mismatches = 0;  // compared tokens whose expert set differs
  int64_t near_ties = 0;
  int64_t compared = 0;              // tokens compared (tokens - near_ties)
  int64_t non_finite = 0;            // NaN / Inf values in the engine output, all tokens
  int64_t reference_non_finite = 0;  // NaN / Inf values in the reference output
  bool ok = false;                   // every count above in bounds and max_scaled_err <= 1
  // Why !ok, e.g. "12 NaN/Inf values in the output"; "" when ok.
  std::string Failure(int64_t tokens) const;
};
MoeComparison CompareWithReference(const ReferenceMoeOutput& ref, const float* out, const int32_t* ids,
                                   int64_t tokens, int64_t hidden, int64_t k, double atol, double rtol,
                                   double tie_margin = 1e-5);

}  // namespace moerun
