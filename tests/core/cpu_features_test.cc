#include "core/cpu_features.h"

#include <gtest/gtest.h>

#include <cstdio>

namespace moerun {
namespace {

// CPUID leaf 1 EAX values of known parts (AMD's and Intel's published signatures) against the family
// and model their vendors display.
TEST(CpuFeaturesTest, DisplayFamilyModelDecodesKnownSignatures) {
  struct Case {
    unsigned eax;
    int family, model;
  };
  for (const Case& c : {Case{0x00A10F11, 0x19, 0x11},     // AMD EPYC 9004 (Zen 4, Genoa)
                        Case{0x00A60F12, 0x19, 0x61},     // AMD Ryzen 7000 (Zen 4, Raphael)
                        Case{0x00A20F10, 0x19, 0x21},     // AMD Ryzen 5000 (Zen 3, Vermeer)
                        Case{0x00A00F11, 0x19, 0x01},     // AMD EPYC 7003 (Zen 3, Milan)
                        Case{0x00B00F21, 0x1A, 0x02},     // AMD EPYC 9005 (Zen 5, Turin)
                        Case{0x00830F10, 0x17, 0x31},     // AMD EPYC 7002 (Zen 2, Rome)
                        Case{0x00050654, 0x06, 0x55},     // Intel Xeon Scalable (Skylake-SP)
                        Case{0x000906EA, 0x06, 0x9E},     // Intel Core 8th gen (Coffee Lake)
                        Case{0x00000F41, 0x0F, 0x04}}) {  // Intel Pentium 4: base family 0xF
    const CpuFamilyModel fm = DisplayFamilyModel(c.eax);
    EXPECT_EQ(fm.family, c.family) << std::hex << c.eax;
    EXPECT_EQ(fm.model, c.model) << std::hex << c.eax;
  }
}

TEST(CpuFeaturesTest, Zen4IsAmdFamily0x19WithAvx512) {
  CpuFeatures zen4{.avx512f = true, .avx2 = true, .amd = true, .family = 0x19, .model = 0x11};
  EXPECT_TRUE(zen4.IsAmdZen4());
  EXPECT_EQ(zen4.Identity(), "AMD family 0x19 model 0x11 (Zen 4)");
  CpuFeatures zen3 = zen4;  // same family, no AVX-512
  zen3.avx512f = false;
  EXPECT_FALSE(zen3.IsAmdZen4());
  CpuFeatures zen5 = zen4;
  zen5.family = 0x1A;
  EXPECT_FALSE(zen5.IsAmdZen4());
  CpuFeatures intel = zen4;
  intel.amd = false;
  intel.family = 0x06;
  EXPECT_FALSE(intel.IsAmdZen4());
  EXPECT_EQ(intel.Identity(), "family 0x6 model 0x11");
}

// This machine's own identity is printed (the test log names the CPU a run was measured on).
TEST(CpuFeaturesTest, ThisMachine) {
  const CpuFeatures& cpu = GetCpuFeatures();
  std::printf("cpu: %s: %s\n", cpu.Identity().c_str(), cpu.ToString().c_str());
  EXPECT_FALSE(cpu.Identity().empty());
}

}  // namespace
}  // namespace moerun
