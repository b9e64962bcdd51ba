#include "tools/memory_budget.h"

#include "core/dtype.h"
#include "model/arch.h"

namespace moerun {

MemoryEstimate EstimateMemory(const ModelConfig& c, std::optional<WeightFormat> format,
                              const MemoryUse& use) {
  // auto keeps checkpoint rows in bf16 (docs/kernels.md); norms and 1-D tensors stay f32.
  const DType storage = format ? Traits(*format).storage : DType::kBF16;
  MemoryEstimate e;
  for (const auto& [name, shape] : ExpectedModelTensors(c)) {
    if (shape.size() == 2) {
      // Whole blocks per row, rounded up (a row that does not fill them stays in a wider format).
      const int64_t block = DTypeBlockSize(storage);
      const double row = static_cast<double>((shape[1] + block - 1) / block) * DTypeBlockBytes(storage);
      e.weights += static_cast<double>(shape[0]) * row;
    } else {
      double n = 4;
      for (int64_t d : shape) n *= static_cast<double>(d);
      e.weights += n;
    }
  }
  const double per_token =
      c.num_key_value_heads > 0
          ? static_cast<double>(c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim)
          : static_cast<double>(c.num_hidden_layers * (c.kv_lora_rank + c.qk_rope_head_dim));
  e.kv_cache = per_token * sizeof(float) * static_cast<double>(use.kv_tokens);
  e.outputs = 2.0 * sizeof(float) * static_cast<double>(use.logit_rows) *
              static_cast<double>(c.vocab_size);  // + copy
  // In-process: every replica's ranks share this process; under mpirun: this rank's TP share.
  const double share = use.mpi ? 1.0 / use.tp : use.dp;
  e.weights *= share;
  e.kv_cache *= share;
  return e;
}

Status CheckMemoryBudget(const MemoryEstimate& e, uint64_t budget) {
  if (budget == 0 || e.total() <= static_cast<double>(budget)) return Status::Ok();
  auto mb = [](double bytes) { return fmt::format("{:.1f} MB", bytes / 1e6); };
  return ResourceExhausted(
      "the run needs about {} (weights {} + KV cache {} + logits {}), more than --max-memory {} bytes ({})",
      mb(e.total()), mb(e.weights), mb(e.kv_cache), mb(e.outputs), budget, mb(static_cast<double>(budget)));
}

}  // namespace moerun
