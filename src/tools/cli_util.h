// Small helpers shared by the moerun subcommands: error printing, option parsing, loading.
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "core/status.h"
#include "io/checkpoint.h"
#include "moe/moe_config.h"

namespace moerun {

// A flag validator: an integer >= min ("--ctx-size: must be an integer >= 0, got -5"). Unlike
// CLI::NonNegativeNumber it names the bound plainly and refuses non-integers.
CLI::Validator AtLeast(int64_t min);

// Prints "moerun: error: <message>" and returns 1.
int ReportError(const Status& status);

// Reads and parses a config.json.
StatusOr<MoeConfig> LoadMoeConfig(const std::string& path);

inline double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace moerun
