#include "tools/kernel_flags.h"

namespace moerun {

void KernelFlags::Add(CLI::App* cmd, const std::string& default_format) {
  weight_format = default_format;
  cmd->add_option("--weight-format,--weight-dtype", weight_format,
                  "Packed weights: auto (as stored)|" + WeightFormatChoices() + "; quantised at load")
      ->capture_default_str();
  cmd->add_option("--precision", precision,
                  "Activation rounding for bf16 weights: auto|f32|bf16 (f32 also keeps MLA's block-format "
                  "kv_b on f32 activations)");
  cmd->add_option(
      "--kernel", kernel,
      "Force kernel rows: an ISA (ref|avx2|avx512|avx512vnni) or a row name (see `moerun --version`)");
}

StatusOr<std::optional<WeightFormat>> KernelFlags::Format() const {
  if (weight_format == "auto") return std::optional<WeightFormat>();
  if (auto f = ParseWeightFormat(weight_format)) return std::optional<WeightFormat>(*f);
  return InvalidArgument("--weight-format '{}' is not one of auto|{}", weight_format, WeightFormatChoices());
}

StatusOr<KernelPolicy> KernelFlags::Policy() const {
  KernelPolicy p;
  p.forced = kernel;
  if (precision == "auto") {
    p.precision = ActivationPrecision::kAuto;
  } else if (precision == "f32") {
    p.precision = ActivationPrecision::kF32;
  } else if (precision == "bf16") {
    p.precision = ActivationPrecision::kBf16;
  } else {
    return InvalidArgument("--precision '{}' is not one of auto, f32, bf16", precision);
  }
  RETURN_IF_ERROR(ValidateKernelPolicy(p));
  return p;
}

void KernelFlags::AddFields(RankFingerprint* fp) const {
  fp->Add("--weight-format", weight_format);
  fp->Add("--precision", precision);
}

}  // namespace moerun
