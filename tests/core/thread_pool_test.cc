#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

namespace moerun {
namespace {

TEST(ThreadPoolTest, EveryTaskRunsExactlyOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 7, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::atomic<int> bad_thread{0};
      pool.ParallelFor(n, [&](int64_t t, int thread) {
        hits[static_cast<size_t>(t)].fetch_add(1);
        if (thread < 0 || thread >= threads) bad_thread = 1;
      });
      for (auto& h : hits) ASSERT_EQ(h.load(), 1) << threads << " threads, " << n << " tasks";
      EXPECT_EQ(bad_thread.load(), 0);
    }
  }
}

TEST(ThreadPoolTest, ManyConsecutiveLoops) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  for (int round = 0; round < 2000; ++round) {
    pool.ParallelFor(3, [&](int64_t t, int) { sum.fetch_add(t + 1); });
  }
  EXPECT_EQ(sum.load(), 2000 * 6);
}

// A loop inside a task (e.g. a synthetic tensor filled while experts are packed in parallel) runs
// inline on that task's thread instead of deadlocking the pool.
TEST(ThreadPoolTest, NestedLoopRunsInline) {
  for (int threads : {2, 4}) {
    ThreadPool pool(threads);
    std::vector<std::atomic<int>> hits(8 * 5);
    std::atomic<int> wrong_thread{0};
    pool.ParallelFor(8, [&](int64_t outer, int thread) {
      pool.ParallelFor(5, [&](int64_t inner, int inner_thread) {
        hits[static_cast<size_t>(outer * 5 + inner)].fetch_add(1);
        if (inner_thread != thread) wrong_thread = 1;
      });
    });
    for (auto& h : hits) ASSERT_EQ(h.load(), 1) << threads << " threads";
    EXPECT_EQ(wrong_thread.load(), 0);
  }
}

}  // namespace
}  // namespace moerun
