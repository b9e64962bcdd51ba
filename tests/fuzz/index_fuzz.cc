// libFuzzer target: model.safetensors.index.json text (ParseCheckpointIndex) must either be rejected
// with a Status or yield a weight_map whose every shard is a plain file name (no crash, no UB).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "io/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto weight_map = moerun::ParseCheckpointIndex(text, "fuzz/model.safetensors.index.json");
  if (!weight_map.ok()) return 0;
  for (const auto& [name, shard] : *weight_map) {
    // The parser's promise: a shard never names anything outside the checkpoint directory.
    if (shard.empty() || shard == "." || shard == ".." ||
        shard.find_first_of(std::string_view("/\\\0", 3)) != std::string::npos) {
      std::abort();
    }
  }
  return 0;
}
