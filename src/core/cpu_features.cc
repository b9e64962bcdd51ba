#include "core/cpu_features.h"

#include <cstdio>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace moerun {
namespace {

CpuFeatures Detect() {
  CpuFeatures f;
#if defined(__x86_64__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  // Vendor "AuthenticAMD": "Auth" in EBX, "enti" in EDX, "cAMD" in ECX.
  if (__get_cpuid(0, &a, &b, &c, &d)) f.amd = b == 0x68747541 && d == 0x69746e65 && c == 0x444d4163;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const CpuFamilyModel fm = DisplayFamilyModel(a);
  f.family = fm.family;
  f.model = fm.model;
  f.fma = (c >> 12) & 1;
  f.f16c = (c >> 29) & 1;
  const bool osxsave = (c >> 27) & 1;
  if (osxsave) {
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    // bits 1,2 (SSE, AVX) and 5,6,7 (opmask, ZMM_Hi256, Hi16_ZMM)
    f.os_saves_ymm = (lo & 0x6u) == 0x6u;
    f.os_saves_zmm = (lo & 0xe6u) == 0xe6u;
  }
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  f.avx2 = (b >> 5) & 1;
  f.avx512f = (b >> 16) & 1;
  f.avx512dq = (b >> 17) & 1;
  f.avx512bw = (b >> 30) & 1;
  f.avx512vl = (b >> 31) & 1;
  f.avx512_vnni = (c >> 11) & 1;
  __cpuid_count(7, 1, a, b, c, d);
  f.avx512_bf16 = (a >> 5) & 1;
#endif
  return f;
}

}  // namespace

std::string CpuFeatures::ToString() const {
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (on) s += s.empty() ? name : std::string(" ") + name;
  };
  add(avx512f, "avx512f");
  add(avx512bw, "avx512bw");
  add(avx512vl, "avx512vl");
  add(avx512dq, "avx512dq");
  add(avx512_bf16, "avx512_bf16");
  add(avx512_vnni, "avx512_vnni");
  add(avx2, "avx2");
  add(fma, "fma");
  add(f16c, "f16c");
  return s.empty() ? "none" : s;
}

CpuFamilyModel DisplayFamilyModel(unsigned cpuid1_eax) {
  const unsigned base_family = (cpuid1_eax >> 8) & 0xF, base_model = (cpuid1_eax >> 4) & 0xF;
  const unsigned ext_family = (cpuid1_eax >> 20) & 0xFF, ext_model = (cpuid1_eax >> 16) & 0xF;
  CpuFamilyModel fm;
  fm.family = static_cast<int>(base_family == 0xF ? base_family + ext_family : base_family);
  fm.model =
      static_cast<int>(base_family == 0xF || base_family == 0x6 ? (ext_model << 4) | base_model : base_model);
  return fm;
}

std::string CpuFeatures::Identity() const {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%sfamily 0x%x model 0x%x%s", amd ? "AMD " : "", family, model,
                IsAmdZen4() ? " (Zen 4)" : "");
  return buf;
}

const CpuFeatures& GetCpuFeatures() {
  static const CpuFeatures features = Detect();
  return features;
}

}  // namespace moerun
