// StreamedBytes (core/huge_page_arena.h): alignment, zeroing, disjoint buffers, neighbours kept when a
// buffer's pages are returned, the huge-page advice on the mapping, and concurrent allocation.
#include "core/huge_page_arena.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <fstream>
#include <new>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace moerun {
namespace {

bool AllBytesAre(const uint8_t* p, size_t n, uint8_t v) {
  return std::all_of(p, p + n, [v](uint8_t b) { return b == v; });
}

// Pages of [p, p + n) resident per mincore(2); -1 if the range is not mapped.
int64_t ResidentPages(const uint8_t* p, size_t n) {
  std::vector<unsigned char> vec((n + 4095) / 4096);
  if (::mincore(const_cast<uint8_t*>(p), n, vec.data()) != 0) return errno == ENOMEM ? -1 : -2;
  return std::count_if(vec.begin(), vec.end(), [](unsigned char c) { return (c & 1) != 0; });
}

TEST(HugePageArena, SmallBuffersComeFromOperatorNewZeroed) {
  const StreamedBytes b = AllocateStreamedBytes(1000);
  ASSERT_NE(b.get(), nullptr);
  EXPECT_FALSE(InHugePageMapping(b));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.get()) % 64, 0U);
  EXPECT_TRUE(AllBytesAre(b.get(), 1000, 0));
  const StreamedBytes empty = AllocateStreamedBytes(0);
  EXPECT_NE(empty.get(), nullptr);
}

TEST(HugePageArena, LargeBuffersAreAlignedZeroedDisjointAndKeepTheirBytes) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<size_t> size(kMinArenaBytes, size_t{3} << 20);
  std::vector<std::pair<StreamedBytes, size_t>> live;
  for (int i = 0; i < 24; ++i) {
    const size_t n = size(rng) + static_cast<size_t>(i);  // not page multiples
    StreamedBytes b = AllocateStreamedBytes(n);
    ASSERT_TRUE(InHugePageMapping(b)) << n;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.get()) % 4096, 0U);
    ASSERT_TRUE(AllBytesAre(b.get(), n, 0)) << "buffer " << i << " not zeroed";
    std::fill(b.get(), b.get() + n, static_cast<uint8_t>(i + 1));
    live.emplace_back(std::move(b), n);
  }
  for (size_t i = 0; i < live.size(); ++i) {
    for (size_t j = i + 1; j < live.size(); ++j) {
      const uint8_t *a = live[i].first.get(), *b = live[j].first.get();
      EXPECT_TRUE(a + live[i].second <= b || b + live[j].second <= a) << i << " overlaps " << j;
    }
  }
  // Free every other buffer: its pages go back to the kernel, its neighbours keep their bytes, and
  // buffers made afterwards start zeroed.
  for (size_t i = 0; i < live.size(); i += 2) {
    const uint8_t* p = live[i].first.get();
    const size_t n = live[i].second / 4096 * 4096;
    live[i].first.reset();
    const int64_t resident = ResidentPages(p, n);
    EXPECT_TRUE(resident == 0 || resident == -1)
        << "buffer " << i << ": " << resident << " pages still resident";
  }
  for (int i = 0; i < 8; ++i) {
    StreamedBytes b = AllocateStreamedBytes(size(rng));
    EXPECT_TRUE(AllBytesAre(b.get(), kMinArenaBytes, 0));
    std::fill(b.get(), b.get() + kMinArenaBytes, uint8_t{0xEE});
  }
  for (size_t i = 1; i < live.size(); i += 2) {
    EXPECT_TRUE(AllBytesAre(live[i].first.get(), live[i].second, static_cast<uint8_t>(i + 1))) << i;
  }
}

// The mapping a buffer lives in carries the huge-page advice: /proc/self/smaps reports
// "THPeligible: 1" for it whenever the kernel's THP mode is not "never".
TEST(HugePageArena, MappingIsAdvisedForHugePages) {
  std::ifstream mode("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string modes;
  if (!mode || !std::getline(mode, modes)) GTEST_SKIP() << "this kernel has no transparent huge pages";
  if (modes.find("[never]") != std::string::npos) GTEST_SKIP() << "transparent huge pages are off: " << modes;
  if (::prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1) GTEST_SKIP() << "THP disabled for this process (prctl)";
  const StreamedBytes b = AllocateStreamedBytes(size_t{4} << 20);
  ASSERT_TRUE(InHugePageMapping(b));
  const auto addr = reinterpret_cast<uintptr_t>(b.get());
  std::ifstream smaps("/proc/self/smaps");
  ASSERT_TRUE(smaps) << "cannot read /proc/self/smaps";
  std::string line;
  bool in_vma = false, found = false;
  while (std::getline(smaps, line)) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      in_vma = lo <= addr && addr < hi;
      continue;
    }
    if (in_vma && line.rfind("THPeligible:", 0) == 0) {
      EXPECT_NE(line.find('1'), std::string::npos) << line;
      found = true;
    }
  }
  if (!found) GTEST_SKIP() << "this kernel's smaps has no THPeligible line (Linux < 5.0)";
}

TEST(HugePageArena, VeryLargeBufferHasItsOwnMappingAndIsUnmappedWhenFreed) {
  const size_t n = size_t{600} << 20;  // address space only: a few pages are touched
  StreamedBytes b = AllocateStreamedBytes(n);
  ASSERT_TRUE(InHugePageMapping(b));
  uint8_t* p = b.get();
  p[0] = 1;
  p[n - 1] = 2;
  EXPECT_EQ(p[n / 2], 0);
  b.reset();
  EXPECT_EQ(ResidentPages(p, 4096), -1) << "the mapping outlived its only buffer";
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MOERUN_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define MOERUN_SANITIZED 1
#endif
#endif

// A size no machine of this kind can hold is refused with std::bad_alloc (which the tools report as
// "out of memory"), as operator new refuses it, not mapped lazily and killed on first touch.
TEST(HugePageArena, ImpossibleSizeIsRefusedNotMappedLazily) {
#ifdef MOERUN_SANITIZED
  GTEST_SKIP() << "the sanitizers' allocators abort on impossible sizes instead of throwing";
#else
  std::ifstream policy("/proc/sys/vm/overcommit_memory");
  int mode = -1;
  if (!(policy >> mode) || mode == 1)
    GTEST_SKIP() << "vm.overcommit_memory = " << mode << ": the kernel maps anything";
  EXPECT_THROW(AllocateStreamedBytes(size_t{1} << 42), std::bad_alloc);  // 4 TiB
#endif
}

TEST(HugePageArena, ConcurrentAllocationsAreDisjoint) {
  constexpr int kThreads = 4, kPerThread = 16;
  std::vector<std::vector<StreamedBytes>> made(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&made, t] {
      for (int i = 0; i < kPerThread; ++i) {
        made[t].push_back(AllocateStreamedBytes(kMinArenaBytes));
        std::fill(made[t].back().get(), made[t].back().get() + kMinArenaBytes, static_cast<uint8_t>(t));
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    for (const StreamedBytes& b : made[t]) {
      EXPECT_TRUE(AllBytesAre(b.get(), kMinArenaBytes, static_cast<uint8_t>(t)));
    }
  }
}

}  // namespace
}  // namespace moerun
