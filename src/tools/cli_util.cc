#include "tools/cli_util.h"

#include "io/atomic_file.h"

namespace moerun {

int ReportError(const Status& status) {
  std::fprintf(stderr, "moerun: error: %s\n", status.message().c_str());
  return 1;
}

StatusOr<MoeConfig> LoadMoeConfig(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return MoeConfig::FromJson(text, path);
}

}  // namespace moerun
