// KernelFlags: the weight-format and kernel flags every runner takes (moe-layer, bench-moe and
// every model command): --weight-format auto or a WeightFormatChoices() name (--weight-dtype is
// the old spelling), --precision auto|f32|bf16 and --kernel ISA|ROW (kernels/kernel_table.h).
// Parsed and validated once, before any weight is read.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "comm/rank_agreement.h"
#include "core/status.h"
#include "kernels/kernel_table.h"
#include "kernels/weight_format.h"

namespace moerun {

struct KernelFlags {
  std::string weight_format = "auto";  // e.g. "q4_k"
  std::string precision = "auto";
  std::string kernel;  // "" = auto, e.g. "avx2" or "avx512vnni-q4_k"

  void Add(CLI::App* cmd, const std::string& default_format = "auto");
  // nullopt for "auto" (as stored).
  StatusOr<std::optional<WeightFormat>> Format() const;
  StatusOr<KernelPolicy> Policy() const;
  // The flags every rank must share (comm/rank_agreement.h): the weight format and precision
  // (--kernel may differ between hosts of different ISAs).
  void AddFields(RankFingerprint* fp) const;
};

}  // namespace moerun
