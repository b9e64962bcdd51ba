// The kernel table: every matmul implementation is one row (weight format, activation format,
// ISA) with a CPU predicate, ggml's type_traits idea. Row 0 of each format is the portable C++
// reference. SelectKernel picks a row from the table and the policy (auto, a forced ISA or row
// name, deterministic); callers then prepare activations in the row's format
// (kernels/activations.h) and never test which path they got.
//
// Rows:
//   ref-<fmt>            portable C++, every format (f32 activations, or q8 for block formats)
//   avx2-<fmt>           AVX2 + FMA + F16C (f32/f16/bf16 widened and FMA'd; block formats with
//                        vpmaddubsw/vpmaddwd on q8 activations)
//   avx512-<fmt>         AVX-512 F/BW/VL/DQ (f32/f16/bf16 FMA'd)
//   avx512-bf16dot       AVX-512 BF16 vdpbf16ps on bf16-rounded activations (bf16 weights;
//                        auto picks it from kBf16DotMinRows rows: compute bound)
//   avx512vnni-<fmt>     AVX-512 VNNI vpdpbusd for the block formats
//   <isa>-<fmt>-nopf     avx2 / avx512vnni block-format rows without the tiles' software prefetch
//                        (the same bits; the weight stream is left to the hardware prefetchers).
//                        Auto picks them only where preferred: AMD Zen 4, where they decode
//                        5-16 % faster (kernel_table.cc). Q6_K has none: it decodes 60 % slower
//                        there without its prefetch. `--kernel avx512vnni-q4_k` forces the
//                        prefetching row, to compare on another CPU.
// Every row is batch-invariant (an output element does not depend on the other rows of the
// batch), so deterministic mode may use any; it uses one row per format for every row count.
//
// Thread safety: the table is constant; selection is a pure function.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "core/cpu_features.h"
#include "core/status.h"
#include "kernels/matmul.h"
#include "kernels/quant_dot.h"

namespace moerun {

// Computes rows [m0, m1) x stored 16-row blocks [b0, b1) of job (b0, b1 even for gate/up).
using MatmulTaskFn = void (*)(const MatmulJob& job, int64_t m0, int64_t m1, int64_t b0, int64_t b1);

// Blocks [b0, b1) of a job of one row: one stream of a MatmulStreamsFn call.
struct MatmulStream {
  const MatmulJob* job = nullptr;
  int64_t b0 = 0, b1 = 0;
};
// Computes 1 .. kQuantDotMaxStreams streams at once, their blocks' columns interleaved so the
// thread reads that many memory streams together (ThreadPool::ParallelForStreams). REQUIRES: the
// jobs have one row, k_blocks <= 1, and the same row, weight format, K range and epilogue.
using MatmulStreamsFn = void (*)(std::span<const MatmulStream> streams);

struct MatmulKernel {
  const char* name;  // "avx2-q4_k"
  const char* isa;   // "ref" | "avx2" | "avx512" | "avx512vnni"
  WeightFormat weights;
  ActFormat acts;
  bool (*supported)(const CpuFeatures&);  // the CPU can run it
  bool (*preferred)(const CpuFeatures&);  // auto and forced-ISA selection consider it (by name: always)
  bool batch_invariant;
  int64_t min_rows;  // auto selection uses the row only for batches of at least this many rows
  int priority;      // auto selection prefers the highest
  MatmulTaskFn task;
};

inline constexpr int64_t kBf16DotMinRows = 8;

std::span<const MatmulKernel> AllKernels();
const MatmulKernel* FindKernel(const std::string& name);
// The row's streams entry, or nullptr where it has none (its streams run one task at a time).
MatmulStreamsFn StreamsOf(const MatmulKernel& kernel);

// How activations may be rounded (the --precision flag).
enum class ActivationPrecision {
  kAuto,  // bf16 dot products for rows >= kBf16DotMinRows, exact f32 otherwise
  kF32,   // never round f32 activations for float weights (slower at large batch), and keep MLA's
          // block-format kv_b on f32 activations (row ops) instead of quantised matmuls
  kBf16,  // always use bf16 dot products where the CPU has them
};

struct KernelPolicy {
  // "" (auto), an ISA ("ref", "avx2", "avx512", "avx512vnni": the best row of that ISA for each
  // format) or a row name ("avx2-q4_k": that row for its format, auto for the others).
  std::string forced;
  bool deterministic = false;  // one row per format whatever the row count
  ActivationPrecision precision = ActivationPrecision::kAuto;
};

// The vector level a --kernel value asks of the kernels outside the table (the attention GEMMs of
// kernels/small_gemm.h, the row ops of kernels/row_ops.h): "ref", "avx2", or "avx512" /
// "avx512vnni" (both kAvx512); nullopt for "" or a row name such as "avx2-q4_k" (the best level).
// Each caller caps the level at what its own code can run on this CPU.
enum class IsaLevel { kRef, kAvx2, kAvx512 };
std::optional<IsaLevel> ForcedIsaLevel(std::string_view forced);

// Checks that `policy.forced` names an ISA or row this CPU supports ("--kernel avx512: this CPU
// lacks avx512f ..."), before any weight is read.
Status ValidateKernelPolicy(const KernelPolicy& policy);
// The row for `format` at `rows` rows on `cpu`. Never null: the ref row always qualifies.
const MatmulKernel& SelectKernel(WeightFormat format, int64_t rows, const KernelPolicy& policy,
                                 const CpuFeatures& cpu = GetCpuFeatures());

// "cpu: AMD family 0x19 model 0x11 (Zen 4): avx512f ...
//  kernels: f32=avx512-f32 bf16=avx512-bf16 (>=8 rows: avx512-bf16dot) ... q4_k=avx512vnni-q4_k-nopf ..."
std::string DescribeKernelChoice(const KernelPolicy& policy);

}  // namespace moerun
