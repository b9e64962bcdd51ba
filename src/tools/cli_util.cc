#include "tools/cli_util.h"

#include "io/atomic_file.h"

namespace moerun {

CLI::Validator AtLeast(int64_t min) {
  return CLI::Validator(
      [min](std::string& s) -> std::string {
        int64_t v = 0;
        if (!CLI::detail::lexical_cast(s, v) || v < min)
          return fmt::format("must be an integer >= {}, got {}", min, s);
        return {};
      },
      fmt::format("INT>={}", min));
}

int ReportError(const Status& status) {
  std::fprintf(stderr, "moerun: error: %s\n", status.message().c_str());
  return 1;
}

StatusOr<MoeConfig> LoadMoeConfig(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return MoeConfig::FromJson(text, path);
}

}  // namespace moerun
