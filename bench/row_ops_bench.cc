// Standalone benchmark of the row ops (kernels/row_ops.h) at DeepSeek-V2-Lite's MLA head shapes,
// one activation vector (decode): attn_k_b as RowsDot (512 rows of 128), attn_v_b as RowsDot (128
// rows of 512) and kv_b's K rows as RowsAxpy (128 rows of 512), per stored format x ISA, the ISAs
// side by side in one run. "cold" walks 864 heads' copies (27 layers x 16 heads x 2: far beyond the
// caches, as at decode); "hot" repeats one head. Reports GB/s of row bytes and microseconds per head
// (the fastest of the repetitions).
//   build/bin/row_ops_bench [format_filter]     e.g. `row_ops_bench Q4_K`
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/block_quant.h"
#include "kernels/row_ops.h"

using namespace moerun;  // NOLINT(google-build-using-namespace): a standalone benchmark

namespace {

struct Shape {
  const char* name;
  int64_t rows, cols;
  bool axpy;
};

// Seconds of the fastest of `reps` passes over `heads` heads (each a view of rows x cols).
double BestPass(RowOpsIsa isa, const Shape& s, DType t, const std::vector<uint8_t>& w, size_t head_bytes,
                int heads, bool hot, int reps) {
  std::vector<float> x(static_cast<size_t>(s.axpy ? s.rows : s.cols), 0.5f);
  std::vector<float> y(static_cast<size_t>(s.axpy ? s.cols : s.rows), 0.0f);
  double best = 1e30;
  for (int rep = 0; rep < reps; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int h = 0; h < heads; ++h) {
      const StoredRowsView view{t, w.data() + (hot ? 0 : head_bytes * static_cast<size_t>(h)), s.rows, s.cols,
                                head_bytes / static_cast<size_t>(s.rows)};
      if (s.axpy) {
        RowsAxpy(isa, view, x.data(), y.data());
      } else {
        RowsDot(isa, view, x.data(), y.data());
      }
    }
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string filter = argc > 1 ? argv[1] : "";
  constexpr int kHeads = 27 * 16 * 2;
  const Shape shapes[] = {{"k_b dot 512x128", 512, 128, false},
                          {"v_b dot 128x512", 128, 512, false},
                          {"kv_b axpy 128x512", 128, 512, true}};
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::printf("%-6s %-18s %-7s %10s %10s %10s %10s\n", "format", "op", "isa", "GB/s cold", "us cold",
              "GB/s hot", "us hot");
  for (DType t : {DType::kQ8_0, DType::kQ4_0, DType::kQ5_0, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
    if (!filter.empty() && filter != DTypeName(t)) continue;
    for (const Shape& s : shapes) {
      if (s.cols % DTypeBlockSize(t) != 0) continue;
      const size_t row_bytes = DTypeRowBytes(t, s.cols), head_bytes = row_bytes * static_cast<size_t>(s.rows);
      std::vector<uint8_t> w(head_bytes * kHeads);
      std::vector<float> v(static_cast<size_t>(s.cols));
      for (int64_t r = 0; r < s.rows; ++r) {  // one random head, copied to every head
        for (float& e : v) e = nd(rng);
        QuantizeRow(t, v.data(), s.cols, w.data() + row_bytes * static_cast<size_t>(r));
      }
      for (int h = 1; h < kHeads; ++h) std::memcpy(w.data() + head_bytes * h, w.data(), head_bytes);
      for (RowOpsIsa isa : {RowOpsIsa::kRef, RowOpsIsa::kAvx2, RowOpsIsa::kAvx512}) {
        if (!RowOpsIsaSupported(isa)) continue;
        const double cold = BestPass(isa, s, t, w, head_bytes, kHeads, false, 5);
        const double hot = BestPass(isa, s, t, w, head_bytes, kHeads, true, 5);
        const double bytes = static_cast<double>(head_bytes) * kHeads;
        std::printf("%-6s %-18s %-7s %10.1f %10.2f %10.1f %10.2f\n", std::string(DTypeName(t)).c_str(),
                    s.name, std::string(RowOpsIsaName(isa)).c_str(), bytes / cold / 1e9, cold / kHeads * 1e6,
                    bytes / hot / 1e9, hot / kHeads * 1e6);
      }
    }
  }
  return 0;
}
