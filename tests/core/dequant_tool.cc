// Test driver for dequant_reference.py: dequantises a file of GGUF blocks with moerun's
// DequantizeRow (core/block_quant.h) and writes the f32 values.
//
// usage: dequant_tool <TYPE> <blocks.bin> <out.f32>
// TYPE is a block DType name ("Q5_0", "Q5_K", "IQ4_NL", ...); blocks.bin holds whole blocks of
// it back to back; out.f32 receives DTypeBlockSize(TYPE) little-endian f32 values per block.
// Exit 2 on a usage or I/O error.
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "core/block_quant.h"
#include "core/dtype.h"
#include "io/atomic_file.h"

namespace {

int Fail(const std::string& what) {
  std::fprintf(stderr, "dequant_tool: %s\n", what.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace moerun;  // NOLINT(build/namespaces)
  if (argc != 4) return Fail("usage: dequant_tool <TYPE> <blocks.bin> <out.f32>");
  const std::string_view name = argv[1];
  std::optional<DType> type;
  for (int t = 0; t < 64; ++t) {
    const auto d = static_cast<DType>(t);
    if (IsBlockDType(d) && DTypeName(d) == name) type = d;
  }
  if (!type) return Fail(fmt::format("'{}' is not a block type", name));
  StatusOr<std::string> bytes = ReadFileToString(argv[2]);
  if (!bytes.ok()) return Fail(bytes.status().ToString());
  const size_t bb = DTypeBlockBytes(*type);
  if (bytes->size() % bb != 0) {
    return Fail(fmt::format("{} bytes are not whole {}-byte {} blocks", bytes->size(), bb, name));
  }
  const int64_t n = static_cast<int64_t>(bytes->size() / bb) * DTypeBlockSize(*type);
  std::vector<float> y(static_cast<size_t>(n));
  DequantizeRow(*type, bytes->data(), y.data(), n);
  std::FILE* f = std::fopen(argv[3], "wb");
  if (f == nullptr) return Fail(fmt::format("cannot write {}", argv[3]));
  const size_t wrote = std::fwrite(y.data(), sizeof(float), y.size(), f);
  if (std::fclose(f) != 0 || wrote != y.size()) return Fail(fmt::format("short write to {}", argv[3]));
  return 0;
}
