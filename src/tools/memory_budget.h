// --max-memory: an estimate of what a model command will hold (weights in the load format, the KV
// cache of the tokens it will cache, the logits it keeps) made from config.json alone, before anything is
// loaded, and the refusal when it exceeds the budget — instead of an OOM kill half-way through.
// The estimate is of this process: in-process ranks hold every replica; an mpirun rank holds its
// 1 / tp share of one replica.
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/status.h"
#include "kernels/weight_format.h"
#include "model/model_config.h"

namespace moerun {

struct MemoryEstimate {
  double weights = 0, kv_cache = 0, outputs = 0;
  double total() const { return weights + kv_cache + outputs; }
};

struct MemoryUse {
  int64_t kv_tokens = 0;   // positions cached at once over all sequences
  int64_t logit_rows = 0;  // rows of logits held until written (`logits`)
  int tp = 1, dp = 1;
  bool mpi = false;  // one rank per process
};

MemoryEstimate EstimateMemory(const ModelConfig& c, std::optional<WeightFormat> format, const MemoryUse& use);

// OK when `budget` is 0 (no budget) or the estimate fits; otherwise ResourceExhausted with the
// estimate, its parts and the budget.
Status CheckMemoryBudget(const MemoryEstimate& e, uint64_t budget);

}  // namespace moerun
