// libFuzzer target: any byte string must either be rejected with a Status or yield a GGUF file
// whose every metadata value and every tensor moerun supports can be read in full (no crash, no
// out-of-bounds read, no UB). Tensors of unsupported ggml types must fail Get() cleanly.
#include <cstddef>
#include <cstdint>
#include <string>

#include "io/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = moerun::GgufFile::FromBytes(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  if (!file.ok()) return 0;
  volatile uint64_t sink = 0;
  for (const auto& [key, value] : (*file)->metadata()) {
    sink = sink + key.size() + value.s.size() + value.ArraySize();
    (void)(*file)->GetString(key);
    (void)(*file)->GetIntArray(key);
  }
  for (const moerun::GgufTensorInfo& info : (*file)->tensors()) {
    moerun::StatusOr<moerun::Tensor> t = (*file)->Get(info.name);
    if (!t.ok()) continue;
    // Touch every byte so ASan sees any out-of-bounds view.
    const auto* p = static_cast<const uint8_t*>(t->raw());
    for (size_t i = 0; i < t->nbytes(); ++i) sink = sink ^ p[i];
  }
  (void)sink;
  return 0;
}
