// libFuzzer target: config.json text (ModelConfig::FromJson, every registered architecture) must
// either be rejected with a Status or yield a config whose derived values can all be computed (no
// crash, no UB).
#include <cstddef>
#include <cstdint>
#include <string>

#include "model/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = moerun::ModelConfig::FromJson(text, "fuzz/config.json");
  if (!config.ok()) return 0;
  volatile size_t sink = config->Summary().size();
  for (int64_t layer = 0; layer < config->num_hidden_layers; ++layer) {
    if (config->IsMoeLayer(layer)) sink = sink + config->MoePrefix(layer).size();
  }
  volatile double scale = config->SoftmaxScale();
  (void)scale;
  (void)sink;
  return 0;
}
