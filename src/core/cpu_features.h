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
  bool fma = false;
  bool avx2 = false;
  bool os_saves_ymm = false;  // XCR0 enables SSE + AVX state
  bool os_saves_zmm = false;  // XCR0 enables opmask + ZMM state

  // Everything the AVX-512 kernels use.
  bool HasAvx512Bf16Kernels() const {
    return avx512f && avx512bw && avx512vl && avx512dq && avx512_bf16 && fma && os_saves_zmm;
  }
  std::string ToString() const;  // "avx512f avx512bw ... "
};

const CpuFeatures& GetCpuFeatures();

}  // namespace moerun
