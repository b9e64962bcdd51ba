// A scratch directory for one test process: "<system temp>/<prefix>_<pid>", created on first use and
// removed with everything in it when the process exits normally, so a ctest run (one process per
// test) leaves nothing behind in /tmp. The first call's prefix names the directory for the whole
// process. Thread-safe (a function-local static).
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace moerun::testing_support {

inline const std::filesystem::path& ProcessTempDir(const std::string& prefix) {
  struct Dir {
    std::filesystem::path path;
    ~Dir() {
      std::error_code ignored;  // a failed clean-up must not fail the test that already passed
      std::filesystem::remove_all(path, ignored);
    }
  };
  static const Dir dir{[&] {
    auto path = std::filesystem::temp_directory_path() / (prefix + "_" + std::to_string(::getpid()));
    std::filesystem::create_directories(path);
    return path;
  }()};
  return dir.path;
}

}  // namespace moerun::testing_support
