#include "tools/cli_util.h"

#include "io/atomic_file.h"

namespace moerun {

int ReportError(const Status& status) {
  std::fprintf(stderr, "moerun: error: %s\n", status.message().c_str());
  return 1;
}

StatusOr<DType> ParseWeightDType(const std::string& s) {
  if (s == "auto") return DType::kU8;
  if (s == "bf16") return DType::kBF16;
  if (s == "f32") return DType::kF32;
  return InvalidArgument("--weight-dtype '{}' is not one of auto, bf16, f32", s);
}

StatusOr<ActivationPrecision> ParsePrecision(const std::string& s) {
  if (s == "auto") return ActivationPrecision::kAuto;
  if (s == "f32") return ActivationPrecision::kF32;
  if (s == "bf16") return ActivationPrecision::kBf16;
  return InvalidArgument("--precision '{}' is not one of auto, f32, bf16", s);
}

StatusOr<MoeConfig> LoadMoeConfig(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return MoeConfig::FromJson(text, path);
}

}  // namespace moerun
