// libFuzzer target: any byte string must either be rejected with a Status or yield a file whose
// every tensor can be fetched and read in full (no crash, no out-of-bounds read, no UB).
#include <cstddef>
#include <cstdint>
#include <string>

#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file =
      moerun::SafetensorsFile::FromBytes(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  if (!file.ok()) return 0;
  for (const moerun::SafetensorsEntry& e : (*file)->entries()) {
    moerun::StatusOr<moerun::Tensor> t = (*file)->Get(e.name);
    if (!t.ok()) continue;
    // Touch every byte so ASan sees any out-of-bounds view.
    const auto* p = static_cast<const uint8_t*>(t->raw());
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < t->nbytes(); ++i) sink = sink ^ p[i];
    (void)sink;
  }
  return 0;
}
