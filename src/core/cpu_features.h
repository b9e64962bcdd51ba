// Run-time CPU feature detection (CPUID + XGETBV), used to pick kernel paths.
// Thread safety: the result is computed once (thread-safe static) and immutable.
#pragma once

#include <string>

namespace moerun {

struct CpuFeatures {
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512_bf16 = false;
  bool avx512_vnni = false;
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool os_saves_ymm = false;  // XCR0 enables SSE + AVX (YMM) state
  bool os_saves_zmm = false;  // XCR0 enables opmask + ZMM state
  bool amd = false;           // vendor "AuthenticAMD"
  int family = 0;             // display family (base + extended), e.g. 0x19 = 25: AMD Zen 3 / Zen 4
  int model = 0;              // display model (extended << 4 | base), e.g. 0x11 = 17: EPYC Zen 4

  // Everything the AVX-512 kernels use.
  bool HasAvx512Bf16Kernels() const {
    return avx512f && avx512bw && avx512vl && avx512dq && avx512_bf16 && fma && os_saves_zmm;
  }
  // Everything the AVX2 quantised-dot kernels (kernels/quant_dot_avx2.cc) use.
  bool HasAvx2Kernels() const { return avx2 && fma && f16c && os_saves_ymm; }
  // Everything the AVX-512 VNNI quantised-dot kernels (kernels/quant_dot_avx512.cc) use.
  bool HasAvx512VnniKernels() const {
    return avx512f && avx512bw && avx512vl && avx512dq && avx512_vnni && fma && f16c && os_saves_zmm;
  }
  // AMD Zen 4: family 0x19 with AVX-512 (Zen 3 shares the family and has no AVX-512). Its quantised
  // decode runs faster on the hardware prefetchers alone (kernels/kernel_table.h, the -nopf rows).
  bool IsAmdZen4() const { return amd && family == 0x19 && avx512f; }
  std::string ToString() const;  // "avx512f avx512bw ... "
  std::string Identity() const;  // "AMD family 0x19 model 0x11 (Zen 4)"
};

const CpuFeatures& GetCpuFeatures();

// Family and model as AMD and Intel display them, from CPUID leaf 1's EAX: the extended family adds
// to a base family of 0xF, and the extended model is the high nibble for families 0x6 and 0xF
// (0x00A10F11 -> family 0x19, model 0x11: AMD EPYC 9004, Zen 4).
struct CpuFamilyModel {
  int family = 0;
  int model = 0;
};
CpuFamilyModel DisplayFamilyModel(unsigned cpuid1_eax);

}  // namespace moerun
