#include "kernels/kernel_table.h"

#include <array>
#include <cstring>

#include "kernels/matmul_impl.h"

namespace moerun {
namespace {

using internal::MatmulTaskQuant;
using WF = WeightFormat;
using AF = ActFormat;

bool Always(const CpuFeatures&) { return true; }
bool Avx2(const CpuFeatures& f) { return f.HasAvx2Kernels(); }
bool Avx512(const CpuFeatures& f) { return f.HasAvx512Bf16Kernels(); }
bool Vnni(const CpuFeatures& f) { return f.HasAvx512VnniKernels() && f.HasAvx2Kernels(); }
// Where the -nopf rows decode faster (kernel_table.h): in-process A/B on DeepSeek-V2-Lite decode,
// AMD EPYC Zen 4, 2 threads: Q4_K 9-13 % (AVX2 rows: 13-15 %), Q8_0 11-16 %, Q4_0 5-7 % faster
// without the tiles' software prefetch; Q6_K 60 % slower, so it keeps its prefetch everywhere.
bool Zen4(const CpuFeatures& f) { return f.IsAmdZen4(); }

constexpr MatmulTaskFn kRefF = internal::MatmulTaskRef;
constexpr MatmulTaskFn kAvx2F = internal::MatmulTaskAvx2;
constexpr MatmulTaskFn kAvx512F = internal::MatmulTaskAvx512F32;
constexpr MatmulTaskFn kBf16Dot = internal::MatmulTaskAvx512Bf16Dot;
constexpr MatmulTaskFn kRefQ = MatmulTaskQuant<QuantDotTileRef, SwiGluRowRef>;
constexpr MatmulTaskFn kAvx2Q = MatmulTaskQuant<QuantDotTileAvx2, internal::SwiGluRowAvx2>;
constexpr MatmulTaskFn kVnniQ = MatmulTaskQuant<QuantDotTileAvx512Vnni, internal::SwiGluRowAvx512>;
constexpr MatmulTaskFn kAvx2QNoPf = MatmulTaskQuant<QuantDotTileAvx2NoPrefetch, internal::SwiGluRowAvx2>;
constexpr MatmulTaskFn kVnniQNoPf =
    MatmulTaskQuant<QuantDotTileAvx512VnniNoPrefetch, internal::SwiGluRowAvx512>;

// The streams entries of the rows that have one (StreamsOf).
constexpr MatmulStreamsFn kAvx2QStreams =
    internal::MatmulStreamsQuant<QuantDotStreamsAvx2, internal::SwiGluRowAvx2>;
constexpr MatmulStreamsFn kAvx2QNoPfStreams =
    internal::MatmulStreamsQuant<QuantDotStreamsAvx2NoPrefetch, internal::SwiGluRowAvx2>;
constexpr MatmulStreamsFn kVnniQStreams =
    internal::MatmulStreamsQuant<QuantDotStreamsAvx512Vnni, internal::SwiGluRowAvx512>;
constexpr MatmulStreamsFn kVnniQNoPfStreams =
    internal::MatmulStreamsQuant<QuantDotStreamsAvx512VnniNoPrefetch, internal::SwiGluRowAvx512>;

// clang-format off
constexpr std::array<MatmulKernel, 43> kKernels = {{
    // name                  isa           weights    acts            cpu     prefer  inv   min prio task
    {"ref-f32",              "ref",        WF::kF32,  AF::kF32,       Always, Always, true, 0, 0, kRefF},
    {"ref-f16",              "ref",        WF::kF16,  AF::kF32,       Always, Always, true, 0, 0, kRefF},
    {"ref-bf16",             "ref",        WF::kBF16, AF::kF32,       Always, Always, true, 0, 0, kRefF},
    {"ref-q8_0",             "ref",        WF::kQ8_0, AF::kQ8Block32, Always, Always, true, 0, 0, kRefQ},
    {"ref-q4_0",             "ref",        WF::kQ4_0, AF::kQ8Block32, Always, Always, true, 0, 0, kRefQ},
    {"ref-q5_0",             "ref",        WF::kQ5_0, AF::kQ8Block32, Always, Always, true, 0, 0, kRefQ},
    {"ref-q5_1",             "ref",        WF::kQ5_1, AF::kQ8Block32, Always, Always, true, 0, 0, kRefQ},
    {"ref-q4_k",             "ref",        WF::kQ4_K, AF::kQ8Block32, Always, Always, true, 0, 0, kRefQ},
    {"ref-q5_k",             "ref",        WF::kQ5_K, AF::kQ8Block32, Always, Always, true, 0, 0, kRefQ},
    {"ref-q6_k",             "ref",        WF::kQ6_K, AF::kQ8Block32, Always, Always, true, 0, 0, kRefQ},
    {"avx2-f32",             "avx2",       WF::kF32,  AF::kF32,       Avx2,   Always, true, 0, 2, kAvx2F},
    {"avx2-f16",             "avx2",       WF::kF16,  AF::kF32,       Avx2,   Always, true, 0, 2, kAvx2F},
    {"avx2-bf16",            "avx2",       WF::kBF16, AF::kF32,       Avx2,   Always, true, 0, 2, kAvx2F},
    {"avx2-q8_0",            "avx2",       WF::kQ8_0, AF::kQ8Block32, Avx2,   Always, true, 0, 2, kAvx2Q},
    {"avx2-q4_0",            "avx2",       WF::kQ4_0, AF::kQ8Block32, Avx2,   Always, true, 0, 2, kAvx2Q},
    {"avx2-q5_0",            "avx2",       WF::kQ5_0, AF::kQ8Block32, Avx2,   Always, true, 0, 2, kAvx2Q},
    {"avx2-q5_1",            "avx2",       WF::kQ5_1, AF::kQ8Block32, Avx2,   Always, true, 0, 2, kAvx2Q},
    {"avx2-q4_k",            "avx2",       WF::kQ4_K, AF::kQ8Block32, Avx2,   Always, true, 0, 2, kAvx2Q},
    {"avx2-q5_k",            "avx2",       WF::kQ5_K, AF::kQ8Block32, Avx2,   Always, true, 0, 2, kAvx2Q},
    {"avx2-q6_k",            "avx2",       WF::kQ6_K, AF::kQ8Block32, Avx2,   Always, true, 0, 2, kAvx2Q},
    {"avx2-q8_0-nopf",       "avx2",       WF::kQ8_0, AF::kQ8Block32, Avx2,   Zen4,   true, 0, 3, kAvx2QNoPf},
    {"avx2-q4_0-nopf",       "avx2",       WF::kQ4_0, AF::kQ8Block32, Avx2,   Zen4,   true, 0, 3, kAvx2QNoPf},
    {"avx2-q5_0-nopf",       "avx2",       WF::kQ5_0, AF::kQ8Block32, Avx2,   Zen4,   true, 0, 3, kAvx2QNoPf},
    {"avx2-q5_1-nopf",       "avx2",       WF::kQ5_1, AF::kQ8Block32, Avx2,   Zen4,   true, 0, 3, kAvx2QNoPf},
    {"avx2-q4_k-nopf",       "avx2",       WF::kQ4_K, AF::kQ8Block32, Avx2,   Zen4,   true, 0, 3, kAvx2QNoPf},
    {"avx2-q5_k-nopf",       "avx2",       WF::kQ5_K, AF::kQ8Block32, Avx2,   Zen4,   true, 0, 3, kAvx2QNoPf},
    {"avx512-f32",           "avx512",     WF::kF32,  AF::kF32,       Avx512, Always, true, 0, 4, kAvx512F},
    {"avx512-f16",           "avx512",     WF::kF16,  AF::kF32,       Avx512, Always, true, 0, 4, kAvx512F},
    {"avx512-bf16",          "avx512",     WF::kBF16, AF::kF32,       Avx512, Always, true, 0, 4, kAvx512F},
    {"avx512-bf16dot",       "avx512",     WF::kBF16, AF::kBf16Pairs, Avx512, Always, true,
     kBf16DotMinRows, 6, kBf16Dot},
    {"avx512vnni-q8_0",      "avx512vnni", WF::kQ8_0, AF::kQ8Block32, Vnni,   Always, true, 0, 4, kVnniQ},
    {"avx512vnni-q4_0",      "avx512vnni", WF::kQ4_0, AF::kQ8Block32, Vnni,   Always, true, 0, 4, kVnniQ},
    {"avx512vnni-q5_0",      "avx512vnni", WF::kQ5_0, AF::kQ8Block32, Vnni,   Always, true, 0, 4, kVnniQ},
    {"avx512vnni-q5_1",      "avx512vnni", WF::kQ5_1, AF::kQ8Block32, Vnni,   Always, true, 0, 4, kVnniQ},
    {"avx512vnni-q4_k",      "avx512vnni", WF::kQ4_K, AF::kQ8Block32, Vnni,   Always, true, 0, 4, kVnniQ},
    {"avx512vnni-q5_k",      "avx512vnni", WF::kQ5_K, AF::kQ8Block32, Vnni,   Always, true, 0, 4, kVnniQ},
    {"avx512vnni-q6_k",      "avx512vnni", WF::kQ6_K, AF::kQ8Block32, Vnni,   Always, true, 0, 4, kVnniQ},
    {"avx512vnni-q8_0-nopf", "avx512vnni", WF::kQ8_0, AF::kQ8Block32, Vnni,   Zen4,   true, 0, 5, kVnniQNoPf},
    {"avx512vnni-q4_0-nopf", "avx512vnni", WF::kQ4_0, AF::kQ8Block32, Vnni,   Zen4,   true, 0, 5, kVnniQNoPf},
    {"avx512vnni-q5_0-nopf", "avx512vnni", WF::kQ5_0, AF::kQ8Block32, Vnni,   Zen4,   true, 0, 5, kVnniQNoPf},
    {"avx512vnni-q5_1-nopf", "avx512vnni", WF::kQ5_1, AF::kQ8Block32, Vnni,   Zen4,   true, 0, 5, kVnniQNoPf},
    {"avx512vnni-q4_k-nopf", "avx512vnni", WF::kQ4_K, AF::kQ8Block32, Vnni,   Zen4,   true, 0, 5, kVnniQNoPf},
    {"avx512vnni-q5_k-nopf", "avx512vnni", WF::kQ5_K, AF::kQ8Block32, Vnni,   Zen4,   true, 0, 5, kVnniQNoPf},
}};
// clang-format on

bool IsIsa(const std::string& s) { return ForcedIsaLevel(s).has_value(); }

// Whether the policy lets `k` serve `format` at `rows` rows on `cpu` (before the CPU check): a row
// forced by name always, others only on the CPUs they are preferred on.
bool Allowed(const MatmulKernel& k, int64_t rows, const KernelPolicy& p, const CpuFeatures& cpu) {
  if (!p.forced.empty()) {
    if (IsIsa(p.forced)) {
      // A forced ISA: its rows only; the AVX-512 ISAs serve each other's formats.
      const bool avx512_family =
          std::strncmp(p.forced.c_str(), "avx512", 6) == 0 && std::strncmp(k.isa, "avx512", 6) == 0;
      if (p.forced != k.isa && !avx512_family) return false;
    } else if (const MatmulKernel* f = FindKernel(p.forced); f != nullptr && f->weights == k.weights) {
      return f == &k;
    }
  }
  if (!k.preferred(cpu)) return false;
  const bool bf16_acts = k.acts == ActFormat::kBf16Pairs;
  switch (p.precision) {
    case ActivationPrecision::kF32:
      if (bf16_acts) return false;
      break;
    case ActivationPrecision::kBf16:
      return true;  // bf16 rows win on priority
    case ActivationPrecision::kAuto:
      if (!p.deterministic && rows < k.min_rows) return false;
      break;
  }
  return true;
}

}  // namespace

std::optional<IsaLevel> ForcedIsaLevel(std::string_view forced) {
  if (forced == "ref") return IsaLevel::kRef;
  if (forced == "avx2") return IsaLevel::kAvx2;
  if (forced == "avx512" || forced == "avx512vnni") return IsaLevel::kAvx512;
  return std::nullopt;
}

std::span<const MatmulKernel> AllKernels() { return kKernels; }

MatmulStreamsFn StreamsOf(const MatmulKernel& kernel) {
  // The 32-element block formats. The K formats' 2304-3360 byte columns decoded slower as streams
  // (Q4_K V2-Lite, Zen 5: 49 % of the bound with four, 71 % with one; Zen 3, AVX2 rows: the loops
  // 0.77-0.83 x; docs/benchmarks.md).
  const WeightFormat f = kernel.weights;
  if (f != WeightFormat::kQ8_0 && f != WeightFormat::kQ4_0 && f != WeightFormat::kQ5_0 &&
      f != WeightFormat::kQ5_1)
    return nullptr;
  if (kernel.task == kAvx2Q) return kAvx2QStreams;
  if (kernel.task == kAvx2QNoPf) return kAvx2QNoPfStreams;
  if (kernel.task == kVnniQ) return kVnniQStreams;
  if (kernel.task == kVnniQNoPf) return kVnniQNoPfStreams;
  return nullptr;
}

const MatmulKernel* FindKernel(const std::string& name) {
  for (const MatmulKernel& k : AllKernels()) {
    if (name == k.name) return &k;
  }
  return nullptr;
}

Status ValidateKernelPolicy(const KernelPolicy& policy) {
  if (policy.forced.empty()) return Status::Ok();
  const CpuFeatures& cpu = GetCpuFeatures();
  if (const MatmulKernel* k = FindKernel(policy.forced)) {
    if (!k->supported(cpu))
      return InvalidArgument("--kernel {}: this CPU lacks the {} instructions (has: {})", policy.forced,
                             k->isa, cpu.ToString());
    return Status::Ok();
  }
  if (!IsIsa(policy.forced)) {
    std::string names = "ref|avx2|avx512|avx512vnni";
    for (const MatmulKernel& k : AllKernels()) names += std::string("|") + k.name;
    return InvalidArgument("--kernel {}: unknown; expected one of {}", policy.forced, names);
  }
  for (const MatmulKernel& k : AllKernels()) {
    if (k.isa == policy.forced && k.supported(cpu)) return Status::Ok();
  }
  return InvalidArgument("--kernel {}: this CPU lacks the {} instructions (has: {})", policy.forced,
                         policy.forced, cpu.ToString());
}

const MatmulKernel& SelectKernel(WeightFormat format, int64_t rows, const KernelPolicy& policy,
                                 const CpuFeatures& cpu) {
  const MatmulKernel* best = nullptr;
  for (const MatmulKernel& k : AllKernels()) {
    if (k.weights != format || !k.supported(cpu) || !Allowed(k, rows, policy, cpu)) continue;
    if (policy.deterministic && !k.batch_invariant) continue;
    if (best == nullptr || k.priority > best->priority) best = &k;
  }
  if (best != nullptr) return *best;
  // A forced ISA without a row for this format: the best auto row.
  KernelPolicy fallback = policy;
  fallback.forced.clear();
  return SelectKernel(format, rows, fallback, cpu);
}

std::string DescribeKernelChoice(const KernelPolicy& policy) {
  const CpuFeatures& cpu = GetCpuFeatures();
  std::string s = "cpu: " + cpu.Identity() + ": " + cpu.ToString() + "\nkernels:";
  for (const WeightFormatTraits& f : AllWeightFormats()) {
    const MatmulKernel& one = SelectKernel(f.format, 1, policy);
    const MatmulKernel& many = SelectKernel(f.format, 512, policy);
    s += std::string(" ") + f.name + "=" + one.name;
    if (&one != &many) s += std::string(" (>=") + std::to_string(many.min_rows) + " rows: " + many.name + ")";
  }
  return s;
}

}  // namespace moerun
