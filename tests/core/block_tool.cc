// Test driver for the numpy references of the GGUF block formats: runs moerun's reference
// quantiser or dequantiser (core/block_quant.h) on a file and writes the result.
//
// usage: block_tool dequant <TYPE> <blocks.bin> <out.f32>   (dequant_reference.py)
//        block_tool quant <TYPE> <in.f32> <out.bin>         (quant_reference.py)
// TYPE is a block DType name ("Q5_0", "Q5_K", "IQ4_NL", ...). dequant: blocks.bin holds whole
// blocks back to back; out.f32 receives DTypeBlockSize(TYPE) little-endian f32 values per block.
// quant: in.f32 holds whole blocks of little-endian f32 values; out.bin receives QuantizeRow's
// bytes (TYPE must be quantisable: not a load-only type). Exit 2 on a usage or I/O error.
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "core/block_quant.h"
#include "core/dtype.h"
#include "io/atomic_file.h"

namespace {

int Fail(const std::string& what) {
  std::fprintf(stderr, "block_tool: %s\n", what.c_str());
  return 2;
}

int Write(const char* path, const void* data, size_t bytes) {
  std::FILE* f = std::fopen(path, "wb");
  if (f == nullptr) return Fail(fmt::format("cannot write {}", path));
  const size_t wrote = std::fwrite(data, 1, bytes, f);
  if (std::fclose(f) != 0 || wrote != bytes) return Fail(fmt::format("short write to {}", path));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace moerun;  // NOLINT(build/namespaces,google-build-using-namespace)
  if (argc != 5) return Fail("usage: block_tool dequant|quant <TYPE> <in> <out>");
  const std::string_view mode = argv[1], name = argv[2];
  if (mode != "dequant" && mode != "quant") return Fail(fmt::format("unknown mode '{}'", mode));
  std::optional<DType> type;
  for (int t = 0; t < 64; ++t) {
    const auto d = static_cast<DType>(t);
    if (IsBlockDType(d) && DTypeName(d) == name) type = d;
  }
  if (!type) return Fail(fmt::format("'{}' is not a block type", name));
  StatusOr<std::string> bytes = ReadFileToString(argv[3]);
  if (!bytes.ok()) return Fail(bytes.status().ToString());
  const size_t bb = DTypeBlockBytes(*type), bs = static_cast<size_t>(DTypeBlockSize(*type));
  if (mode == "dequant") {
    if (bytes->size() % bb != 0) {
      return Fail(fmt::format("{} bytes are not whole {}-byte {} blocks", bytes->size(), bb, name));
    }
    const int64_t n = static_cast<int64_t>(bytes->size() / bb * bs);
    std::vector<float> y(static_cast<size_t>(n));
    DequantizeRow(*type, bytes->data(), y.data(), n);
    return Write(argv[4], y.data(), y.size() * sizeof(float));
  }
  if (IsLoadOnlyDType(*type)) return Fail(fmt::format("{} has no quantiser", name));
  if (bytes->size() % (bs * sizeof(float)) != 0) {
    return Fail(fmt::format("{} bytes are not whole blocks of {} f32 values", bytes->size(), bs));
  }
  const int64_t n = static_cast<int64_t>(bytes->size() / sizeof(float));
  std::vector<float> x(static_cast<size_t>(n));
  std::memcpy(x.data(), bytes->data(), bytes->size());
  std::vector<uint8_t> y(DTypeRowBytes(*type, n));
  QuantizeRow(*type, x.data(), n, y.data());
  return Write(argv[4], y.data(), y.size());
}
